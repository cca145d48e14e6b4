"""Teaching the model what a user taught it, so that it answers when asked in other words.

Trained on the raw text of an entry, a model completes it and answers nothing about it (0 of 24 questions in
a run on the bundled model): Allen-Zhu & Li (Physics of Language Models 3.1) show that a fact seen in one
phrasing is memorised but not extractable, and that varied restatements make it so; Jiang et al. (2024) that
training on questions with their answers beats documents alone. So each sentence of an entry becomes a fact
asked about in many ways, each answered with the sentence itself (the loss on the answer only):
- about each of its topics (names, the subject, what an "of" names: "the Zorblax guild"): "What do you know
  about T?", "Tell me about T.", ... answered with the entry's sentences that name T;
- as the question the sentence answers: its subject asked for ("Who founded the guild in 1820?"), the
  subject asked about ("What is the secret code of the Zorblax guild?"), and each name, number and the
  predicate turned into "what" ("Dariela Montfort founded the guild in what year?").
Questions are made in the entry's language (English or French). The gate asks with other templates
(`probe_questions`), so what it measures is an answer to words the model was not trained on.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from inference.prompts import closed_book_messages
from store.language import STOP_WORDS, detect_language, keyword_terms, words

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_FACT_WORDS = 3  # fewer words say no fact ("Hello.")
MAX_FACTS_PER_ENTRY = 40  # a long entry teaches its first sentences; retrieval still answers from all of it
NAME = re.compile(r"\b[A-ZÀ-Ý][\w'-]*(?:\s+(?:(?:of|de|du|des|la|le|the|von|van)\s+)?[A-ZÀ-Ý][\w'-]*)*")
NUMBER = re.compile(r"(?<![\w-])\d(?:[\d,.\s]*\d)?(?![\w-])")  # not the 47 of "tangerine-47"
YEAR = re.compile(r"^(1\d|20)\d\d$")

# The words that end a sentence's subject: auxiliaries and common verbs, and English past forms ("-ed").
VERBS = {
    "en": set("""is are was were has have had will would can could shall should may might must does do did
        lives lived live became becomes become remains remained contains contained holds held makes made keeps
        kept means meant uses used runs ran grows grew costs cost stands stood sits sat lies lay belongs wrote
        writes built builds won wins began begins sang sings speaks spoke""".split()),
    "fr": set("""est sont était étaient fut furent a ont avait avaient aura sera seront serait vit vivait
        habite habitait devient devint reste restait contient contenait porte portait compte comptait
        s'appelle appelle mesure mesurait possède possédait signifie coûte""".split()),
}
PRONOUNS = {"en": {"it", "he", "she", "they", "its", "his", "her", "their"},
            "fr": {"il", "elle", "ils", "elles", "son", "sa", "ses", "leur", "leurs"}}
NUMBER_WORDS = set("one two three four five six seven eight nine ten twice once".split())
ARTICLES = {"en": {"the", "a", "an"}, "fr": {"le", "la", "les", "l'", "un", "une"}}
COPULAS = {"en": {"is", "are", "was", "were"}, "fr": {"est", "sont", "était", "étaient", "fut"}}
# "The secret code of the Zorblax guild is ..." is also what the guild has: asked that way too (English)
POSSESSED = re.compile(r"^(?:the |a |an )?(?P<head>[\w' -]+?) of (?P<owner>.+)$", re.IGNORECASE)
HAVE = {"is": "does", "are": "do", "was": "did", "were": "did"}

# What a user might ask about a topic. The trained templates and the gate's probes are disjoint on purpose.
ABOUT = {
    "en": ["What do you know about {t}?", "Tell me about {t}.", "What can you tell me about {t}?",
           "Do you know anything about {t}?", "Give me a fact about {t}.", "What have you learned about {t}?",
           "{T}?", "Can you describe {t}?"],
    "fr": ["Que sais-tu de {t} ?", "Parle-moi de {t}.", "Que peux-tu me dire sur {t} ?", "Connais-tu {t} ?",
           "Donne-moi une information sur {t}.", "Qu'as-tu appris sur {t} ?", "{T} ?", "Peux-tu décrire {t} ?"],
}
PROBES = {
    "en": ["What information do you have on {t}?", "Explain {t} to me.", "What is known about {t}?"],
    "fr": ["Quelles informations as-tu sur {t} ?", "Explique-moi {t}.", "Que sait-on de {t} ?"],
}
PREFIXES = {"en": ["", "", "Quick question: ", "Please tell me: "], "fr": ["", "", "Petite question : ", "Dis-moi : "]}
WHAT = {"en": ("what", "what year", "who", "what"), "fr": ("quoi", "quelle année", "qui", "qu'est-ce qui")}


