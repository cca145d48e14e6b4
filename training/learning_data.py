"""The learning data: free text in learning_data.txt, one entry after another, each ended by a line
holding only `%` (as in fortune files), so that entries keep their blank lines.

Each entry is also a document of the knowledge base (source `learning_data.txt`, id `learned-<hash>`), so that
`ask` answers it as soon as it is taught, before any fine-tuning; `sync_knowledge_base` keeps the two in step
after every change, a hand edit of the file included.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from common.errors import ApprentiError
from common.files import append_whole, file_lock, write_whole

ENTRY_SEPARATOR = "%"
SOURCE = "learning_data.txt"  # the knowledge base's source of the entries' documents
ID_PREFIX = "learned-"
# An entry is a fact or a few; a document belongs in the knowledge base, which retrieval reads whole.
MAX_ENTRY_CHARACTERS = 10_000


def entry_id(text: str) -> str:
    """The entry's id: a hash of its text, so that the same entry always has the same id."""
    return ID_PREFIX + hashlib.sha256(text.strip().encode()).hexdigest()[:10]


def append_entry(path: Path, text: str) -> str:
    """Append one entry whole and return its id. Safe with several writers: one locked write of the whole
    entry; a failed write (a full disk) is cut back, so the file never holds half an entry."""
    text = text.strip()
    if not text:
        raise ApprentiError("the entry is empty: nothing was saved")
    if len(text) > MAX_ENTRY_CHARACTERS:
        raise ApprentiError(f"the entry is {len(text):,} characters: an entry is a fact or a few (at most "
                            f"{MAX_ENTRY_CHARACTERS:,}); add a document to the knowledge base instead ('python "
                            "cli_app.py add --file FILE' or menu 2). Nothing was saved")
    if any(line.strip() == ENTRY_SEPARATOR for line in text.splitlines()):
        raise ApprentiError(f"a line holding only '{ENTRY_SEPARATOR}' separates entries in {path.name}: "
                            "reword that line")
    with file_lock(path.with_name(f".{path.name}.lock")):
        entries = read_entries(path)
        if text in entries:
            number = entries.index(text) + 1
            raise ApprentiError(f"this is already entry {number} ({entry_id(text)}): nothing was saved")
        append_whole(path, f"{text}\n{ENTRY_SEPARATOR}\n".encode())
    return entry_id(text)


def remove_entry(path: Path, wanted: str) -> str:
    """Take back the entry `wanted` (its id, or its number as `learned` lists them); returns its text."""
    with file_lock(path.with_name(f".{path.name}.lock")):
        entries = read_entries(path)
        ids = [entry_id(entry) for entry in entries]
        wanted = wanted.strip()
        if wanted.isdigit() and 1 <= int(wanted) <= len(entries):
            index = int(wanted) - 1
        elif wanted in ids or ID_PREFIX + wanted in ids:
            index = ids.index(wanted if wanted in ids else ID_PREFIX + wanted)
        else:
            raise ApprentiError(f"no entry '{wanted}' in {path.name} ({len(entries)} entries): give an id or a "
                                "number as 'python cli_app.py learned' lists them")
        removed = entries.pop(index)
        write_whole(path, "".join(f"{entry}\n{ENTRY_SEPARATOR}\n" for entry in entries).encode())
    return removed


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


def sync_knowledge_base(path: Path, knowledge_base) -> tuple[int, int]:
    """Make the knowledge base hold exactly the entries of `path` as documents: (added, removed)."""
    entries = {entry_id(entry): entry for entry in read_entries(path)}
    stored = {doc_id for doc_id, record in knowledge_base.documents().items() if record.source == SOURCE}
    for doc_id in stored - entries.keys():
        knowledge_base.delete(doc_id)
    added = [doc_id for doc_id in entries if doc_id not in stored]
    for doc_id in added:
        knowledge_base.add(entries[doc_id], doc_id, replace=True, source=SOURCE)
    return len(added), len(stored - entries.keys())


def data_fingerprint(entries: list[str]) -> str:
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()
