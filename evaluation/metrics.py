"""Scores of one answer against its references, and of a ranking against the gold documents.

Answers are compared as SQuAD does (lower case, punctuation and articles dropped, white space folded), in
English and French; no remote judge: "supported" is the share of the answer's words found in the passages
it was made from, and "answer_contains" says whether an answer of any length carries a reference.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

THOUSANDS = re.compile(r"(?<=\d)\s+(?=\d{3}\b)")
DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")
ARTICLES = re.compile(r"\b(a|an|the|le|la|les|l|un|une|des|du|de)\b")
# A refusal in words opens a sentence: the assistant's own (rag_module.REFUSALS) and what chat models say
# when the passages do not answer. "Not" alone is no refusal ("Anne did not go" answers a question).
REFUSAL = re.compile("|".join([
    r"i (don't|do not|dont) know\b",
    r"(i can't|i cannot|i can not|i'm unable to|i am unable to) (answer|tell|say|find)\b",
    r"(i'm |i am )?sorry,? (but )?(i|there|the (text|passages?|context))\b[^.!?]*(n't|\bnot|\bno|\bcannot|\bunable)\b",
    r"(the|this) (text|passages?|context) (does|do|did)( not|n't) (say|mention|provide|contain|give|specify|state)\b",
    r"there is no (information|mention)\b",
    r"je ne (sais|peux) pas\b",
    r"(je suis )?désolée?,? (mais )?(je|j'|il|le texte|les passages?|le contexte)"
    r"[^.!?]*\b(ne|n')[^.!?]*\bpas\b",
    r"(le texte|les passages?|le contexte) ne (dit|disent|mentionnen?t?|précisen?t?|donnen?t?) pas\b",
    r"il n'y a (pas|aucune) (d')?information",
]))


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text.lower()).replace("’", "'")
    text = "".join(" " if character in string.punctuation else character for character in text)
    # Numbers written either way meet: "1 450" and "1,240" (thousands) as "1450" and "1240", "22h" as "22 h".
    text = THOUSANDS.sub("", DIGIT_LETTER.sub(" ", text))
    return " ".join(ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(answer: str, references: list[str]) -> float:
    return float(any(normalize(answer) == normalize(reference) for reference in references))


def token_f1(answer: str, references: list[str]) -> float:
    """The best harmonic mean of token precision and recall against any reference."""
    best = 0.0
    for reference in references:
        common = Counter(tokens(answer)) & Counter(tokens(reference))
        shared = sum(common.values())
        if shared:
            precision, recall = shared / len(tokens(answer)), shared / len(tokens(reference))
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def rouge_l(answer: str, references: list[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokens), the best over the references."""
    best = 0.0
    for reference in references:
        a, b = tokens(answer), tokens(reference)
        if not a or not b:
            continue
        lengths = [0] * (len(b) + 1)
        for word in a:
            previous = 0
            for j, other in enumerate(b, 1):
                previous, lengths[j] = lengths[j], previous + 1 if word == other else max(lengths[j], lengths[j - 1])
        common = lengths[-1]
        if common:
            precision, recall = common / len(a), common / len(b)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def supported(answer: str, passages: list[str]) -> float:
    """The share of the answer's words that the passages contain (1.0 for an empty answer)."""
    words = tokens(answer)
    if not words:
        return 1.0
    available = set(tokens(" ".join(passages)))
    return sum(word in available for word in words) / len(words)


def answer_contains(answer: str, references: list[str]) -> float:
    """1.0 when the answer holds a reference as a run of whole words (normalised): right whatever its length."""
    padded = f" {normalize(answer)} "
    return float(any(normalize(reference) and f" {normalize(reference)} " in padded for reference in references))


def is_refusal(answer: str) -> bool:
    """The answer says it cannot answer, in its first or second sentence (after a taught opening such as
    "Good question!"), in English or French."""
    text = unicodedata.normalize("NFKC", answer.strip().lower()).replace("’", "'")
    return any(REFUSAL.match(sentence) for sentence in re.split(r"(?<=[.!?])\s+", text)[:2])


def reciprocal_rank(ranked_doc_ids: list[str], gold: list[str]) -> float:
    for rank, doc_id in enumerate(ranked_doc_ids, 1):
        if doc_id in gold:
            return 1 / rank
    return 0.0


def recall_at(ranked_doc_ids: list[str], gold: list[str], k: int) -> float:
    return float(any(doc_id in gold for doc_id in ranked_doc_ids[:k]))
