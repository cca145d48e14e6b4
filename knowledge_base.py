"""The knowledge base: a persistent Chroma collection of text chunks, reached through langchain_chroma.

A document added under id ID is split into chunks stored as `ID#0`, `ID#1`, ..., each with the document
id in its metadata, so that answers can name their real sources.
"""
from __future__ import annotations

import fcntl
import functools
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from config import ApprentiError, DuplicateIdError, Settings

COLLECTION = "apprenti_knowledge"
CHUNK_CHARACTERS = 800  # about 200 word pieces: all-MiniLM-L6-v2 reads at most 256
CHUNK_OVERLAP = 100
MAX_ID_LENGTH = 200
EMBEDDING_BATCH = 64


@dataclass
class Hit:
    id: str
    doc_id: str
    score: float  # cosine similarity of question and chunk, from -1 to 1
    text: str


def embeddings_for(settings: Settings):
    from langchain_huggingface import HuggingFaceEmbeddings
    from models import quiet_transformers, resolve_embedding_model
    source = resolve_embedding_model(settings)
    with quiet_transformers():
        return HuggingFaceEmbeddings(model_name=str(source.path), encode_kwargs={"normalize_embeddings": True})


def split_text(text: str) -> list[str]:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_CHARACTERS, chunk_overlap=CHUNK_OVERLAP)
    return splitter.split_text(text)


class KnowledgeBase:
    def __init__(self, directory: Path, embeddings):
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        from langchain_chroma import Chroma
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.store = Chroma(collection_name=COLLECTION, embedding_function=embeddings,
                                persist_directory=str(self.directory),
                                collection_metadata={"hnsw:space": "cosine"})
        except Exception as error:  # chromadb raises several types for an unusable folder
            raise ApprentiError(f"cannot open the knowledge base in {self.directory}: {error}") from None

    @classmethod
    def open(cls, settings: Settings) -> "KnowledgeBase":
        return cls(settings.chroma_dir, embeddings_for(settings))

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

    def _chunk_ids(self, doc_id: str) -> list[str]:
        return self.store.get(where={"doc_id": doc_id}, include=[])["ids"]

    def add(self, text: str, doc_id: str | None = None, replace: bool = False, progress=None) -> list[str]:
        """Store `text` under `doc_id` (generated when None); returns the chunk ids."""
        text = text.strip()
        if not text:
            raise ApprentiError("the text is empty: nothing was added")
        doc_id = (doc_id or "").strip() or uuid.uuid4().hex[:12]
        if len(doc_id) > MAX_ID_LENGTH or "#" in doc_id:
            raise ApprentiError(f"bad id '{doc_id[:40]}': use at most {MAX_ID_LENGTH} characters and no '#'")
        chunks = split_text(text)
        ids = [f"{doc_id}#{i}" for i in range(len(chunks))]
        metadatas = [{"doc_id": doc_id, "chunk": i} for i in range(len(chunks))]
        with self.writing():
            existing = self._chunk_ids(doc_id)
            if existing and not replace:
                raise DuplicateIdError(f"the knowledge base already has a document '{doc_id}': "
                                       "choose another id, or replace it (--replace)")
            # Embed everything before touching the store, so a failure or Ctrl-C while embedding
            # leaves the old document in place.
            vectors = []
            for start in range(0, len(chunks), EMBEDDING_BATCH):
                vectors += self.store.embeddings.embed_documents(chunks[start:start + EMBEDDING_BATCH])
                if progress:
                    progress(min(start + EMBEDDING_BATCH, len(chunks)), len(chunks))
            try:
                # langchain_chroma's add_texts would embed again; the collection takes our vectors.
                self.store._collection.upsert(ids=ids, embeddings=vectors, documents=chunks, metadatas=metadatas)
                stale = sorted(set(existing) - set(ids))  # a replaced document that had more chunks
                if stale:
                    self.store.delete(ids=stale)
            except Exception as error:
                raise ApprentiError(f"cannot write the knowledge base in {self.directory}: {error}") from None
        return ids

    def query(self, question: str, k: int = 4) -> list[Hit]:
        if self.count_chunks() == 0:
            return []
        # Chroma gives the cosine distance; its "relevance" form warns on the negative similarities that
        # unrelated texts have, so the similarity is computed here.
        results = self.store.similarity_search_with_score(question, k=k)
        return [Hit(document.id, document.metadata.get("doc_id", document.id), round(1 - distance, 4),
                    document.page_content) for document, distance in results]

    def retriever(self, k: int, threshold: float):
        return retriever_class()(knowledge_base=self, k=k, threshold=threshold)

    def documents(self) -> dict[str, int]:
        """Document id -> number of chunks."""
        counts: dict[str, int] = {}
        for metadata in self.store.get(include=["metadatas"])["metadatas"]:
            counts[metadata["doc_id"]] = counts.get(metadata["doc_id"], 0) + 1
        return dict(sorted(counts.items()))

    def count_chunks(self) -> int:
        return self.store._collection.count()

    def delete(self, doc_id: str) -> int:
        with self.writing():
            ids = self._chunk_ids(doc_id)
            if not ids:
                raise ApprentiError(f"the knowledge base has no document '{doc_id}'")
            self.store.delete(ids=ids)
        return len(ids)


@functools.cache
def retriever_class():
    """Built on first use: langchain_core is imported only when a question is asked."""
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.documents import Document

    class KnowledgeRetriever(BaseRetriever):
        """A LangChain retriever that keeps what the stock one drops: each chunk's id and score, and only
        the chunks at or above the relevance threshold."""
        knowledge_base: object
        k: int = 4
        threshold: float = 0.0

        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=hit.text, id=hit.id, metadata={"doc_id": hit.doc_id, "score": hit.score})
                    for hit in self.knowledge_base.query(query, self.k) if hit.score >= self.threshold]

    return KnowledgeRetriever
