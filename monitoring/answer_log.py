"""The local log of answers, for the dashboard: one JSON line per answer with its time, model version,
latency, whether it was a refusal and how many sources it had. The question and the answer are written
only when the user opts in (APPRENTI_LOG_ANSWER_TEXT=true): the log is for monitoring, not a transcript.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from common.errors import ApprentiError
from common.files import append_whole
from common.jsonl import json_lines_of

# What log_answer writes and read_answer_log checks, with how a problem names a wrong value.
ANSWER_FIELDS = {"time": "an ISO time", "version": "a version id", "seconds": "a number of seconds",
                 "first_token_seconds": "a number of seconds or null", "refused": "true or false",
                 "sources": "a count"}


def log_answer(path: Path, *, version: str, seconds: float, first_token_seconds: float | None, refused: bool,
               sources: int, question: str | None = None, answer: str | None = None) -> None:
    """One line, whole or not at all; a full disk costs the line, never the answer."""
    line = {"time": datetime.now().isoformat(timespec="seconds"), "version": version, "seconds": round(seconds, 3),
            "first_token_seconds": None if first_token_seconds is None else round(first_token_seconds, 3),
            "refused": refused, "sources": sources}
    if question is not None:
        line |= {"question": question, "answer": answer}
    try:
        append_whole(path, (json.dumps(line, ensure_ascii=False) + "\n").encode(), own_line=True)
    except (ApprentiError, OSError):
        pass


def read_answer_log(path: Path) -> tuple[list[dict], list[str]]:
    """(the records whose ANSWER_FIELDS are right, the problems of the other lines by line number): a line cut
    by a crash or edited by hand is left out and named, so that a reader can say the log is damaged."""
    records, problems = [], []
    for number, _, record, problem in json_lines_of(path):
        problem = problem or "; ".join(f"'{name}' is not {kind}" for name, kind in ANSWER_FIELDS.items()
                                       if not answer_field_ok(name, record.get(name)))
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            records.append(record)
    return records, problems


def answer_field_ok(name: str, value) -> bool:
    if name == "time":
        try:
            return isinstance(value, str) and bool(datetime.fromisoformat(value))
        except ValueError:
            return False
    if name == "version":
        return isinstance(value, str) and bool(value)
    if name == "seconds":
        return is_number(value) and value >= 0
    if name == "first_token_seconds":
        return value is None or (is_number(value) and value >= 0)
    if name == "refused":
        return isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0  # sources


def is_number(value) -> bool:
    """A JSON value that is a real number: JSON's true and false are Python ints, NaN and Infinity parse too."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