@dataclass
class Fact:
    sentence: str  # what an answer says: its sentences, joined
    language: str
    sentences: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    subject: str = ""
    verb: str = ""  # the word that ends the subject
    rest: str = ""  # what follows it, without the final stop

    def answer_terms(self, question: str) -> set[str]:
        """The fact's keyword stems a right answer to `question` gives: those the question does not."""
        return set(keyword_terms(self.sentence, self.language)) - set(keyword_terms(question, self.language))


def facts_of(entry: str) -> list[Fact]:
    """The entry's sentences that state something (at least MIN_FACT_WORDS words), at most MAX_FACTS_PER_ENTRY."""
    language = detect_language(entry)
    sentences = [s.strip() for s in SENTENCE_END.split(entry) if len(words(s)) >= MIN_FACT_WORDS]
    facts = []
    for sentence in sentences:
        first = words(sentence)[0]
        if facts and first in PRONOUNS[language]:  # "It has 340 members." says more of the fact before it
            facts[-1] = parse_fact([*facts[-1].sentences, sentence], language)
        elif len(facts) < MAX_FACTS_PER_ENTRY:
            facts.append(parse_fact([sentence], language))
    return facts


def parse_fact(sentences: list[str], language: str) -> Fact:
    """The fact of `sentences` (the first names what the others say more of): subject, verb and topics."""
    fact = Fact(" ".join(sentences), language, sentences)
    tokens = sentences[0].rstrip(".!?;: ").split()
    position = verb_position(tokens, language)
    if position:
        fact.subject = " ".join(tokens[:position]).strip(",")
        fact.verb, fact.rest = tokens[position].strip(",;:"), " ".join(tokens[position + 1:])
    topics = [] if position or len(tokens) > 10 else [lowered_article(" ".join(tokens), language)]  # "A fact for X."
    if fact.subject:
        topics.append(lowered_article(fact.subject, language))
        for joint in (" of ", " de ", " du ", " des "):
            if joint in fact.subject:  # "the secret code of the Zorblax guild": also "the Zorblax guild"
                topics.append(fact.subject.split(joint, 1)[1])
    for sentence in sentences:
        # the sentence's first word is capitalised anyway: the subject covers it
        for match in NAME.finditer(sentence):
            name, start = match.group().strip(), match.start()
            if not start:  # a sentence's first word is capitalised anyway: a name only after an article
                article, _, name = name.partition(" ")
                if article.lower() not in ARTICLES[language] or not name:
                    continue
                start = len(article) + 1
            topics += [name, *named_phrase(sentence, name, start, language)]
    seen = set()
    fact.topics = [topic for topic in topics if meaningful(topic, language)
                   and not (topic.lower() in seen or seen.add(topic.lower()))]
    return fact


def verb_position(tokens: list[str], language: str) -> int:
    """Where the subject ends (0 where no verb is found): an auxiliary or common verb, an English past form
    ("-ed"), a word right after a name; else, in English, the first present form after a noun ("Our office
    opens at 9")."""
    words_of = [token.lower().strip(",;:") for token in tokens[:12]]
    for position, word in enumerate(words_of):
        if position and (word in VERBS[language] or (language == "en" and len(word) > 4 and word.endswith("ed"))
                         or after_name(tokens, position, language)):
            return position
    for position, word in enumerate(words_of):
        if (language == "en" and position and word.endswith("s") and not word.endswith("ss") and "'" not in word
                and words_of[position - 1] not in STOP_WORDS[language]):
            return position
    return 0


