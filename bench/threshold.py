"""Measures the relevance threshold: the top-1 retrieval score of answerable and unanswerable questions
(bench/relevance_fixture.json), and the threshold that separates them best.

    .venv/bin/python bench/threshold.py
"""
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from common.config import Settings  # noqa: E402
from knowledge_base import KnowledgeBase  # noqa: E402

FIXTURE = Path(__file__).with_name("relevance_fixture.json")


def top_scores(fixture: dict, home: Path, mode: str) -> tuple[list[tuple[float, bool]], list[float]]:
    """For answerable questions (top-1 score, whether top-1 is the gold document); for unanswerable, scores."""
    kb = KnowledgeBase.open(Settings.load(home=home))
    if kb.count_chunks() == 0:
        for doc_id, text in fixture["documents"].items():
            kb.add(text, doc_id)
    answerable = []
    for question, gold in fixture["answerable"]:
        hit = kb.search(question, 1, mode)[0]
        answerable.append((hit.score, hit.doc_id == gold))
    unanswerable = [kb.search(question, 1, mode)[0].score for question in fixture["unanswerable"]]
    return answerable, unanswerable


def best_threshold(answerable: list[float], unanswerable: list[float]) -> tuple[float, float]:
    """The threshold with the most right decisions (answer vs refuse); among ties, the widest margin's middle."""
    candidates = sorted(set(answerable + unanswerable))
    best = None
    for low, high in zip(candidates, candidates[1:]):
        threshold = (low + high) / 2
        right = sum(s >= threshold for s in answerable) + sum(s < threshold for s in unanswerable)
        key = (right, high - low)
        if best is None or key > best[0]:
            best = (key, threshold)
    (right, _), threshold = best
    return threshold, right / (len(answerable) + len(unanswerable))


def main() -> None:
    fixture = json.loads(FIXTURE.read_text())
    with tempfile.TemporaryDirectory() as home:
        for mode in ("hybrid", "dense"):
            print(f"{mode} scores" + (" (what the assistant uses)" if mode == "hybrid" else ""))
            report(*top_scores(fixture, Path(home), mode))


def report(answerable, unanswerable) -> None:
    scores = [score for score, _ in answerable]
    print(f"answerable   ({len(scores)}): top-1 score min {min(scores):.3f}  median {sorted(scores)[len(scores) // 2]:.3f}"
          f"  max {max(scores):.3f}; top-1 is the gold passage for {sum(ok for _, ok in answerable)}")
    print(f"unanswerable ({len(unanswerable)}): top-1 score min {min(unanswerable):.3f}"
          f"  median {sorted(unanswerable)[len(unanswerable) // 2]:.3f}  max {max(unanswerable):.3f}")
    threshold, accuracy = best_threshold(scores, unanswerable)
    print(f"best threshold {threshold:.3f}: {accuracy:.1%} of questions answered or refused rightly")
    current = Settings.load().relevance_threshold
    right = sum(s >= current for s in scores) + sum(s < current for s in unanswerable)
    print(f"current default {current:.3f}: {right / (len(scores) + len(unanswerable)):.1%} rightly")


if __name__ == "__main__":
    main()
