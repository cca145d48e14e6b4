"""JSON Lines as people write them: every line read on its own, a broken one named by its number."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, NamedTuple

from common.errors import ApprentiError


class Line(NamedTuple):
    number: int
    text: str
    record: dict | None  # None for a broken line...
    problem: str  # ...which this says


def json_objects(text: str) -> Iterator[Line]:
    """Each non-blank line, with the JSON object it holds or what is wrong with it, so that a caller keeps
    the good lines and reports the bad ones by number."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield Line(number, line, None, f"not JSON ({error.msg})")
            continue
        if not isinstance(record, dict):
            yield Line(number, line, None, "not a JSON object")
            continue
        yield Line(number, line, record, "")


def json_lines_of(path: Path) -> list[Line]:
    """The lines of a JSON Lines file, none for a missing file; an unreadable file is one clear error, and a
    byte that is not UTF-8 spoils only its own line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as error:
        raise ApprentiError(f"cannot read {path}: {error.strerror}") from None
    return list(json_objects(text))
