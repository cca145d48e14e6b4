"""Retrieval for a question asked in a conversation: a follow-up that names nothing ("And who founded it?")
is searched with the user's previous question before it, and the passages that query finds join those of
the question alone.

A query made of two questions finds the previous topic's passages even when the new question is about
something else ("And who painted the Mona Lisa?"), which would answer what nothing in the store answers.
So the expanded query's passages are kept only where the question stays on the previous topic: adding it
did not dilute the previous question's best match, or the passage holds one of its keywords. Measured
against the other ways (the last message alone, the earlier turns' text, rank fusion) by bench/follow_up.py.
"""
from __future__ import annotations

from typing import Callable, Sequence

from store.hybrid_search import Passage
from store.language import detect_language, keyword_terms

# The share of the previous question's best score that the expanded query's best score keeps when the new
# question is still about the same thing. In bench/follow_up.py questions on another subject keep 0.81 at
# most, follow-ups 0.84 or more; 0.9 leaves the doubtful ones to the keyword check.
TOPIC_KEPT = 0.9


def follow_up_passages(question: str, history: Sequence[dict], search: Callable[[str], list[Passage]]
                       ) -> list[Passage]:
    """The passages for `question`, asked after the `history` turns ({"role": "user" | "assistant",
    "content": str}, oldest first). `search(query)` gives the passages at or above the relevance threshold,
    best first."""
    alone = search(question)
    previous = previous_question(history)
    if previous is None:
        return alone
    expanded = search(f"{previous} {question}")
    if not stays_on_topic(expanded, search(previous)):
        expanded = [passage for passage in expanded if shares_a_keyword(question, passage)]
    return best_of(alone, expanded)


def previous_question(history: Sequence[dict]) -> str | None:
    asked = [turn["content"] for turn in history if turn["role"] == "user"]
    return asked[-1] if asked else None


def stays_on_topic(expanded: list[Passage], previous: list[Passage]) -> bool:
    """Whether the expanded query matches about as well as the previous question did alone."""
    return bool(expanded and previous) and expanded[0].score >= TOPIC_KEPT * previous[0].score


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
