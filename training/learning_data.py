"""The learning data: free text in learning_data.txt, one entry after another, each ended by a line
holding only `%` (as in fortune files), so that entries keep their blank lines."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from common.errors import ApprentiError
from common.files import append_whole

ENTRY_SEPARATOR = "%"


def append_entry(path: Path, text: str) -> None:
    """Append one entry whole. Safe with several writers: one locked write of the whole entry; a failed
    write (a full disk) is cut back, so the file never holds half an entry."""
    text = text.strip()
    if not text:
        raise ApprentiError("the entry is empty: nothing was saved")
    if any(line.strip() == ENTRY_SEPARATOR for line in text.splitlines()):
        raise ApprentiError(f"a line holding only '{ENTRY_SEPARATOR}' separates entries in {path.name}: "
                            "reword that line")
    append_whole(path, f"{text}\n{ENTRY_SEPARATOR}\n".encode())


def read_entries(path: Path) -> list[str]:
    """The entries of the learning data; a file written by hand without separators is one entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as error:
        raise ApprentiError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except OSError as error:
        raise ApprentiError(f"cannot read {path}: {error.strerror}") from None
    entries, lines = [], []
    for line in text.splitlines() + [ENTRY_SEPARATOR]:
        if line.strip() == ENTRY_SEPARATOR:
            entry = "\n".join(lines).strip()
            if entry:
                entries.append(entry)
            lines = []
        else:
            lines.append(line)
    return entries


def data_fingerprint(entries: list[str]) -> str:
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()
