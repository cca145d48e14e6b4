"""Human feedback: judgements of answers, appended to data/feedback.jsonl.

The feedback file is append-only, whoever writes (the CLI, the web page, both at once): fixing an entry
appends its new version under the same id, deleting one appends a tombstone. Readers keep the last version
of each id, so nothing is ever rewritten and a crash can cost at most the line being written.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from common.errors import ApprentiError
from common.files import append_whole
from common.jsonl import json_lines_of

CHOICES = {
    "good": "the answer is good",
    "bad": "the answer is bad",
    "first": "of two answers, the first is better",
    "second": "of two answers, the second is better",
    "both_bad": "both answers are bad",
}
SOURCES = ("cli", "ui", "api")
MAX_FIELD_CHARACTERS = 100_000


@dataclass
class Feedback:
    """One judgement: a question, what was retrieved for it, the answer(s) judged and the verdict."""
    question: str
    answers: list[dict]  # [{"text": ..., "model": ...}]: one to rate, or two to compare
    choice: str  # a key of CHOICES
    source: str  # one of SOURCES: "cli", "ui" or "api"
    context: list[dict] = field(default_factory=list)  # [{"id": chunk id, "text": ...}]
    # the conversation's earlier turns, [{"role": "user" | "assistant", "content": ...}]: a follow-up ("Where
    # does it live?") means nothing without them, to a reader and to training
    history: list[dict] = field(default_factory=list)
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
            problems.append(f"source '{self.source}': use one of {', '.join(SOURCES)}")
        if any(not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant")
               or not isinstance(turn.get("content"), str) for turn in self.history):
            problems.append('the history has a turn that is not {"role": "user" | "assistant", "content": text}')
        if self.choice == "good" and self.correction.strip():
            problems.append("a good answer needs no correction")
        texts = [self.question, self.correction, self.comment] + [a.get("text", "") for a in self.answers]
        texts += [turn["content"] for turn in self.history if isinstance(turn, dict) and isinstance(turn.get("content"), str)]
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
    for number, _, record, problem in json_lines_of(path):
        try:
            if problem:
                raise ValueError(problem)
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
