"""Scoring a model on what Apprenti exists for: answers from passages, refusals, retrieval, what it learned
and what it may have forgotten. `evaluate_model.py` and `cli_app.py evaluate` are the front doors.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from common.config import Settings
from common.errors import ApprentiError
from evaluation import metrics
from evaluation.qa_set import SHIPPED_QA, Question, read_qa_set
from store.documents import content_hash

GENERAL_QUESTIONS = Path(__file__).with_name("general_questions.jsonl")  # what the bundled base model answers right
MAX_PROBES = 40  # questions about taught facts asked at most: the time of a gate stays bounded
CLOSED_BOOK_TOKENS = 64  # a closed-book answer gives its fact early, or not at all
FACT_TAIL = 0.25  # the share of a taught entry's words held back: recalled if the completion gives them
RECALL_F1 = 0.5  # a held-back tail counts as recalled at this token F1 or more


def default_qa_path(settings: Settings) -> Path:
    """The user's own set when there is one, else the one shipped with the project."""
    user = settings.data_dir / "eval_qa.jsonl"
    return user if user.exists() else SHIPPED_QA


def evaluate(settings: Settings, qa_path: Path | None = None,
             progress: Callable[[dict], None] = lambda event: None, source=None) -> dict:
    """The report of the model at `source` (an inference.locate.ModelSource; by default the one `settings`
    answer with): {"model", "version", "qa_set", "metrics", "inputs", "answers", ...}."""
    from inference.transformers_model import ChatModel
    from rag_module import Assistant
    qa_path = Path(qa_path or default_qa_path(settings))
    questions, problems = read_qa_set(qa_path)
    assistant = Assistant(settings, source=source, log_answers=False)
    started = time.perf_counter()
    rows = []
    for number, question in enumerate(questions, 1):
        rows.append(score_question(assistant, question))
        progress({"stage": "questions", "done": number, "total": len(questions)})
    # Perplexities and log-probabilities come from the weights themselves (transformers); answers and the
    # recall of taught facts from the model as it answers (its converted form on the fast backend).
    weights = assistant.model if assistant.model.backend == "transformers" else ChatModel(assistant.model.source)
    knowledge_base = assistant.knowledge_base
    closed_book = closed_book_rows(settings, assistant, progress)
    scores = {**answer_scores(rows), **retrieval_scores(questions, assistant.settings.top_k, knowledge_base),
              **language_scores(settings, assistant.model, weights),
              **{metric: mean(row["right"] for row in closed_book if row["metric"] == metric)
                 for metric in ("facts_answered", "general_answered")},
              "general_free_of_facts": mean(not row["taught_fact"] for row in closed_book
                                            if row["metric"] == "general_answered"),
              "preference_accuracy": preference_accuracy(settings, weights)}
    return {"model": assistant.model.name, "version": assistant.model.version, "qa_set": str(qa_path),
            "inputs": evaluation_inputs(settings, qa_path, knowledge_base), "questions": len(questions),
            "skipped_lines": problems, "metrics": scores, "answers": rows, "closed_book": closed_book,
            "seconds": round(time.perf_counter() - started, 1),
            "evaluated_at": datetime.now().isoformat(timespec="seconds")}


def score_question(assistant, question: Question) -> dict:
    """Answer as `ask` does (from the given context, else from the user's knowledge base) and score the
    answer. A refusal is the assistant's (nothing retrieved) or the model's, in words."""
    from store.hybrid_search import Passage
    sources = None
    if question.context:
        doc_id = question.doc_ids[0] if question.doc_ids else "context"
        sources = [Passage(f"{doc_id}#0", doc_id, 1.0, question.context, "qa set")]
    started = time.perf_counter()
    # The model's own answer, without the note that quotes the passages after an unsupported one: a model that
    # has lost the facts must not be credited with the passages' words.
    answer = assistant.ask(question.question, sources=sources, check=False)
    refused = answer.refused or metrics.is_refusal(answer.answer)
    row = {"question": question.question, "answer": answer.answer, "refused": refused,
           "answerable": question.answerable, "seconds": round(time.perf_counter() - started, 2)}
    if question.answerable and not refused:
        row |= {"exact_match": metrics.exact_match(answer.answer, question.answers),
                "answer_f1": metrics.token_f1(answer.answer, question.answers),
                "rouge_l": metrics.rouge_l(answer.answer, question.answers),
                "answer_contains": metrics.answer_contains(answer.answer, question.answers),
                "supported": metrics.supported(answer.answer, [s.text for s in answer.sources])}
    elif question.answerable:  # a refusal of an answerable question scores nothing
        row |= {"exact_match": 0.0, "answer_f1": 0.0, "rouge_l": 0.0, "answer_contains": 0.0}
    return row


