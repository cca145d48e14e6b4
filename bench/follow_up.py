"""Follow-up retrieval: which query finds the passages for a question asked after earlier turns ("And how
do I remove the hold afterwards?"), and does a follow-up that nothing answers stay refused?

The conversations (bench/follow_ups.jsonl) are over FAQs no one on the team wrote, installed from Debian
packages and read by bench/retrieval.py: the Python FAQ and the Debian FAQ in one English store, the
Debian FAQ in French in another. Each turn is one of:

  first         a first question, naming the topic of an FAQ entry
  follow-up     a question that names nothing, answered by the same entry or a neighbouring one
  switch        a new first question asked mid-conversation: it must find its own entry
  unanswerable  a question nothing in the store answers: it must still be refused (no passage)

A turn's gold is the FAQ entries that answer it. The assistant's earlier turns in the history are the first
two sentences of the top passage the method found for them (what a grounded answer repeats), or the refusal.
Passages are searched as the assistant searches them: hybrid search, the top_k best at or above the
relevance threshold (common.config.Settings). Each method is scored on recall@4 (a gold entry among the
passages) and on its refusal rate on the unanswerable turns.

    apt-get install python3-doc debian-faq debian-faq-fr    # once (make bench does it)
    .venv/bin/python bench/follow_up.py [--home DIR]        # about a minute, most of it building the stores
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.retrieval import debian_faq, missing_faqs, python_faq, rrf  # noqa: E402
from conversation.follow_up import (best_of, earlier_questions, follow_up_passages,  # noqa: E402
                                    gated_follow_up, shares_a_keyword)

CONVERSATIONS = Path(__file__).resolve().parent / "follow_ups.jsonl"
KINDS = ("first", "follow-up", "switch", "unanswerable")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# ------------------------------------------------------------ the candidates, as conversation/follow_up.py's

def last_message(question, history, search):
    return search(question)


def with_user_questions(question, history, search):
    return search(" ".join([turn["content"] for turn in history if turn["role"] == "user"] + [question]))


def with_previous_question(question, history, search):
    previous = earlier_questions(history, 1)
    return search(f"{previous} {question}" if previous else question)


def with_all_turns(question, history, search):
    return search(" ".join([turn["content"] for turn in history] + [question]))


def keyword_gated_union(question, history, search):
    """The question's passages, and those of (b') that hold one of its keywords."""
    previous = earlier_questions(history, 1)
    if previous is None:
        return search(question)
    expanded = search(f"{previous} {question}")
    return best_of(search(question), [passage for passage in expanded if shares_a_keyword(question, passage)])


def fused(question, history, search):
    """Rank fusion of the question alone and (b'), ungated."""
    alone, expanded = search(question), with_previous_question(question, history, search)
    return rrf([alone, expanded], max(len(alone), len(expanded)))


def alone_else_expanded(question, history, search):
    """The conversation only where the question alone finds nothing."""
    return search(question) or with_previous_question(question, history, search)


METHODS = {
    "(a) last message only": last_message,
    "(b) user questions + question": with_user_questions,
    "(b') previous question + question": with_previous_question,
    "(c) all turns + question": with_all_turns,
    "(d) question + (b') keyword-gated": keyword_gated_union,
    "(e) RRF of question and (b')": fused,
    "(e') question, else (b')": alone_else_expanded,
    "(f) (d) + topic kept": lambda question, history, search: gated_follow_up(question, history, search, 1),
    "chosen: (f) with two questions": follow_up_passages,
}


# ------------------------------------------------------------ the stores and the run

def build_stores(home: Path):
    """The English store (Python FAQ and Debian FAQ) and the French one (Debian FAQ in French), each with its
    search function as the assistant's retriever applies it, and the answers' texts by doc id."""
    from common.config import Settings
    from knowledge_base import KnowledgeBase
    sources = {"en": python_faq() + debian_faq("en"), "fr": debian_faq("fr")}
    stores, answers = {}, {}
    for name, entries in sources.items():
        corpus = home / f"{name}.jsonl"
        with open(corpus, "w") as out:
            for doc_id, _question, answer in entries:
                if len(answer) > 80:  # as bench/retrieval.py: shorter ones are headings of sections
                    out.write(json.dumps({"id": doc_id, "text": answer}, ensure_ascii=False) + "\n")
                    answers[doc_id] = answer
        settings = Settings.load(home=home / name)
        knowledge_base = KnowledgeBase.open(settings)
        knowledge_base.ingest([corpus])
        stores[name] = cached_search(knowledge_base, settings.top_k, settings.relevance_threshold)
    return stores, answers


def cached_search(knowledge_base, k: int, threshold: float):
    """The assistant's search (rag_module.Assistant.retrieve), remembered: the methods ask the same queries."""
    found = {}

    def search(query: str):
        if query not in found:
            found[query] = [passage for passage in knowledge_base.search(query, k) if passage.score >= threshold]
        return list(found[query])
    return search


def said(passages, question: str) -> str:
    """The assistant's turn as history keeps it: what a grounded answer repeats of its best passage."""
    from rag_module import REFUSALS
    from store.language import detect_language
    if not passages:
        return REFUSALS[detect_language(question)]
    return " ".join(SENTENCE_END.split(" ".join(passages[0].text.split()))[:2])


def run(method, conversations, stores) -> dict[str, list[bool]]:
    """For each kind of turn, whether each was retrieved right: a gold entry found, or an unanswerable
    one refused."""
    outcomes = {kind: [] for kind in KINDS}
    for conversation in conversations:
        search, history = stores[conversation["store"]], []
        for turn in conversation["turns"]:
            passages = method(turn["question"], history, search)
            if turn["kind"] == "unanswerable":
                outcomes["unanswerable"].append(not passages)
            else:
                outcomes[turn["kind"]].append(any(passage.doc_id in turn["gold"] for passage in passages[:4]))
            history += [{"role": "user", "content": turn["question"]},
                        {"role": "assistant", "content": said(passages, turn["question"])}]
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="where the stores are built (default: a new temporary "
                                                  "folder); stores already there are reused")
    arguments = parser.parse_args()
    if missing_faqs():
        print(missing_faqs(), file=sys.stderr)
        return 1
    conversations = [json.loads(line) for line in CONVERSATIONS.read_text().splitlines() if line.strip()]
    started = time.perf_counter()
    home = arguments.home or Path(tempfile.mkdtemp(prefix="apprenti-follow-up-"))
    home.mkdir(parents=True, exist_ok=True)
    stores, answers = build_stores(home)
    unknown = {gold for c in conversations for turn in c["turns"] for gold in turn["gold"] or () if gold not in answers}
    if unknown:
        print(f"{CONVERSATIONS.name} names entries the FAQs lack: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 1
    print(f"stores built in {time.perf_counter() - started:.0f} s; {len(conversations)} conversations "
          f"({sum(c['store'] == 'fr' for c in conversations)} in French)\n")
    counts = {kind: sum(turn["kind"] == kind for c in conversations for turn in c["turns"]) for kind in KINDS}
    print(f"{'method':<36} {'first R@4':>10} {'follow-up R@4':>14} {'switch R@4':>11} {'refused':>8}")
    print(f"{'(turns)':<36} {counts['first']:>10} {counts['follow-up']:>14} {counts['switch']:>11} "
          f"{counts['unanswerable']:>8}")
    for name, method in METHODS.items():
        outcomes = run(method, conversations, stores)
        rates = {kind: sum(outcomes[kind]) / len(outcomes[kind]) for kind in KINDS}
        print(f"{name:<36} {rates['first']:>10.3f} {rates['follow-up']:>14.3f} {rates['switch']:>11.3f} "
              f"{rates['unanswerable']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
