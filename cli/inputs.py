"""Reading what a person types or points to: one message for every bad input, nothing lost."""
from __future__ import annotations

import sys
from pathlib import Path

from common.errors import ApprentiError

MAX_TEXT_BYTES = 20_000_000  # larger texts belong in files split by the user, not one entry


def read_text(text: str | None, path: str | None) -> str:
    """The text given on the command line, '-' for standard input, or a file's content."""
    if path is None and text == "-":
        return check_size(sys.stdin.read(MAX_TEXT_BYTES + 1))
    if path is None:
        return check_size(text or "")
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_TEXT_BYTES:
            raise ApprentiError(f"{file} is larger than {MAX_TEXT_BYTES // 1_000_000} MB: split it first")
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ApprentiError(f"{file} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except OSError as error:
        raise ApprentiError(f"cannot read {file}: {error.strerror}") from None


def check_size(text: str) -> str:
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise ApprentiError(f"the text is larger than {MAX_TEXT_BYTES // 1_000_000} MB: split it first")
    return text


def read_block(prompt: str) -> str:
    """Lines up to an empty one (or the end of input), so that pasted paragraphs stay whole."""
    print(prompt)
    lines = []
    while True:
        try:
            line = input()
        except EOFError:
            break
        if not line.strip():
            break
        lines.append(line)
    return check_size("\n".join(lines))
