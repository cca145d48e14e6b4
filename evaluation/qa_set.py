"""A question-answering set for evaluation: JSONL, one question a line.

    {"question": ..., "answers": [...], "context": "...", "doc_ids": [...]}

`answers` are the acceptable reference answers; an empty list means the question cannot be answered and the
right output is a refusal. `context` (optional) is the passage to answer from; without it the user's
knowledge base is searched, as `ask` does. `doc_ids` (optional) are the gold documents, for the retrieval
scores: ids of the set's contexts, or of the user's knowledge base for a question without a context.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ApprentiError
from common.jsonl import json_objects

SHIPPED_QA = Path(__file__).with_name("qa_set.jsonl")  # see the README for its source


@dataclass
class Question:
    question: str
    answers: list[str]
    context: str | None = None
    doc_ids: list[str] = field(default_factory=list)

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def read_qa_set(path: Path) -> tuple[list[Question], list[str]]:
    """The questions of a QA file and the problems of its bad lines (by line number); good lines are kept."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ApprentiError(f"no QA set at {path}") from None
    except UnicodeDecodeError as error:
        raise ApprentiError(f"{path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ApprentiError(f"cannot read {path}: {error.strerror}") from None
    questions, problems, seen = [], [], {}
    for number, _, record, problem in json_objects(text):
        problem = problem or check_record(record)
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        key = " ".join(record["question"].lower().split())
        if key in seen:
            problems.append(f"line {number}: the same question as line {seen[key]}")
            continue
        seen[key] = number
        questions.append(Question(record["question"].strip(), [str(a) for a in record["answers"]],
                                  record.get("context"), list(record.get("doc_ids") or [])))
    if not questions:
        raise ApprentiError(f"{path} has no usable question" + (f" ({problems[0]})" if problems else ""))
    return questions, problems


def check_record(record: dict) -> str:
    if not isinstance(record.get("question"), str) or not record["question"].strip():
        return 'no "question"'
    if not isinstance(record.get("answers"), list) or not all(isinstance(a, str) and a.strip()
                                                                for a in record["answers"]):
        return '"answers" must be a list of answers (empty: the question cannot be answered)'
    if record.get("context") is not None and (not isinstance(record["context"], str) or not record["context"].strip()):
        return '"context" must be a passage of text'
    if record.get("doc_ids") is not None and not (isinstance(record["doc_ids"], list)
                                                  and all(isinstance(d, str) for d in record["doc_ids"])):
        return '"doc_ids" must be a list of document ids'
    return ""
