"""The examples the instruction and preference methods learn from, read from JSON Lines files as people write
them, in trl's conversational form (a prompt of chat turns, answers as assistant turns).

Instruction rows (SFT) come in any of four forms:
    {"instruction", "input", "output"}          Alpaca ("input" may be empty or absent)
    {"messages": [{"role", "content"}, ...]}     a chat, learned on its last (assistant) turn
    {"prompt", "completion"}                     text or chat turns
    {"question", "context", "answer"}            grounded question answering ("context": text or a list of texts)
Preference rows are pairs {"prompt", "chosen", "rejected"} and thumbs {"prompt", "completion", "label"}, as
`merge-feedback` writes them (with "question" and "passages" beside the sketch's "prompt").

A question asked with passages is rendered in the assistant's own answer prompt (inference/prompts.py),
so that grounded question answering is learned exactly as it is asked. A row in none of the forms is reported
with its line number and the good rows are kept.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.errors import ApprentiError
from common.jsonl import json_lines_of
from inference.prompts import answer_messages

EXAMPLES = "examples.jsonl"  # a version's own training rows, kept with it for later runs' replay


@dataclass
class Example:
    line: int  # where it was read: problems with it name the line
    row: dict  # trl's conversational form


@dataclass
class Examples:
    path: Path
    items: list[Example] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        return [example.row for example in self.items]

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(json.dumps(row, sort_keys=True) for row in self.rows).encode()).hexdigest()

    def describe(self) -> dict:
        """What a manifest records of the data."""
        return {"file": str(self.path), "rows": len(self.items), "sha256": self.fingerprint(),
                "problems": len(self.problems)}


def read_examples(path: Path, parse: Callable[[dict], dict], what: str) -> Examples:
    """Every row of `path` that `parse` accepts; the others as problems, by line number."""
    if not path.is_file():
        raise ApprentiError(f"{path} does not exist: it should hold {what}, one JSON object a line")
    examples = Examples(path)
    for line in json_lines_of(path):
        try:
            if line.record is None:
                raise ValueError(line.problem)
            examples.items.append(Example(line.number, parse(line.record)))
        except ValueError as error:
            examples.problems.append(f"{path.name} line {line.number}: {error}")
    if not examples.items:
        shown = "; ".join(examples.problems[:3]) or "it is empty"
        raise ApprentiError(f"{path} has no usable rows of {what} ({shown})")
    return examples


# ---------------------------------------------------------------- the forms

def text(record: dict, name: str, allow_empty: bool = False) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        raise ValueError(f'"{name}" should be text, not {type(value).__name__}')
    if not value.strip() and not allow_empty:
        raise ValueError(f'"{name}" is empty')
    return value


def user_turn(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def assistant_turn(content: str) -> list[dict]:
    return [{"role": "assistant", "content": content}]


def turns(value, name: str) -> list[dict]:
    """A list of chat turns, each {"role": "system"|"user"|"assistant", "content": text}."""
    if not isinstance(value, list) or not value:
        raise ValueError(f'"{name}" should be a non-empty list of {{"role", "content"}} turns')
    for turn in value:
        if (not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant")
                or not isinstance(turn.get("content"), str)):
            raise ValueError(f'"{name}" has a turn that is not {{"role": system|user|assistant, "content": text}}')
    return [{"role": turn["role"], "content": turn["content"]} for turn in value]


def grounded_prompt(question: str, passages, history=()) -> list[dict]:
    """The question in the assistant's answer prompt with its passages (alone when it has none), after the
    conversation's earlier turns where it was a follow-up."""
    if isinstance(passages, str):
        passages = [passages]
    if not isinstance(passages, list) or not all(isinstance(passage, str) for passage in passages):
        raise ValueError('"context" should be text or a list of texts')
    passages = [passage for passage in passages if passage.strip()]
    return answer_messages(question, passages, turns(history, "history") if history else ())


def prompt_turns(record: dict) -> list[dict]:
    """The prompt of a preference row: the question in the answer prompt when the row has it apart (as
    merge-feedback writes it), else its "prompt" as one user turn (or the turns it holds)."""
    if isinstance(record.get("question"), str) and record["question"].strip():
        return grounded_prompt(record["question"], record.get("passages", record.get("context", [])),
                               record.get("history") or ())
    if isinstance(record.get("prompt"), list):
        return turns(record["prompt"], "prompt")
    return user_turn(text(record, "prompt"))