def closed_book_rows(settings: Settings, assistant, progress: Callable[[dict], None]) -> list[dict]:
    """Questions asked without the knowledge base, as `ask --no-rag` does: about each taught fact, in words its
    training did not use (training.teaching.probe_questions), right when the answer gives what the fact says
    beyond the question; and the shipped general questions, right when the answer holds the reference, and
    marked when it gives a taught fact instead (a fact that took over ordinary questions)."""
    import random
    from common.jsonl import json_lines_of
    from training.learning_data import read_entries
    from training.teaching import answered, facts_of, probe_questions
    entries = read_entries(settings.learning_data)
    facts = [fact for entry in entries for fact in facts_of(entry)]
    probes = [probe for entry in entries for probe in probe_questions(entry)]
    probes = random.Random(0).sample(probes, MAX_PROBES) if len(probes) > MAX_PROBES else probes
    general = [line.record for line in json_lines_of(GENERAL_QUESTIONS)]
    rows = []
    for number, (question, fact) in enumerate(probes + [(record["question"], record) for record in general], 1):
        answer = assistant.ask(question, use_rag=False, max_new_tokens=CLOSED_BOOK_TOKENS, check=False).answer
        if isinstance(fact, dict):
            rows.append({"metric": "general_answered", "question": question, "answer": answer,
                         "right": metrics.answer_contains(answer, fact["answers"]) > 0,
                         "taught_fact": any(answered(answer, question, taught) for taught in facts)})
        else:
            rows.append({"metric": "facts_answered", "question": question, "answer": answer, "fact": fact.sentence,
                         "right": answered(answer, question, fact)})
        progress({"stage": "closed-book questions", "done": number, "total": len(probes) + len(general)})
    return rows


def mean(values) -> float | None:
    values = [value for value in values if value is not None]
    return round(statistics.fmean(values), 4) if values else None


def answer_scores(rows: list[dict]) -> dict:
    answerable = [row for row in rows if row["answerable"]]
    unanswerable = [row for row in rows if not row["answerable"]]
    right = [not row["refused"] for row in answerable] + [row["refused"] for row in unanswerable]
    return {"exact_match": mean(row["exact_match"] for row in answerable),
            "answer_f1": mean(row["answer_f1"] for row in answerable),
            "rouge_l": mean(row["rouge_l"] for row in answerable),
            "answer_contains": mean(row["answer_contains"] for row in answerable),
            "supported": mean(row.get("supported") for row in answerable),
            "answered_rightly": mean(not row["refused"] for row in answerable),
            "refused_rightly": mean(row["refused"] for row in unanswerable),
            "refusal_accuracy": mean(right)}


def retrieval_scores(questions: list[Question], k: int, knowledge_base) -> dict:
    """recall@k and MRR of the knowledge base's search, for the questions that name their gold documents,
    each searched where it is answered from: a question with a context over a temporary store of the set's
    contexts (each a document), one without over the user's `knowledge_base`."""
    from knowledge_base import KnowledgeBase
    given = [question for question in questions if question.context and question.doc_ids]
    from_user = [question for question in questions if not question.context and question.doc_ids]
    gold = given + from_user
    if not gold:
        return {"recall_at_k": None, "mrr": None}
    ranked = []
    if given:
        with tempfile.TemporaryDirectory(prefix="apprenti-eval-store-") as folder:
            store = KnowledgeBase(Path(folder), lambda: knowledge_base.embeddings)
            for doc_id, context in {question.doc_ids[0]: question.context for question in given}.items():
                store.add(context, doc_id)
            ranked += [[passage.doc_id for passage in store.search(question.question, 10)] for question in given]
    ranked += [[passage.doc_id for passage in knowledge_base.search(question.question, 10)] for question in from_user]
    return {"recall_at_k": mean(metrics.recall_at(r, q.doc_ids, k) for r, q in zip(ranked, gold)),
            "mrr": mean(metrics.reciprocal_rank(r, q.doc_ids) for r, q in zip(ranked, gold))}


