"""Retrieval for a question asked in a conversation: a follow-up that names nothing ("And who founded it?")
is searched with the user's two previous questions before it (two, so that a follow-up of a follow-up still
reads the question that named the topic), and the passages that query finds join those of the question alone.

A query made of earlier questions finds their topic's passages even when the new question is about something
else ("And who painted the Mona Lisa?"), which would answer what nothing in the store answers. So the
expanded query's passages are kept only where the question stays on the earlier topic: adding it did not
dilute the earlier questions' best match, or the passage holds one of its keywords. Measured against the
other ways (the last message alone, one previous question, the earlier turns' text, rank fusion) by
bench/follow_up.py.
"""
from __future__ import annotations

from typing import Callable, Sequence

from store.hybrid_search import Passage
from store.language import detect_language, keyword_terms

# The share of the earlier questions' best score that the expanded query's best score keeps when the new
# question is still about the same thing. In bench/follow_up.py (with one previous question) questions on
# another subject kept 0.81 at most, follow-ups 0.84 or more; 0.9 leaves the doubtful ones to the keyword
# check. Stricter (0.93 to 0.97) lost follow-ups and refused no more.
TOPIC_KEPT = 0.9
EARLIER_QUESTIONS = 2  # all of them: the same figures on bench/follow_up.py; one lost follow-ups of follow-ups


def follow_up_passages(question: str, history: Sequence[dict], search: Callable[[str], list[Passage]]
                       ) -> list[Passage]:
    """The passages for `question`, asked after the `history` turns ({"role": "user" | "assistant",
    "content": str}, oldest first). `search(query)` gives the passages at or above the relevance threshold,
    best first."""
    return gated_follow_up(question, history, search, EARLIER_QUESTIONS)


def gated_follow_up(question: str, history: Sequence[dict], search: Callable[[str], list[Passage]],
                    count: int) -> list[Passage]:
    """follow_up_passages reading the `count` previous questions (bench/follow_up.py compares counts)."""
    alone = search(question)
    earlier = earlier_questions(history, count)
    if earlier is None:
        return alone
    expanded = search(f"{earlier} {question}")
    if not stays_on_topic(expanded, search(earlier)):
        expanded = [passage for passage in expanded if shares_a_keyword(question, passage)]
    return best_of(alone, expanded)


def earlier_questions(history: Sequence[dict], count: int) -> str | None:
    """The user's `count` latest questions, oldest first, as one text; None before the first answer."""
    asked = [turn["content"] for turn in history if turn["role"] == "user"]
    return " ".join(asked[-count:]) if asked else None


def stays_on_topic(expanded: list[Passage], earlier: list[Passage]) -> bool:
    """Whether the expanded query matches about as well as the earlier questions did alone."""
    return bool(expanded and earlier) and expanded[0].score >= TOPIC_KEPT * earlier[0].score


def shares_a_keyword(question: str, passage: Passage) -> bool:
    """Whether the passage holds one of the question's keyword stems, or the question has none to hold."""
    language = detect_language(question)
    terms = set(keyword_terms(question, language))
    return not terms or bool(terms & set(keyword_terms(passage.text, language)))


def best_of(*found: list[Passage]) -> list[Passage]:
    """The best passages of several searches, by score, as many as the longest gave (search's k at most)."""
    ranked = sorted((passage for passages in found for passage in passages), key=lambda passage: -passage.score)
    best = {}
    for passage in ranked:  # a chunk both found keeps its better score
        best.setdefault(passage.id, passage)
    return list(best.values())[:max(map(len, found))]