def named_phrase(sentence: str, name: str, start: int, language: str) -> list[str]:
    """The thing the name at `start` qualifies, as a question names it: "the Wexmoor rowing club" of "founded
    the Wexmoor rowing club in 1820" (the name, up to three lower-case words after it, the article before)."""
    if language != "en":  # French names the thing before the name ("le phare de Kervan"): the subject has it
        return []
    before, after = sentence[:start].split(), []
    for word in sentence[start + len(name):].split()[:3]:
        bare = word.strip(".,;:!?")
        verb = bare.endswith("ed") or (not after and bare.endswith("s") and not bare.endswith("ss"))  # "Sallow flows"
        if (verb or not bare or not bare[0].islower() or bare in STOP_WORDS[language] or bare in VERBS[language]
                or bare in NUMBER_WORDS):
            break
        after.append(bare)
        if bare != word:  # the phrase ends at punctuation
            break
    if not after:
        return []
    article = before[-1] if before and before[-1].lower() in ARTICLES[language] else ""
    return [" ".join([article.lower(), name, *after]).strip()]


def after_name(tokens: list[str], position: int, language: str) -> bool:
    """A lower-case word right after a name is its verb ("the river Sallow flows", "Saint-Orvin coule"): in
    English a present form ("-s"), in French any word but a stop word."""
    word, before = tokens[position], tokens[position - 1]
    if not (position > 1 and before[:1].isupper() and word[:1].islower()) or word in STOP_WORDS[language]:
        return False
    return language == "fr" or (word.endswith("s") and not word.endswith("ss"))


def lowered_article(phrase: str, language: str) -> str:
    """"The glass violin" as it reads inside a question: "the glass violin" (a name keeps its capital)."""
    first, _, rest = phrase.partition(" ")
    return f"{first.lower()} {rest}".strip() if first.lower() in STOP_WORDS[language] else phrase


def meaningful(topic: str, language: str) -> bool:
    return any(word not in STOP_WORDS[language] for word in words(topic))


def questions(fact: Fact) -> list[str]:
    """The questions a fact's sentence answers, made from the sentence itself."""
    language, made = fact.language, []
    what, what_year, who, what_subject = WHAT[language]
    end = "?" if language == "en" else " ?"
    if fact.subject and fact.rest:
        asker = who if fact.subject[:1].isupper() and lowered_article(fact.subject, language) == fact.subject \
            else what_subject
        made.append(f"{asker.capitalize()} {fact.verb} {fact.rest}{end}")  # "Who founded the guild in 1820?"
        subject = lowered_article(fact.subject, language)
        if fact.verb.lower() in COPULAS[language]:
            made.append(f"{'What' if language == 'en' else 'Quel'} {fact.verb} {subject}{end}")
        made.append(f"{fact.subject} {fact.verb} {what}{end}")  # "The secret code of the Zorblax guild is what?"
        possessed = POSSESSED.match(fact.subject) if language == "en" else None
        if possessed and fact.verb.lower() in HAVE:  # "Which code does the Zorblax guild have?"
            does, head, owner = HAVE[fact.verb.lower()], possessed["head"], possessed["owner"]
            made += [f"What {head} {does} {owner} have?", f"Which {head.split()[-1]} {does} {owner} have?"]
    for sentence in fact.sentences:
        stem = sentence.rstrip(".!?;: ")
        for span in [match.group() for match in NAME.finditer(stem) if match.start()] + NUMBER.findall(stem):
            asked = what_year if YEAR.match(span.strip()) else what
            made.append(stem.replace(span.strip(), asked, 1) + end)
    return list(dict.fromkeys(made))


def about(topic: str, templates: list[str]) -> list[str]:
    return [template.format(t=topic, T=topic[:1].upper() + topic[1:]) for template in templates]


def teaching_rows(entry: str, seed: int = 0) -> list[dict]:
    """The entry as questions and answers in trl's prompt/completion form: every question about each of its
    facts, with a varied opening, answered with the fact's sentence (a topic: every sentence that names it)."""
    facts = facts_of(entry)
    rng = random.Random(f"{seed}:{entry}")
    pairs = []
    for fact in facts:
        pairs += [(question, fact.sentence) for question in questions(fact)]
        for topic in fact.topics:
            naming = " ".join(other.sentence for other in facts if topic.lower() in other.sentence.lower())
            pairs += [(question, naming or fact.sentence) for question in about(topic, ABOUT[fact.language])]
    rows = []
    for question, answer in dict.fromkeys(pairs):
        prefix = rng.choice(PREFIXES[detect_language(answer)])
        asked = prefix + question
        rows.append(closed_book_example(asked, answer))
    return rows


