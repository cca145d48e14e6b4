"""The preference datasets built from the feedback (step 4 of the pipeline sketch: merge_feedbacks_rlhf):
pairs for DPO and reward models, and thumbs for KTO."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from common.files import write_whole
from feedback.records import Feedback, read

TEST_SHARE = 10  # percent of prompts (by hash) that go to the test split


def prompt_fields(entry: Feedback) -> dict:
    """The sketch's prompt, and the question and passages apart, which training renders in the assistant's
    own answer prompt (inference/prompts.py)."""
    return {"prompt": prompt_of(entry), "question": entry.question,
            "passages": [passage["text"] for passage in entry.context],
            **({"history": entry.history} if entry.history else {})}  # a follow-up's conversation


def prompt_of(entry: Feedback) -> str:
    """The question followed by the passages it was answered from, as in the pipeline sketch; after the
    conversation before it, where it was a follow-up."""
    asked = entry.question
    if entry.history:
        asked = "Conversation:\n" + "\n".join(f"{turn['role']}: {turn['content']}" for turn in entry.history) + \
            f"\n\nQuestion: {asked}"
    if not entry.context:
        return asked
    return asked + "\n\nContext:\n" + "\n".join(passage["text"] for passage in entry.context)


def asked(entry: Feedback) -> tuple:
    """What makes two ratings ratings of the same question: its words, and the questions it followed (a
    follow-up, "Where does it live?", asks something else in each conversation)."""
    def words(text: str) -> str:
        return " ".join(text.lower().split())
    return words(entry.question), tuple(words(turn["content"]) for turn in entry.history if turn["role"] == "user")


@dataclass
class MergeReport:
    pairs: int = 0
    train: int = 0
    test: int = 0
    kto: int = 0
    entries: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> number of entries
    broken_lines: list[str] = field(default_factory=list)


def merge(feedback_path: Path, output: Path, kto_output: Path) -> MergeReport:
    """Build the preference pairs (prompt, chosen, rejected, annotator_comment, timestamp) and the KTO rows
    (prompt, completion, label) from every current entry. The outputs are made anew from the whole feedback
    file each time, so merging twice gives the same files."""
    entries, problems = read(feedback_path)
    report = MergeReport(entries=len(entries), broken_lines=problems)
    pairs: dict[tuple, dict] = {}  # (prompt, chosen, rejected) -> pair: duplicates merge
    kto: dict[tuple, dict] = {}

    def add_pair(entries: list[Feedback], prompt: dict, chosen: str, rejected: str) -> None:
        if chosen.strip() != rejected.strip():
            comment = " / ".join(entry.comment for entry in entries if entry.comment.strip())
            pairs.setdefault((prompt["prompt"], chosen, rejected), {
                "prompt": prompt["prompt"], "chosen": chosen, "rejected": rejected, "annotator_comment": comment,
                "timestamp": max(entry.timestamp for entry in entries), **prompt})

    def add_kto(prompt: dict, completion: str, label: bool) -> None:
        kto.setdefault((prompt["prompt"], completion), {**prompt, "completion": completion, "label": label})

    def skip(reason: str, count: int = 1) -> None:
        report.skipped[reason] = report.skipped.get(reason, 0) + count

    ratings: dict[tuple, list[Feedback]] = {}  # question asked -> its good/bad ratings, to pair across entries
    for entry in entries:
        prompt, texts = prompt_fields(entry), [answer["text"] for answer in entry.answers]
        correction = entry.correction.strip() and entry.correction
        if correction:
            add_kto(prompt, correction, True)
        if entry.choice in ("good", "bad"):
            add_kto(prompt, texts[0], entry.choice == "good")
            ratings.setdefault(asked(entry), []).append(entry)
            if correction:
                add_pair([entry], prompt, correction, texts[0])
            continue
        if entry.choice == "both_bad":
            rejected = texts
            if not correction:
                skip("both answers bad, no correction")
        else:
            chosen, other = (texts[0], texts[1]) if entry.choice == "first" else (texts[1], texts[0])
            add_kto(prompt, chosen, True)
            add_pair([entry], prompt, chosen, other)
            rejected = [other]
        for text in rejected:
            add_kto(prompt, text, False)
            if correction:
                add_pair([entry], prompt, correction, text)
    for group in ratings.values():
        good = [entry for entry in group if entry.choice == "good"]
        bad = [entry for entry in group if entry.choice == "bad"]
        for loser in bad:
            for winner in good:  # the good answer's prompt: it holds the passages that answer came from
                add_pair([winner, loser], prompt_fields(winner), winner.answers[0]["text"],
                         loser.answers[0]["text"])
        if not (good and bad):
            unpaired = [entry for entry in group if not entry.correction.strip()]
            if unpaired:
                skip("a rating with no opposite rating of the same question (kept in the KTO form)", len(unpaired))

    rows = sorted(pairs.values(), key=lambda pair: (pair["timestamp"], pair["prompt"], pair["chosen"]))
    train = [row for row in rows if split_of(row) == "train"]
    test = [row for row in rows if split_of(row) == "test"]
    write_jsonl(output, rows)
    write_jsonl(output.with_name(f"{output.stem}_train.jsonl"), train)
    write_jsonl(output.with_name(f"{output.stem}_test.jsonl"), test)
    write_jsonl(kto_output, sorted(kto.values(), key=lambda row: (row["prompt"], row["completion"])))
    report.pairs, report.train, report.test, report.kto = len(rows), len(train), len(test), len(kto)
    return report


def split_of(row: dict) -> str:
    """A fixed split by question: the same question always lands on the same side, whatever passages it was
    answered with and whatever else the file holds, so that no held-out question was trained on. (Rows
    without a question apart, written by hand, are split by their prompt.)"""
    question = row.get("question") if isinstance(row.get("question"), str) else str(row.get("prompt", ""))
    key = " ".join(question.lower().split())
    return "test" if int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100 < TEST_SHARE else "train"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_whole(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode())
