"""The knowledge base: chunks of documents in a Chroma collection (through langchain_chroma) and, beside it,
a keyword index; questions are answered from both at once.

A document with id ID is stored as chunks `ID#0`, `ID#1`, ...; every chunk's metadata says where it comes
from (see documents.chunk_document), so the list of documents is read from the store itself and cannot drift
from it. Writes are whole documents: a write interrupted or failed leaves each document either as it was
or as it is now, and the next ingest finishes the job.
"""
from __future__ import annotations

import fcntl
import functools
import os
import signal
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from config import ApprentiError, DuplicateIdError, Settings
from documents import MAX_ID_LENGTH, Chunk, SourceDocument, Unreadable, chunk_document, find_files, read_file
from language import detect_language

COLLECTION = "apprenti_knowledge"
EMBEDDING_BATCH = 128  # chunks embedded together, then written with the documents they complete
PAGE = 5000  # chunks read from the store at once
CANDIDATES = 30  # chunks each retriever proposes before fusion
# Weight of the keyword score in the fused score (the rest is the dense cosine similarity), by the question's
# language: the embedding model is English-centred, so French leans more on words. Chosen by
# `python bench/retrieval.py` on three FAQ sets (English, French); figures in the README.
KEYWORD_WEIGHTS = {"en": 0.25, "fr": 0.5}


@dataclass
class Hit:
    id: str
    doc_id: str
    score: float  # dense, keyword or fused: higher is more relevant; the fused score lies in [-1, 1]
    text: str
    source: str