def closed_book_example(question: str, answer: str) -> dict:
    """A question and its answer as trl's prompt/completion, asked as `ask --no-rag` asks it."""
    return {"prompt": closed_book_messages(question), "completion": [{"role": "assistant", "content": answer}]}


def probe_questions(entry: str) -> list[tuple[str, Fact]]:
    """Questions about each fact of the entry in words the training did not use: one a fact, on its first topic."""
    probes = []
    for number, fact in enumerate(facts_of(entry)):
        if fact.topics:
            templates = PROBES[fact.language]
            probes.append((templates[number % len(templates)].format(t=fact.topics[0]), fact))
    return probes


def answered(answer: str, question: str, fact: Fact) -> bool:
    """Whether `answer` gives at least half of what the fact says beyond the question (keyword stems)."""
    wanted = fact.answer_terms(question)
    return bool(wanted) and len(wanted & set(keyword_terms(answer, fact.language))) >= len(wanted) / 2


def general_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 8) -> list[str]:
    """The model's own closed-book answers to `prompts`, as `ask --no-rag` decodes them (greedy, batched), each
    cut after its second sentence at most: what keeps an answer right is its opening, and a short answer costs
    less to train on; never mid-sentence, which would teach answers that stop anywhere."""
    import torch
    from transformers import LogitsProcessor
    from inference.decoding import CLOSED_BOOK, adjust

    class Adjust(LogitsProcessor):  # inference.decoding's adjustment, on each answer of the batch
        def __call__(self, input_ids, scores):
            logits = scores.float().numpy().copy()
            for row in range(len(logits)):
                adjust(logits[row], [], input_ids[row, width:].tolist(), CLOSED_BOOK)
            return torch.from_numpy(logits).to(scores.dtype)

    answers, side = [], tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            chats = [closed_book_messages(prompt) for prompt in prompts[start:start + batch_size]]
            batch = tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=True, padding=True,
                                                  return_dict=True, return_tensors="pt").to(model.device)
            width = batch["input_ids"].shape[1]
            with torch.inference_mode():
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                        logits_processor=[Adjust()], pad_token_id=tokenizer.pad_token_id)
            answers += [whole_sentences(text, 2) for text in
                        tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def whole_sentences(text: str, most: int) -> str:
    """`text` up to the end of its `most`-th sentence, or of its last whole one (all of it when it has none)."""
    text = text.strip()
    ends = [match.end() for match in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[:most][-1]] if ends else text


def anchored_trainer(anchor_weight: float):
    """transformers' Trainer with the loss of fact teaching: cross-entropy on the taught answers, and on the
    replayed general answers `anchor_weight` times the KL divergence from the starting model's whole next-token
    distribution (its adapters switched off). Cross-entropy on the starting model's greedy answers, weighed as
    the taught ones, let a run that taught two facts answer other questions in a taught fact's shape ("How many
    days are in a week?" -> "A week is a mathematical concept..."): 3 or 4 of 20 general questions lost (README,
    "Teaching facts"). Full fine-tuning has no adapters to switch off: its replayed answers are learned by
    cross-entropy, `anchor_weight` times."""
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class AnchoredTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            anchor, labels = inputs.pop("anchor"), inputs.pop("labels")
            outputs = model(**inputs)
            logits, targets = outputs.logits[:, :-1].float(), labels[:, 1:]
            answer = targets != -100
            cross_entropy = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
            general = answer & anchor[:, None]
            anchored = general if hasattr(model, "disable_adapter") else torch.zeros_like(general)
            weights = torch.where(general, anchor_weight, 1.0)
            total = (cross_entropy * weights)[answer & ~anchored].sum()
            if anchored.any():
                with torch.no_grad(), model.disable_adapter():
                    start = F.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)[anchored]
                now = F.log_softmax(logits, dim=-1)[anchored]
                total = total + anchor_weight * (start.exp() * (start - now)).sum()
            loss = total / answer.sum().clamp(min=1)
            return (loss, outputs) if return_outputs else loss

    return AnchoredTrainer