def language_scores(settings: Settings, answering, weights) -> dict:
    """Perplexity of the `weights` (a transformers ChatModel) on the learning data and on the general text,
    and the share of taught facts the `answering` model recalls."""
    from training.core import general_text_blocks, perplexity, token_blocks
    from training.learning_data import read_entries
    entries = read_entries(settings.learning_data)
    tokenizer, model = weights.tokenizer, weights.model
    block = min(256, weights.context_window)
    recalled = [fact_recalled(answering, entry) for entry in entries if len(entry.split()) >= 4]
    return {"ppl_learning": rounded(perplexity(model, token_blocks(tokenizer, entries, block), tokenizer.pad_token_id)),
            "ppl_general": rounded(perplexity(model, general_text_blocks(tokenizer, block), tokenizer.pad_token_id)),
            "facts_recalled": mean(recalled)}


def fact_recalled(chat_model, entry: str) -> bool:
    """The entry's first line without its last words, completed as `complete` does: are those words given?"""
    words = entry.splitlines()[0].split()
    held = max(1, round(len(words) * FACT_TAIL))
    prompt, tail = " ".join(words[:-held]), " ".join(words[-held:])
    completion = "".join(chat_model.stream(chat_model.text_ids(prompt), max(8, 2 * held + 4)))
    return metrics.token_f1(" ".join(completion.split()[:len(tail.split()) + 2]), [tail]) >= RECALL_F1


def preference_accuracy(settings: Settings, chat_model) -> float | None:
    """On the test split of the preference pairs: how often the model gives the chosen answer a higher
    log-probability than the rejected one, the prompt rendered as DPO learns it (None without pairs)."""
    from training.examples import preference_pair, read_examples
    if not settings.rlhf_test_split.is_file():
        return None
    try:
        pairs = read_examples(settings.rlhf_test_split, preference_pair, "preference pairs").rows
    except ApprentiError:
        return None
    return mean(answer_log_probability(chat_model, pair["prompt"], pair["chosen"][0]["content"])
                > answer_log_probability(chat_model, pair["prompt"], pair["rejected"][0]["content"]) for pair in pairs)


def answer_log_probability(chat_model, prompt: list[dict], answer: str) -> float:
    """log P(answer | the prompt's chat turns), summed over the answer's tokens."""
    import torch
    prompt_ids = chat_model.chat_ids(prompt)
    answer_ids = chat_model.text_ids(answer) + [chat_model.tokenizer.eos_token_id]
    input_ids = torch.tensor([(prompt_ids + answer_ids)[-chat_model.context_window:]], device=chat_model.model.device)
    with torch.inference_mode():
        logits = chat_model.model(input_ids=input_ids).logits[0, :-1].float()
    log_probs = torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, 1:, None])[:, 0]
    return float(log_probs[-len(answer_ids):].sum())


def evaluation_inputs(settings: Settings, qa_path: Path, knowledge_base) -> dict:
    """What a report's figures depend on besides the model: two reports on equal inputs compare fairly, and
    the champion's report is reused by the gate while they hold. The knowledge base is one: questions without
    a context are answered and refused from it."""
    return {"qa_sha256": file_hash(qa_path), "learning_sha256": file_hash(settings.learning_data),
            "pairs_sha256": file_hash(settings.rlhf_test_split),
            "knowledge_base_sha256": knowledge_base_hash(knowledge_base),
            "settings": {name: str(getattr(settings, name)) for name in
                         ("base_model", "embedding_model", "top_k", "relevance_threshold", "max_new_tokens",
                          "backend")}}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def file_hash(path: Path) -> str | None:
    try:
        return content_hash(path.read_bytes())
    except FileNotFoundError:
        return None


def knowledge_base_hash(knowledge_base) -> str:
    """Of the documents the knowledge base holds: their ids, content hashes and chunk counts, read from the
    chunks' metadata (no text, no vectors)."""
    return content_hash("\n".join(f"{record.doc_id} {record.hash} {record.chunks}"
                                   for record in knowledge_base.documents().values()))