def instruction(record: dict) -> dict:
    """An SFT row, {"prompt": turns, "completion": the assistant's turn}, from any of the four forms."""
    if "messages" in record:
        messages = turns(record["messages"], "messages")
        if len(messages) < 2 or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            raise ValueError('"messages" should end with a non-empty assistant turn after the prompt')
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    if "instruction" in record and "output" in record:
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise ValueError('"input" should be text')
        content = text(record, "instruction") + (f"\n\n{extra}" if extra.strip() else "")
        return {"prompt": user_turn(content), "completion": assistant_turn(text(record, "output"))}
    if "question" in record and "answer" in record:
        return {"prompt": grounded_prompt(text(record, "question"), record.get("context", [])),
                "completion": assistant_turn(text(record, "answer"))}
    if "prompt" in record and "completion" in record:
        prompt = turns(record["prompt"], "prompt") if isinstance(record["prompt"], list) else user_turn(
            text(record, "prompt"))
        completion = record["completion"]
        completion = turns(completion, "completion") if isinstance(completion, list) else assistant_turn(
            text(record, "completion"))
        return {"prompt": prompt, "completion": completion}
    raise ValueError("none of the forms {instruction, input, output}, {messages}, {prompt, completion}, "
                     "{question, context, answer}")


def preference_pair(record: dict) -> dict:
    chosen, rejected = text(record, "chosen"), text(record, "rejected")
    if chosen.strip() == rejected.strip():
        raise ValueError('"chosen" and "rejected" are the same answer')
    return {"prompt": prompt_turns(record), "chosen": assistant_turn(chosen), "rejected": assistant_turn(rejected)}


def thumb(record: dict) -> dict:
    if not isinstance(record.get("label"), bool):
        raise ValueError('"label" should be true (a good answer) or false (a bad one)')
    return {"prompt": prompt_turns(record), "completion": assistant_turn(text(record, "completion")),
            "label": record["label"]}


# ---------------------------------------------------------------- checks across rows

def prompt_key(row: dict) -> str:
    return json.dumps(row["prompt"], sort_keys=True)


def without_overlap(train: Examples, test: Examples) -> list[str]:
    """Test rows whose prompt is also a train row's prompt say nothing of unseen questions: they leave the
    test set, with a problem naming them."""
    seen = {prompt_key(row) for row in train.rows}
    overlapping = [example for example in test.items if prompt_key(example.row) in seen]
    test.items = [example for example in test.items if prompt_key(example.row) not in seen]
    if not overlapping:
        return []
    lines = ", ".join(str(example.line) for example in overlapping[:10])
    return [f"{test.path.name}: {len(overlapping)} row(s) ask what {train.path.name} teaches (lines {lines}"
            f"{', ...' if len(overlapping) > 10 else ''}): left out of the test"]


def fitting(examples: Examples, tokenizer, window: int, answer_room: int) -> None:
    """Rows whose prompt leaves less than `answer_room` tokens of the context window are dropped, by line."""
    kept = []
    for example in examples.items:
        length = len(tokenizer.apply_chat_template(example.row["prompt"], add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"])
        if length + answer_room > window:
            examples.problems.append(f"{examples.path.name} line {example.line}: the prompt is {length} tokens, "
                                     f"too long for the model's {window}-token context window: left out")
        else:
            kept.append(example)
    examples.items = kept
    if not kept:
        raise ApprentiError(f"no row of {examples.path} fits the model's {window}-token context window")


def replay_sample(versions, parent: str, kind: str, count: int, seed: int) -> tuple[list[dict], list[str]]:
    """Up to `count` rows that earlier versions of the same `kind` of learning were trained on (from the
    parent back), mixed into a new run against forgetting; and the versions they came from."""
    rows, sources = [], []
    for version_id in ([parent] + versions.ancestors(parent)) if parent != "base" else []:
        version = versions.get(version_id)
        if version.manifest.get("examples_kind") != kind or not (version.folder / EXAMPLES).is_file():
            continue
        found = [line.record for line in json_lines_of(version.folder / EXAMPLES) if line.record is not None]
        rows += found
        sources.append(version_id)
    random.Random(seed).shuffle(rows)
    return rows[:count], sources


def write_examples(folder: Path, rows: list[dict]) -> None:
    (folder / EXAMPLES).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                                   encoding="utf-8")
