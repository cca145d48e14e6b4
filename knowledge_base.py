"""The knowledge base: chunks of documents in a Chroma collection and, beside it,
a keyword index; questions are answered from both at once (store/hybrid_search.py).

A document with id ID is stored as chunks `ID#0`, `ID#1`, ...; every chunk's metadata says where it comes
from (store/documents.py), so the list of documents is read from the store itself and cannot drift from it.
Writes are whole documents: a write interrupted or failed leaves each document either as it was or as it is
now, and the next ingest finishes the job.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from common.config import Settings
from common.errors import ApprentiError, DuplicateIdError
from common.files import file_lock
from common.messages import notice
from store.catalog import DocumentRecord, IngestReport, is_gone, read_documents, whole_files
from store.documents import (MAX_ID_LENGTH, Chunk, SourceDocument, Unreadable, chunk_document, chunk_id, content_hash,
                             find_files, parse_file, read_bytes, real_path)
from store.hybrid_search import Passage, hybrid_search
from store.embeddings import PROBES, embeddings_for, fingerprint, same_model
from store.vector_store import COLLECTION, next_collection, open_collection, server_slug, swap_in_next

EMBEDDING_BATCH = 128  # chunks embedded together, then written with the documents they complete
PAGE = 5000  # chunks read from the store at once


@contextmanager
def interrupts_deferred():
    """Ctrl-C waits for the end of the block, so that a write is never cut between the store and the index."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class KnowledgeBase:
    def __init__(self, directory: Path, embeddings=None, server_url: str | None = None):
        """`embeddings`: a LangChain Embeddings, or a function that makes one when first needed, so that
        listing, deleting, keyword search and an ingest with nothing new never load the model."""
        from store.keyword_index import KeywordIndex
        self.directory = Path(directory)
        self.server_url = server_url
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.client, self.collection = open_collection(self.directory, server_url)
            # One keyword index per store: a server's lives in the local data dir, named after the server.
            name = "keywords.sqlite3" if not server_url else f"keywords-{server_slug(server_url)}.sqlite3"
            self.keywords = KeywordIndex(self.directory / name)
        except ApprentiError:
            raise
        except Exception as error:  # chromadb and sqlite raise several types for an unusable store
            raise ApprentiError(f"cannot open the knowledge base in {server_url or self.directory}: {error}") from None
        self._embeddings = embeddings
        self._keywords_checked = False
        self._model_checked = False

    @property
    def embeddings(self):
        """The embedding model, checked once against the one that made the store's vectors."""
        if self._embeddings is None:
            raise ApprentiError("this knowledge base was opened without an embedding model")
        if not hasattr(self._embeddings, "embed_query"):
            self._embeddings = self._embeddings()
        if not self._model_checked:
            self._check_embedding_model(self._embeddings)
            self._model_checked = True
        return self._embeddings

    def _check_embedding_model(self, embeddings) -> None:
        """A store records which model made its vectors (its name, their dimension, the vectors of a few fixed
        texts); queries and new chunks embedded by another model would be scored against vectors they cannot be
        compared with, under a threshold tuned for the first. A store without a record takes the model's."""
        recorded, current = self.collection.metadata or {}, embedding_record(embeddings)
        if "embedding_fingerprint" not in recorded or not self.count_chunks():
            try:
                self.collection.modify(metadata=current)
            except Exception:  # a read-only store is read as it is; its first write says what is wrong
                pass
        elif not same_model(json.loads(recorded["embedding_fingerprint"]), json.loads(current["embedding_fingerprint"])):
            raise ApprentiError(
                f"the knowledge base in {self.server_url or self.directory} was embedded with "
                f"{recorded.get('embedding_model')} ({recorded.get('embedding_dimension')} dimensions), and "
                f"{current['embedding_model']} makes other vectors: run `python cli_app.py reembed` to embed it "
                f"again with {current['embedding_model']}, or set APPRENTI_EMBEDDING_MODEL back")

    @classmethod
    def open(cls, settings: Settings) -> "KnowledgeBase":
        return cls(settings.chroma_dir, functools.partial(embeddings_for, settings), settings.chroma_url)

    def writing(self):
        """One writer at a time across processes: Chroma's embedded store is not safe for two."""
        return file_lock(self.directory / ".write.lock",
                         waiting="waiting for another Apprenti process to finish writing the knowledge base...")

    # ------------------------------------------------------------ what the store holds

    def count_chunks(self) -> int:
        return self.collection.count()

    def chunks(self, include=("documents", "metadatas")) -> Iterator[tuple[str, str | None, dict]]:
        """(id, text, metadata) of every chunk, read a page at a time."""
        for offset in range(0, self.count_chunks(), PAGE):
            page = self.collection.get(include=list(include), limit=PAGE, offset=offset)
            texts = page.get("documents") or [None] * len(page["ids"])
            metadatas = page.get("metadatas") or [{}] * len(page["ids"])
            yield from zip(page["ids"], texts, metadatas)

    def passages(self, ids: list[str]) -> list[tuple[str, str]]:
        """(chunk id, text) for each id given: a chunk id as `search` prints it, or a document id as the
        user chose it (all its chunks, in order). An id the store does not hold is an error."""
        found = self.collection.get(ids=list(ids), include=["documents"])
        texts = dict(zip(found["ids"], found["documents"]))
        passages, missing = [], []
        for given in ids:
            if given in texts:
                passages.append((given, texts[given]))
                continue
            chunks = self.collection.get(where={"doc_id": given}, include=["documents", "metadatas"])
            if not chunks["ids"]:
                missing.append(given)
            order = sorted(zip(chunks["ids"], chunks["documents"], chunks["metadatas"]),
                           key=lambda chunk: chunk[2].get("chunk", 0))
            passages += [(chunk_id, text) for chunk_id, text, _ in order]
        if missing:
            raise ApprentiError(f"the knowledge base has no chunk or document {', '.join(missing)}: give ids as "
                                "`list` or `search` prints them")
        return passages

    def documents(self) -> dict[str, DocumentRecord]:
        return read_documents(self.chunks(include=("metadatas",)))

    # ------------------------------------------------------------ writing

    def add(self, text: str, doc_id: str | None = None, replace: bool = False, source: str = "typed",
            progress: Callable[[dict], None] | None = None) -> list[str]:
        """Store `text` under `doc_id` (generated when None); returns the chunk ids."""
        text = text.strip()
        if not text:
            raise ApprentiError("the text is empty: nothing was added")
        doc_id = (doc_id or "").strip() or uuid.uuid4().hex[:12]
        if len(doc_id) > MAX_ID_LENGTH:
            raise ApprentiError(f"bad id '{doc_id[:40]}...': use at most {MAX_ID_LENGTH} characters")
        with self.writing():
            if self.collection.get(where={"doc_id": doc_id}, limit=1, include=[])["ids"] and not replace:
                raise DuplicateIdError(f"the knowledge base already has a document '{doc_id}': "
                                       "choose another id, or replace it (--replace)")
            chunks = self._index([SourceDocument.from_text(text, doc_id, source)], progress)
        return [chunk.id for chunk in chunks]

    def ingest(self, paths: list[Path], prune: bool = False,
               progress: Callable[[dict], None] | None = None) -> IngestReport:
        """Files and folders into the store: new and changed documents indexed, unchanged ones skipped (a file
        with the bytes its stored documents were made from is not even parsed), documents of deleted files
        removed when `prune`. Running it again after an interruption finishes the job."""
        report = IngestReport()
        with self.writing():
            stored = self.documents()
            indexed = self.keywords.documents()
            documents, unparsed, read_sources = self._read(paths, whole_files(stored, indexed), report, progress)
            report.unchanged = len(unparsed)
            fresh, restamped = [], []
            for document in documents:
                record = stored.get(document.doc_id)
                if record and record.source != document.source:
                    report.problems.append((document.source, f"id '{document.doc_id}' is already used by "
                                                             f"{record.source}"))
                elif (record and record.complete and record.hash == document.hash
                      and indexed.get(document.doc_id) == (document.hash, record.chunks)):
                    report.unchanged += 1
                    # Same text, but the file changed (another line of it) or the store predates file hashes.
                    if (record.file_hash, record.file_records) != (document.file_hash, document.file_records):
                        restamped.append((document, record.chunks))
                else:
                    (report.updated if record else report.added).append(document.doc_id)
                    fresh.append(document)
            self._restamp(restamped)
            report.chunks = len(self._index(fresh, progress))
            seen = set(unparsed) | {document.doc_id for document in documents}
            gone = [record.doc_id for record in stored.values()
                    if record.doc_id not in seen and is_gone(record.source, paths, read_sources)]
            if prune and gone:
                self._remove(gone)
                report.removed = gone
            else:
                report.gone = gone
        return report

    def _read(self, paths, whole: dict[tuple[str, str], list[str]], report, progress
              ) -> tuple[list[SourceDocument], list[str], set[str]]:
        """The documents of the files under `paths`, the ids of those of the files found `whole` (the bytes their
        stored documents were made from: not parsed), and the files read."""
        files = []
        for path in paths:
            path = Path(path).expanduser()
            try:
                files += find_files(real_path(path), report.problems)  # a folder's links that lead out: skipped
            except Unreadable as error:
                report.problems.append((os.path.realpath(path), str(error)))
        files = list(dict.fromkeys(files))  # a file under two of the paths given is read once
        documents, unparsed, read_sources = [], [], set()
        for number, file in enumerate(files, 1):
            try:
                data = read_bytes(file)
                file_hash = content_hash(data)
                if (str(file), file_hash) in whole:
                    unparsed += whole[str(file), file_hash]
                else:
                    found, problems = parse_file(file, data, file_hash)
                    documents += found
                    report.problems += [(str(file), problem) for problem in problems]
                read_sources.add(str(file))
            except Unreadable as error:
                report.problems.append((str(file), str(error)))
            if progress:
                progress({"stage": "reading", "done": number, "total": len(files)})
        return documents, unparsed, read_sources

    def _restamp(self, documents: list[tuple[SourceDocument, int]]) -> None:
        """Record on the chunks of these unchanged (document, chunk count) the file they were read from now."""
        ids, metadatas = [], []
        for document, chunks in documents:
            ids += [chunk_id(document.doc_id, index) for index in range(chunks)]
            metadatas += [{"file_hash": document.file_hash, "file_records": document.file_records}] * chunks
        with interrupts_deferred():
            try:
                for start in range(0, len(ids), PAGE):  # Chroma merges these keys into each chunk's metadata
                    self.collection.update(ids=ids[start:start + PAGE], metadatas=metadatas[start:start + PAGE])
            except Exception as error:
                raise ApprentiError(f"cannot write the knowledge base in {self.server_url or self.directory}: "
                                    f"{error}") from None

    def _index(self, documents: list[SourceDocument], progress=None) -> list[Chunk]:
        """Chunk, embed and write `documents`; each write holds whole documents, about a batch of chunks."""
        now = datetime.now().isoformat(timespec="seconds")
        chunked = [chunk_document(document, now) for document in documents]
        total = sum(len(chunks) for chunks in chunked)
        written: list[Chunk] = []
        group_ids, group = [], []
        for number, (document, chunks) in enumerate(zip(documents, chunked), 1):
            group_ids.append(document.doc_id)
            group += chunks
            if len(group) < EMBEDDING_BATCH and number < len(documents):
                continue
            vectors = []
            for start in range(0, len(group), EMBEDDING_BATCH):
                vectors += self.embeddings.embed_documents([c.text for c in group[start:start + EMBEDDING_BATCH]])
                if progress:
                    progress({"stage": "embedding", "done": len(written) + min(start + EMBEDDING_BATCH, len(group)),
                              "total": total, "documents": number - 1, "documents_total": len(documents)})
            self._write(group_ids, group, vectors)
            written += group
            group_ids, group = [], []
            if progress:
                progress({"stage": "embedding", "done": len(written), "total": total, "documents": number,
                          "documents_total": len(documents)})
        return written

    def _write(self, doc_ids: list[str], chunks: list[Chunk], vectors: list) -> None:
        """Replace the documents `doc_ids` by `chunks` (and their vectors) in the store and the keyword index."""
        new_ids = {chunk.id for chunk in chunks}
        with interrupts_deferred():
            try:
                old_ids = self.collection.get(where={"doc_id": {"$in": doc_ids}}, include=[])["ids"] if doc_ids else []
                for start in range(0, len(chunks), PAGE):
                    part = chunks[start:start + PAGE]
                    self.collection.upsert(ids=[c.id for c in part], embeddings=vectors[start:start + PAGE],
                                           documents=[c.text for c in part], metadatas=[c.metadata for c in part])
                stale = [chunk_id for chunk_id in old_ids if chunk_id not in new_ids]
                if stale:
                    self.collection.delete(ids=stale)
                self.keywords.write(chunks, doc_ids)
            except Exception as error:
                raise ApprentiError(f"cannot write the knowledge base in {self.server_url or self.directory}: "
                                    f"{error}; it holds what it held before this document") from None

    def delete(self, doc_id: str) -> int:
        with self.writing():
            ids = self.collection.get(where={"doc_id": doc_id}, include=[])["ids"]
            if not ids:
                raise ApprentiError(f"the knowledge base has no document '{doc_id}'")
            self._remove([doc_id])
        return len(ids)

    def _remove(self, doc_ids: list[str]) -> None:
        with interrupts_deferred():
            try:
                for start in range(0, len(doc_ids), 500):
                    self.collection.delete(where={"doc_id": {"$in": doc_ids[start:start + 500]}})
                self.keywords.remove(doc_ids)
            except Exception as error:
                raise ApprentiError(f"cannot write the knowledge base in {self.server_url or self.directory}: "
                                    f"{error}") from None

    def rebuild_keyword_index(self) -> None:
        """Make the keyword index again from the store (after a crash, or another client's writes to a server)."""
        with self.writing(), interrupts_deferred():
            self.keywords.clear()
            for page in batched(self.chunks(), PAGE):
                self.keywords.write([Chunk(chunk_id, text, metadata) for chunk_id, text, metadata in page])

    def reembed(self, progress: Callable[[dict], None] | None = None) -> int:
        """Embed every chunk again with the model the settings name (after the embedding model changed), into a
        collection beside the one in use, which it replaces once whole: an interruption leaves the store as it
        was, and running it again goes on from where it stopped. Returns the number of chunks."""
        embeddings = self._embeddings() if not hasattr(self._embeddings, "embed_query") else self._embeddings
        record = embedding_record(embeddings)
        with self.writing():
            following = next_collection(self.client, record)
            if following.metadata.get("embedding_fingerprint") != record["embedding_fingerprint"]:
                self.client.delete_collection(following.name)  # begun with yet another model: start again
                following = next_collection(self.client, record)
            ids = [chunk_id for chunk_id, _, _ in self.chunks(include=())]
            done = set(following.get(include=[])["ids"])
            for start in range(0, len(ids), EMBEDDING_BATCH):
                batch = [chunk_id for chunk_id in ids[start:start + EMBEDDING_BATCH] if chunk_id not in done]
                if batch:
                    found = self.collection.get(ids=batch, include=["documents", "metadatas"])
                    vectors = embeddings.embed_documents(found["documents"])
                    with interrupts_deferred():
                        following.upsert(ids=found["ids"], embeddings=vectors, documents=found["documents"],
                                         metadatas=found["metadatas"])
                if progress:
                    progress({"stage": "embedding", "done": min(start + EMBEDDING_BATCH, len(ids)), "total": len(ids)})
            with interrupts_deferred():
                swap_in_next(self.client)
            self.collection = self.client.get_collection(COLLECTION)
        self._embeddings, self._model_checked = embeddings, True
        return len(ids)

    # ------------------------------------------------------------ searching

    def search(self, query: str, k: int = 4, mode: str = "hybrid", keyword_weight: float | None = None
               ) -> list[Passage]:
        """The k best chunks for `query` (see store/hybrid_search.py)."""
        if self.count_chunks():
            self._check_keyword_index()
        return hybrid_search(self.collection, self.keywords, lambda: self.embeddings, query, k, mode, keyword_weight)

    def _check_keyword_index(self) -> None:
        """Once per process: a keyword index out of step with the store is made again from it."""
        if self._keywords_checked:
            return
        self._keywords_checked = True
        if self.keywords.count() != self.count_chunks():
            notice(f"the keyword index is out of step with the store: rebuilding it ({self.count_chunks()} chunks)")
            self.rebuild_keyword_index()

    def relevant(self, query: str, k: int, threshold: float) -> list[Passage]:
        """The k best chunks for `query` that score at least `threshold`: what an answer may rest on."""
        return [passage for passage in self.search(query, k) if passage.score >= threshold]

    def retriever(self, k: int, threshold: float):
        from store.retriever import retriever_class
        return retriever_class()(knowledge_base=self, k=k, threshold=threshold)


def embedding_record(embeddings) -> dict:
    """What a store records of the model that made its vectors (store/embeddings.py)."""
    vectors = embeddings.embed_documents(list(PROBES))
    return {"embedding_model": str(getattr(embeddings, "name", type(embeddings).__name__)),
            "embedding_dimension": len(vectors[0]), "embedding_fingerprint": json.dumps(fingerprint(vectors))}


def batched(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
