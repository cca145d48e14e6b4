"""Answers: passages retrieved from the knowledge base, a prompt that fits the model, the answer streamed.

When no passage reaches the relevance threshold the assistant says it does not know, in the question's
language, without calling the model: a small model asked without context invents an answer.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

from common.config import Settings
from common.errors import ApprentiError
from common.messages import notice
from inference.decoding import CLOSED_BOOK, GROUNDED
from inference.prompts import answer_messages
from store.hybrid_search import Passage
from store.language import detect_language, keyword_terms, words

# What follows an answer that names what its passages do not: the passages' own sentence that best matches the
# question. Measured by bench/decoding.py: a small model rewrites rare names it should copy ("Wexwater" for
# "Wexmoor") and numbers; the note lets the user see what the knowledge base says.
NOTES = {
    "en": ("Not in the passages: {terms}.", "They say: \"{sentence}\""),
    "fr": ("Absent des passages : {terms}.", "Ils disent : « {sentence} »"),
}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
NUMBER = re.compile(r"\d+(?:[\s,.:\u202f]\d+)*")
MIN_QUESTION_TOKENS = 16  # less of a question than this says too little to be answered
REFUSALS = {
    "en": "I don't know: nothing in the knowledge base answers this.",
    "fr": "Je ne sais pas : rien dans la base de connaissances ne répond à cette question.",
}


@dataclass
class Answer:
    answer: str
    refused: bool
    model: str | None
    sources: list[Passage]  # the passages the answer was made from
    prompt_tokens: int = 0  # what the model read and wrote, as the API's usage counts them (0: not asked)
    completion_tokens: int = 0

    def to_json(self) -> dict:
        return asdict(self)


class Assistant:
    """The models and the knowledge base, loaded on first use and kept for every later question. Unless it is
    pinned to a model `source` (inference.locate.ModelSource), it follows the champion: after `models use`
    or a promotion, the next question loads the new one, without a restart."""

    # How answers are decoded (inference/decoding.py), from passages and without
    grounded_decoding, closed_book_decoding = GROUNDED, CLOSED_BOOK

    def __init__(self, settings: Settings, source=None, log_answers: bool = True, knowledge_base=None):
        self.settings = settings
        self.source = source
        self.log_answers = log_answers
        self._model = None
        self._model_for = None  # the version wanted when the model was loaded
        self._knowledge_base = knowledge_base  # another assistant's, shared: one embedding model, one client

    @property
    def model(self):
        if self._model is None:
            from inference.chat_model import load_chat_model
            from inference.versions import choose_chat_model
            self._model_for = self.wanted_version()
            self._model = load_chat_model(self.settings, self.source or choose_chat_model(self.settings))
        return self._model

    def wanted_version(self) -> str:
        from inference.versions import Versions
        return self.source.version if self.source else Versions(self.settings).in_use()

    @property
    def knowledge_base(self):
        if self._knowledge_base is None:
            from knowledge_base import KnowledgeBase
            self._knowledge_base = KnowledgeBase.open(self.settings)
        return self._knowledge_base

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    def reload_model(self) -> None:
        """Forget the loaded model, so the next question loads the champion."""
        if hasattr(self._model, "close"):
            self._model.close()  # the ONNX backend's decoder, once the answers it is making are made
        self._model = None

    def follow_champion(self) -> None:
        """Reload if the champion changed since the model was loaded (a pointer read: cheap)."""
        if self._model is not None and self.wanted_version() != self._model_for:
            self.reload_model()

    def retrieve(self, question: str, k: int | None = None, history: Sequence[dict] = ()) -> list[Passage]:
        """The passages at or above the relevance threshold for `question`, asked after the `history` turns."""
        from conversation.follow_up import follow_up_passages
        def search(query: str) -> list[Passage]:
            return self.knowledge_base.relevant(query, k or self.settings.top_k, self.settings.relevance_threshold)
        return follow_up_passages(question, history, search)

    def ask(self, question: str, k: int | None = None, use_rag: bool = True,
            on_text: Callable[[str], None] = lambda piece: None, sources: list[Passage] | None = None,
            temperature: float = 0.0, max_new_tokens: int | None = None, stop: Sequence[str] = (),
            check: bool = True, history: Sequence[dict] = (), system: str | None = None) -> Answer:
        """Answer `question`, passing each piece of the answer to `on_text` as it is generated. `history` is the
        conversation's earlier turns ({"role": "user" | "assistant", "content": ...}, oldest first), which the
        retrieval and the model both read; `system` a client's instructions. `sources` already retrieved are
        used as they are; `temperature` > 0 samples the answer; the answer ends at `max_new_tokens` (at most the
        settings' length) or before the first of the `stop` texts. With `check`, a grounded answer that names
        what its passages do not is followed by a note that quotes them (grounding_note); not where a client
        bounds the answer (stop texts, a token budget)."""
        started, first_token = time.perf_counter(), None
        question = question.strip()
        if sources is None:
            sources = self.retrieve(question, k, history) if use_rag else []
        if use_rag and not sources:
            refusal = REFUSALS[detect_language(question)]
            on_text(refusal)
            answer = Answer(refusal, True, None, [])  # no model was asked
        else:
            self.follow_champion()
            input_ids, sources = self.fit_prompt(question, sources, use_rag, history, system)
            length = min(max_new_tokens or self.answer_tokens, self.answer_tokens)
            pieces = []
            decoding = self.grounded_decoding if sources else self.closed_book_decoding
            for piece in until_stop(self.model.stream(input_ids, length, temperature, decoding), stop):
                first_token = first_token or time.perf_counter() - started
                pieces.append(piece)
                on_text(piece)
            said = "".join(pieces).strip()
            made = len(self.model.text_ids(said))
            if check and use_rag and not stop and max_new_tokens is None:
                note = grounding_note(question, said, sources)
                if note:
                    on_text(f"\n\n{note}")
                    said = f"{said}\n\n{note}"
            answer = Answer(said, False, self.model.name, sources, len(input_ids), made)
        if self.log_answers:
            from monitoring.answer_log import log_answer
            text = {"question": question, "answer": answer.answer} if self.settings.log_answer_text else {}
            version = self.wanted_version() if answer.refused else self._model_for
            log_answer(self.settings.answer_log, version=version, seconds=time.perf_counter() - started,
                       first_token_seconds=first_token, refused=answer.refused, sources=len(answer.sources), **text)
        return answer

    def complete(self, text: str, on_text: Callable[[str], None] = lambda piece: None,
                 max_new_tokens: int | None = None, temperature: float = 0.0, stop: Sequence[str] = ()) -> Answer:
        """The model's plain continuation of `text`, without chat template: what fine-tuning taught shows here.
        It ends at `max_new_tokens` (at most the settings' length) or before the first of the `stop` texts."""
        self.follow_champion()
        room = self.model.context_window - self.answer_tokens
        input_ids = self.model.text_ids(text)[-room:]
        length = min(max_new_tokens or self.answer_tokens, self.answer_tokens)
        pieces = []
        for piece in until_stop(self.model.stream(input_ids, length, temperature, self.closed_book_decoding), stop):
            pieces.append(piece)
            on_text(piece)
        said = "".join(pieces)
        return Answer(said, False, self.model.name, [], len(input_ids), len(self.model.text_ids(said)))

    @property
    def answer_tokens(self) -> int:
        # Half the window at most, so a small-window model keeps room for the question.
        return min(self.settings.max_new_tokens, self.model.context_window // 2)

    def fit_prompt(self, question: str, sources: list[Passage], use_rag: bool, history: Sequence[dict] = (),
                   system: str | None = None) -> tuple[list[int], list[Passage]]:
        """The prompt's token ids, within the context window less the answer's room. The conversation's oldest
        turns give way first, then an overlong question (its middle is left out, down to a quarter of the room
        while there are passages), then the least relevant passages; the most relevant one and the system
        message always stay, and where even they cannot fit with the question's beginning and end, the question
        is refused with one message."""
        budget = self.model.context_window - self.answer_tokens
        asked = question
        question = self.shortened(question, budget // 4 if sources else budget)
        history = list(history)
        while True:
            input_ids = self.model.chat_ids(prompt_messages(question, sources, use_rag, history, system))
            if len(input_ids) <= budget:
                if question != asked:
                    notice(f"the question is long ({len(self.model.text_ids(asked))} tokens): its middle was "
                           f"left out to fit the model's window")
                return input_ids, sources
            if history:  # a whole exchange at a time, so that the conversation still opens with a question
                history = history[1:]
                while history and history[0]["role"] != "user":
                    history = history[1:]
                continue
            if len(sources) > 1:
                sources = sources[:-1]
                continue
            # The question alone must give way now: to what is left beside the prompt's other words.
            others = len(self.model.chat_ids(prompt_messages("", sources, use_rag, (), system)))
            shorter = self.shortened(question, budget - others - 2)
            if budget - others < MIN_QUESTION_TOKENS or shorter == question:
                what = [part for part, present in [("the question", True), ("its most relevant passage", sources),
                                                   ("the system message", system)] if present]
                raise ApprentiError(f"{' and '.join(what)} {'do' if len(what) > 1 else 'does'} not fit in the "
                                    f"model's {self.model.context_window}-token window: ask a shorter question")
            question = shorter

    def shortened(self, question: str, room: int) -> str:
        """`question` within `room` tokens: its beginning and its end, the middle left out."""
        ids = self.model.text_ids(question)
        if len(ids) <= room:
            return question
        half = max(1, (room - 3) // 2)  # 3 tokens for the mark of what was left out
        def decode(part):
            return self.model.tokenizer.decode(part, skip_special_tokens=True).strip()
        return f"{decode(ids[:half])} [...] {decode(ids[-half:])}"


def until_stop(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """`pieces` up to the first of the `stop` texts, which is left out. A tail that could be the start of a
    stop text is held back until the next piece tells; closing `pieces` at the stop ends the generation."""
    stop = [text for text in stop if text]
    if not stop:
        yield from pieces
        return
    held = ""
    for piece in pieces:
        held += piece
        found = [held.index(text) for text in stop if text in held]
        if found:
            if held[:min(found)]:
                yield held[:min(found)]
            pieces.close()
            return
        keep = max((size for text in stop for size in range(1, len(text)) if held.endswith(text[:size])), default=0)
        if len(held) > keep:
            yield held[:len(held) - keep]
            held = held[len(held) - keep:]
    if held:
        yield held


def prompt_messages(question: str, sources: list[Passage], use_rag: bool, history: Sequence[dict] = (),
                    system: str | None = None) -> list[dict]:
    return answer_messages(question, [source.text for source in sources] if use_rag else [], history, system)


def grounding_note(question: str, answer: str, sources: list[Passage]) -> str:
    """A note for an answer that names or numbers what neither its passages nor the question hold: those
    terms, and the passages' sentence that best matches the question. Empty where the answer holds none."""
    grounds = " ".join([question, *(source.text for source in sources)])
    terms = unsupported_terms(answer, grounds)
    if not terms:
        return ""
    language = detect_language(question)
    sentence = best_sentence(question, [source.text for source in sources], language)
    missing, quote = NOTES[language]
    return f"({missing.format(terms=', '.join(terms))}{' ' + quote.format(sentence=sentence) if sentence else ''})"


def unsupported_terms(answer: str, grounds: str) -> list[str]:
    """The answer's numbers and names (capitalised words, but for a sentence's first) absent from `grounds`."""
    known_words = set(words(grounds))
    known_numbers = {re.sub(r"\D", "", number) for number in NUMBER.findall(grounds)}
    terms = [number for number in NUMBER.findall(answer) if re.sub(r"\D", "", number) not in known_numbers]
    for sentence in SENTENCE_END.split(answer):
        terms += [word for word in re.findall(r"[^\W\d_]+", sentence)[1:]
                  if word[0].isupper() and word.lower() not in known_words]
    return list(dict.fromkeys(term.strip() for term in terms))


def best_sentence(question: str, passages: list[str], language: str) -> str:
    """The passages' sentence sharing the most keyword stems with the question (the earliest on a tie)."""
    wanted = set(keyword_terms(question, language))
    sentences = [sentence.strip() for passage in passages for sentence in SENTENCE_END.split(passage) if sentence.strip()]
    scored = [(len(wanted & set(keyword_terms(sentence, language))), -rank, sentence)
              for rank, sentence in enumerate(sentences)]
    best = max(scored, default=(0, 0, ""))
    return best[2] if best[0] else ""
