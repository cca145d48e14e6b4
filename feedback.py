"""Human feedback: judgements of answers appended to data/feedback.jsonl, and the preference datasets built
from them (step 4 of the pipeline sketch: merge_feedbacks_rlhf).

The feedback file is append-only, whoever writes (the CLI, the web page, both at once): fixing an entry
appends its new version under the same id, deleting one appends a tombstone. Readers keep the last version
of each id, so nothing is ever rewritten and a crash can cost at most the line being written.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from config import ApprentiError, append_whole

CHOICES = {
    "good": "the answer is good",
    "bad": "the answer is bad",
    "first": "of two answers, the first is better",
    "second": "of two answers, the second is better",
    "both_bad": "both answers are bad",
}
SOURCES = ("cli", "ui")
MAX_FIELD_CHARACTERS = 100_000
TEST_SHARE = 10  # percent of prompts (by hash) that go to the test split


@dataclass
class Feedback:
    """One judgement: a question, what was retrieved for it, the answer(s) judged and the verdict."""
    question: str
    answers: list[dict]  # [{"text": ..., "model": ...}]: one to rate, or two to compare
    choice: str  # a key of CHOICES
    source: str  # "cli" or "ui"
    context: list[dict] = field(default_factory=list)  # [{"id": chunk id, "text": ...}]
    correction: str = ""  # the answer the user wanted
    comment: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    timestamp: str = field(default_factory=lambda: datetime.now().isoformat(timespec="seconds"))
    deleted: bool = False

    def __post_init__(self):
        problems = []
        if not self.question.strip():
            problems.append("the question is empty")
        if self.choice not in CHOICES:
            problems.append(f"choice '{self.choice}': use one of {', '.join(CHOICES)}")
        expected = 1 if self.choice in ("good", "bad") else 2
        if not self.deleted and len(self.answers) != expected:
            problems.append(f"'{self.choice}' judges {expected} answer(s), got {len(self.answers)}")
        if any(not str(answer.get("text", "")).strip() for answer in self.answers):
            problems.append("an answer is empty")
        if self.source not in SOURCES:
            problems.append(f"source '{self.source}': use cli or ui")
        if self.choice == "good" and self.correction.strip():
            problems.append("a good answer needs no correction")
        texts = [self.question, self.correction, self.comment] + [a.get("text", "") for a in self.answers]
        if any(len(text) > MAX_FIELD_CHARACTERS for text in texts):
            problems.append(f"a text is longer than {MAX_FIELD_CHARACTERS} characters")
        if problems:
            raise ApprentiError("bad feedback: " + "; ".join(problems))

    @classmethod
    def from_json(cls, record: dict) -> "Feedback":
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        try:
            return cls(**known)
        except TypeError as error:
            raise ApprentiError(f"bad feedback: {error}") from None


def append(path: Path, feedback: Feedback) -> None:
    """One line, whole or not at all, even with other processes appending at the same time."""
    append_whole(path, (json.dumps(asdict(feedback), ensure_ascii=False) + "\n").encode(), own_line=True)


def read(path: Path) -> tuple[list[Feedback], list[str]]:
    """The current entries (last version of each id, deleted ones left out) and the broken lines' problems."""
    entries: dict[str, Feedback] = {}
    problems = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return [], []
    except OSError as error:
        raise ApprentiError(f"cannot read {path}: {error.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            feedback = Feedback.from_json(record)
        except (ValueError, ApprentiError) as error:
            problems.append(f"line {number}: {error}")
            continue
        entries.pop(feedback.id, None)  # a newer version goes last, in the order of its last change
        entries[feedback.id] = feedback
    return [entry for entry in entries.values() if not entry.deleted], problems


def delete(path: Path, entry: Feedback) -> None:
    tombstone = Feedback(**{**asdict(entry), "deleted": True,
                            "timestamp": datetime.now().isoformat(timespec="seconds")})
    append(path, tombstone)


# ---------------------------------------------------------------- the preference datasets

def prompt_of(entry: Feedback) -> str:
    """The question followed by the passages it was answered from, as in the pipeline sketch."""
    if not entry.context:
        return entry.question
    return entry.question + "\n\nContext:\n" + "\n".join(passage["text"] for passage in entry.context)


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

    def add_pair(entries: list[Feedback], prompt: str, chosen: str, rejected: str) -> None:
        if chosen.strip() != rejected.strip():
            comment = " / ".join(entry.comment for entry in entries if entry.comment.strip())
            pairs.setdefault((prompt, chosen, rejected), {
                "prompt": prompt, "chosen": chosen, "rejected": rejected, "annotator_comment": comment,
                "timestamp": max(entry.timestamp for entry in entries)})

    def add_kto(prompt: str, completion: str, label: bool) -> None:
        kto.setdefault((prompt, completion), {"prompt": prompt, "completion": completion, "label": label})

    def skip(reason: str, count: int = 1) -> None:
        report.skipped[reason] = report.skipped.get(reason, 0) + count

    ratings: dict[str, list[Feedback]] = {}  # question -> its good/bad ratings, to pair across entries
    for entry in entries:
        prompt, texts = prompt_of(entry), [answer["text"] for answer in entry.answers]
        correction = entry.correction.strip() and entry.correction
        if correction:
            add_kto(prompt, correction, True)
        if entry.choice in ("good", "bad"):
            add_kto(prompt, texts[0], entry.choice == "good")
            ratings.setdefault(" ".join(entry.question.lower().split()), []).append(entry)
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
                add_pair([winner, loser], prompt_of(winner), winner.answers[0]["text"], loser.answers[0]["text"])
        if not (good and bad):
            unpaired = [entry for entry in group if not entry.correction.strip()]
            if unpaired:
                skip("a rating with no opposite rating of the same question (kept in the KTO form)", len(unpaired))

    rows = sorted(pairs.values(), key=lambda pair: (pair["timestamp"], pair["prompt"], pair["chosen"]))
    train = [row for row in rows if split_of(row["prompt"]) == "train"]
    test = [row for row in rows if split_of(row["prompt"]) == "test"]
    write_jsonl(output, rows)
    write_jsonl(output.with_name(f"{output.stem}_train.jsonl"), train)
    write_jsonl(output.with_name(f"{output.stem}_test.jsonl"), test)
    write_jsonl(kto_output, sorted(kto.values(), key=lambda row: (row["prompt"], row["completion"])))
    report.pairs, report.train, report.test, report.kto = len(rows), len(train), len(test), len(kto)
    return report


def split_of(prompt: str) -> str:
    """A fixed split: the same prompt always lands on the same side, whatever else the file holds."""
    return "test" if int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 100 < TEST_SHARE else "train"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Written beside and renamed into place: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ApprentiError(f"cannot write {path}: {error.strerror}") from None
