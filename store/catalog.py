"""What the store holds, document by document, read back from its chunks' metadata (the sketch's
metadata.json, true by construction), and what an ingest finds changed."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from store.documents import doc_id_of


@dataclass
class DocumentRecord:
    """What the store holds of one document, read back from its chunks' metadata."""
    doc_id: str
    source: str
    chunks: int  # chunks present
    expected_chunks: int  # chunks written: fewer present means an interrupted write
    hash: str  # "mixed" when chunks of two versions are present
    ingested_at: str
    file_hash: str = ""  # of the bytes of the file it was made from ("" for a typed text or an older store)
    file_records: int = 0  # the documents that file holds

    @property
    def complete(self) -> bool:
        return self.chunks == self.expected_chunks and self.hash != "mixed"

    def to_json(self) -> dict:
        return {"doc_id": self.doc_id, "source": self.source, "chunks": self.chunks, "hash": self.hash,
                "ingested_at": self.ingested_at}


def read_documents(chunks: Iterable[tuple[str, str | None, dict]]) -> dict[str, DocumentRecord]:
    """The documents of these (id, text, metadata) chunks, by id."""
    records: dict[str, DocumentRecord] = {}
    for chunk_id, _, metadata in chunks:
        doc_id = metadata.get("doc_id", doc_id_of(chunk_id))
        record = records.get(doc_id)
        if record is None:
            records[doc_id] = DocumentRecord(doc_id, metadata.get("source", ""), 1, metadata.get("chunks", 1),
                                             metadata.get("doc_hash", ""), metadata.get("ingested_at", ""),
                                             metadata.get("file_hash", ""), metadata.get("file_records", 0))
            continue
        record.chunks += 1
        if record.hash != metadata.get("doc_hash", ""):
            record.hash = "mixed"
        if record.file_hash != metadata.get("file_hash", ""):
            record.file_hash = "mixed"
        record.ingested_at = max(record.ingested_at, metadata.get("ingested_at", ""))
    return dict(sorted(records.items()))


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # documents whose file is gone, kept without --prune
    chunks: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def whole_files(stored: dict[str, DocumentRecord], indexed: dict[str, tuple[str, int]]
                ) -> dict[tuple[str, str], list[str]]:
    """(source, file hash) -> the ids of the documents made from those bytes of that file, for each file whose
    every document is in the store, complete, and in the keyword index: the same bytes again need no parsing."""
    made_from: dict[tuple[str, str], list[DocumentRecord]] = {}
    for record in stored.values():
        if record.file_hash not in ("", "mixed"):
            made_from.setdefault((record.source, record.file_hash), []).append(record)
    return {file: [record.doc_id for record in records] for file, records in made_from.items()
            if all(record.complete and record.file_records == len(records)
                   and indexed.get(record.doc_id) == (record.hash, record.chunks) for record in records)}


def is_gone(source: str, roots: list[Path], read_sources: set[str]) -> bool:
    """A document's source lies under an ingested path and is gone: its file deleted, or (a JSONL line)
    no longer in a file that was read, or its path now a link (a folder's links are read under their
    target's path, or not followed)."""
    path = Path(source)
    # realpath, not Path.resolve: a root given that is missing (its folder deleted) or a loop does not raise
    real_roots = [Path(os.path.realpath(Path(root).expanduser())) for root in roots]
    if not any(path == root or root in path.parents for root in real_roots):
        return False
    return source in read_sources or not path.exists() or path.is_symlink()