@dataclass
class DocumentRecord:
    """What the store holds of one document, read back from its chunks' metadata."""
    doc_id: str
    source: str
    chunks: int  # chunks present
    expected_chunks: int  # chunks written: fewer present means an interrupted write
    hash: str  # "mixed" when chunks of two versions are present
    ingested_at: str

    @property
    def complete(self) -> bool:
        return self.chunks == self.expected_chunks and self.hash != "mixed"

    def to_json(self) -> dict:
        return {"doc_id": self.doc_id, "source": self.source, "chunks": self.chunks, "hash": self.hash,
                "ingested_at": self.ingested_at}


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # documents whose file is gone, kept without --prune
    chunks: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def embeddings_for(settings: Settings):
    from langchain_huggingface import HuggingFaceEmbeddings
    from models import quiet_transformers, resolve_embedding_model
    source = resolve_embedding_model(settings)
    with quiet_transformers():
        return HuggingFaceEmbeddings(model_name=str(source.path), encode_kwargs={"normalize_embeddings": True})


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
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        from langchain_chroma import Chroma
        from keyword_index import KeywordIndex
        self.directory = Path(directory)
        self.server_url = server_url
        where = server_url or str(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            client = server_client(server_url) if server_url else None
            with open_lock(self.directory):
                self.store = Chroma(collection_name=COLLECTION, client=client,
                                    persist_directory=None if client else str(self.directory),
                                    collection_metadata={"hnsw:space": "cosine"})
                # One keyword index per store: a server's lives in the local data dir, named after the server.
                name = "keywords.sqlite3" if not server_url else f"keywords-{server_slug(server_url)}.sqlite3"
                self.keywords = KeywordIndex(self.directory / name)
            self.collection = self.store._collection  # langchain_chroma embeds again on add; we embed once
        except ApprentiError:
            raise
        except Exception as error:  # chromadb and sqlite raise several types for an unusable store
            raise ApprentiError(f"cannot open the knowledge base in {where}: {error}") from None
        self._embeddings = embeddings
        self._checked = False

    @property
    def embeddings(self):
        if self._embeddings is None:
            raise ApprentiError("this knowledge base was opened without an embedding model")
        if not hasattr(self._embeddings, "embed_query"):
            self._embeddings = self._embeddings()
        return self._embeddings

    @classmethod
    def open(cls, settings: Settings) -> "KnowledgeBase":
        return cls(settings.chroma_dir, functools.partial(embeddings_for, settings), settings.chroma_url)

    @contextmanager
    def writing(self):
        """One writer at a time across processes: Chroma's embedded store is not safe for two."""
        try:
            lock = open(self.directory / ".write.lock", "a")
        except OSError as error:
            raise ApprentiError(f"cannot write the knowledge base in {self.directory}: {error.strerror}") from None
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print("waiting for another Apprenti process to finish writing the knowledge base...", flush=True)
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

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

    def texts(self, ids: list[str]) -> dict[str, str]:
        """The text of each of these chunks that the store holds."""
        found = self.collection.get(ids=list(ids), include=["documents"])
        return dict(zip(found["ids"], found["documents"]))

    def documents(self) -> dict[str, DocumentRecord]:
        records: dict[str, DocumentRecord] = {}
        for chunk_id, _, metadata in self.chunks(include=("metadatas",)):
            doc_id = metadata.get("doc_id", chunk_id.rsplit("#", 1)[0])
            record = records.get(doc_id)
            if record is None:
                records[doc_id] = DocumentRecord(doc_id, metadata.get("source", ""), 1, metadata.get("chunks", 1),
                                                 metadata.get("doc_hash", ""), metadata.get("ingested_at", ""))
                continue
            record.chunks += 1
            if record.hash != metadata.get("doc_hash", ""):
                record.hash = "mixed"
            record.ingested_at = max(record.ingested_at, metadata.get("ingested_at", ""))
        return dict(sorted(records.items()))

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
        """Files and folders into the store: new and changed documents indexed, unchanged ones skipped,
        documents of deleted files removed when `prune`. Running it again after an interruption finishes
        the job."""
        report = IngestReport()
        with self.writing():
            stored = self.documents()
            indexed = self.keywords.documents()
            documents, read_sources = self._read(paths, report, progress)
            fresh = []
            for document in documents:
                record = stored.get(document.doc_id)
                if record and record.source != document.source:
                    report.problems.append((document.source, f"id '{document.doc_id}' is already used by "
                                                             f"{record.source}"))
                elif (record and record.complete and record.hash == document.hash
                      and indexed.get(document.doc_id) == (document.hash, record.chunks)):
                    report.unchanged += 1
                else:
                    (report.updated if record else report.added).append(document.doc_id)
                    fresh.append(document)
            report.chunks = len(self._index(fresh, progress))
            seen = {document.doc_id for document in documents}
            gone = [record.doc_id for record in stored.values()
                    if record.doc_id not in seen and is_gone(record.source, paths, read_sources)]
            if prune and gone:
                self._remove(gone)
                report.removed = gone
            else:
                report.gone = gone
        return report

    def _read(self, paths, report, progress) -> tuple[list[SourceDocument], set[str]]:
        files = []
        for path in paths:
            path = Path(path).expanduser().resolve()
            if not path.exists():
                report.problems.append((str(path), "no such file or folder"))
            files += find_files(path) if path.exists() else []
        documents, read_sources = [], set()
        for number, file in enumerate(files, 1):
            try:
                found, problems = read_file(file)
                documents += found
                read_sources.add(str(file))
                report.problems += [(str(file), problem) for problem in problems]
            except Unreadable as error:
                report.problems.append((str(file), str(error)))
            if progress:
                progress({"stage": "reading", "done": number, "total": len(files)})
        return documents, read_sources

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

    # ------------------------------------------------------------ searching

    def search(self, query: str, k: int = 4, mode: str = "hybrid", keyword_weight: float | None = None) -> list[Hit]:
        """The k best chunks for `query`: by meaning ("dense"), by words ("keyword"), or both fused ("hybrid").

        Fusion adds the two scores, weighed, for every chunk either retriever proposes, rather than
        fusing ranks (RRF): ranks would let a weak keyword list push good dense results down, and a fused
        score that keeps the scale of the scores can still be held against the relevance threshold."""
        if mode not in {"hybrid", "dense", "keyword"}:
            raise ValueError(f"mode={mode}: use hybrid, dense or keyword")
        if self.count_chunks() == 0:
            return []
        self._check_keyword_index()
        if keyword_weight is None:
            keyword_weight = KEYWORD_WEIGHTS[detect_language(query)]
        dense_weight = {"hybrid": 1 - keyword_weight, "dense": 1.0, "keyword": 0.0}[mode]
        keyword_weight = 1 - dense_weight
        query_vector = self.embeddings.embed_query(query) if dense_weight else None
        candidates: dict[str, dict] = {}  # id -> text, metadata, dense, keyword
        if dense_weight:
            found = self.collection.query(query_embeddings=[query_vector], n_results=min(CANDIDATES, self.count_chunks()),
                                          include=["documents", "metadatas", "distances"])
            for chunk_id, text, metadata, distance in zip(found["ids"][0], found["documents"][0],
                                                          found["metadatas"][0], found["distances"][0]):
                candidates[chunk_id] = {"text": text, "metadata": metadata, "dense": 1 - distance}
        if keyword_weight:
            keyword = self.keywords.search(query, CANDIDATES)
            if dense_weight:  # the dense candidates' keyword scores, and the keyword candidates' similarities
                keyword |= self.keywords.search(query, CANDIDATES, among_ids=[i for i in candidates if i not in keyword])
            missing = [chunk_id for chunk_id in keyword if chunk_id not in candidates]
            if missing:
                found = self.collection.get(ids=missing, include=["documents", "metadatas", "embeddings"])
                for chunk_id, text, metadata, vector in zip(found["ids"], found["documents"], found["metadatas"],
                                                            found["embeddings"]):
                    similarity = float(sum(a * b for a, b in zip(query_vector, vector))) if dense_weight else 0.0
                    candidates[chunk_id] = {"text": text, "metadata": metadata, "dense": similarity}
            for chunk_id, candidate in candidates.items():
                candidate["keyword"] = keyword.get(chunk_id, 0.0)
        hits = [Hit(chunk_id, c["metadata"].get("doc_id", chunk_id.rsplit("#", 1)[0]),
                    round(dense_weight * c.get("dense", 0.0) + keyword_weight * c.get("keyword", 0.0), 4),
                    c["text"], c["metadata"].get("source", ""))
                for chunk_id, c in candidates.items()]
        return sorted(hits, key=lambda hit: -hit.score)[:k]

    def _check_keyword_index(self) -> None:
        """Once per process: a keyword index out of step with the store is made again from it."""
        if self._checked:
            return
        self._checked = True
        if self.keywords.count() != self.count_chunks():
            from models import notice
            notice(f"the keyword index is out of step with the store: rebuilding it ({self.count_chunks()} chunks)")
            self.rebuild_keyword_index()

    def retriever(self, k: int, threshold: float):
        return retriever_class()(knowledge_base=self, k=k, threshold=threshold)


@contextmanager
def open_lock(directory: Path):
    """Two processes opening a new store at once would both create its tables: one waits for the other."""
    try:
        lock = open(directory / ".open.lock", "a")
    except OSError:  # a read-only store needs no creating; opening it tells what is wrong
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def server_client(url: str):
    from urllib.parse import urlsplit
    import chromadb
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise ApprentiError(f"bad Chroma server address '{url}': use http://host:port")
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=parts.port or (443 if parts.scheme == "https" else 8000),
                                     ssl=parts.scheme == "https")
        client.heartbeat()
    except Exception as error:
        raise ApprentiError(f"cannot reach the Chroma server at {url} ({type(error).__name__}): start it "
                            f"(chroma run --path DIR --port PORT) or unset APPRENTI_CHROMA_URL") from None
    return client


def server_slug(url: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in url.split("://")[-1]).strip("-")


def is_gone(source: str, roots: list[Path], read_sources: set[str]) -> bool:
    """A document's source lies under an ingested path and is gone: its file deleted, or (a JSONL line)
    no longer in a file that was read."""
    path = Path(source)
    if not any(path == Path(root).expanduser().resolve() or Path(root).expanduser().resolve() in path.parents
               for root in roots):
        return False
    return source in read_sources or not path.exists()


def batched(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@functools.cache
def retriever_class():
    """Built on first use: langchain_core is imported only when a question is asked."""
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class KnowledgeRetriever(BaseRetriever):
        """A LangChain retriever that keeps what the stock one drops: each chunk's id, source and fused score,
        and only the chunks at or above the relevance threshold."""
        knowledge_base: object
        k: int = 4
        threshold: float = 0.0

        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=hit.text, id=hit.id,
                             metadata={"doc_id": hit.doc_id, "score": hit.score, "source": hit.source})
                    for hit in self.knowledge_base.search(query, self.k) if hit.score >= self.threshold]

    return KnowledgeRetriever
