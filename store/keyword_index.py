"""The keyword half of hybrid retrieval: BM25 over the chunks' stemmed words, in SQLite's FTS5.

It lives beside the vector store and is written in the same locked step; `documents()` lets the knowledge
base check that both hold the same version of every document, and rebuild it from the store if not.
"""
from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

from store.language import detect_language, keyword_terms

K1 = 1.2  # FTS5's bm25() constant: a term's weight saturates at idf * (K1 + 1)
SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks(rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, doc_id TEXT NOT NULL,
                                  doc_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS terms USING fts5(words);
CREATE VIRTUAL TABLE IF NOT EXISTS vocabulary USING fts5vocab(terms, 'row');
"""


class KeywordIndex:
    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self.connection.executescript(SCHEMA)

    @property
    def connection(self) -> sqlite3.Connection:
        """One connection per thread: SQLite refuses a connection made in another thread, and a page
        (Streamlit) runs each rerun on a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = sqlite3.connect(self.path, timeout=120)
        return connection

    def write(self, chunks, replaced_doc_ids=()) -> None:
        """Remove every chunk of `replaced_doc_ids`, add `chunks`: all of it, or nothing."""
        with self.connection:
            self._remove(replaced_doc_ids)
            for chunk in chunks:
                cursor = self.connection.execute("INSERT INTO chunks(id, doc_id, doc_hash) VALUES (?, ?, ?)",
                                                 (chunk.id, chunk.metadata["doc_id"], chunk.metadata["doc_hash"]))
                terms = keyword_terms(chunk.text, chunk.metadata.get("language"))
                self.connection.execute("INSERT INTO terms(rowid, words) VALUES (?, ?)",
                                        (cursor.lastrowid, " ".join(terms)))

    def remove(self, doc_ids) -> None:
        with self.connection:
            self._remove(doc_ids)

    def _remove(self, doc_ids) -> None:
        for doc_id in doc_ids:
            rows = self.connection.execute("SELECT rowid FROM chunks WHERE doc_id = ?", (doc_id,)).fetchall()
            self.connection.executemany("DELETE FROM terms WHERE rowid = ?", rows)
            self.connection.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))

    def clear(self) -> None:
        with self.connection:
            self.connection.execute("DELETE FROM terms")
            self.connection.execute("DELETE FROM chunks")

    def count(self) -> int:
        return self.connection.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def documents(self) -> dict[str, tuple[str, int]]:
        """doc_id -> (the document hash its chunks were made from, number of chunks)."""
        rows = self.connection.execute("SELECT doc_id, min(doc_hash), max(doc_hash), count(*) FROM chunks "
                                       "GROUP BY doc_id")
        return {doc_id: (low if low == high else "mixed", count) for doc_id, low, high, count in rows}

    def search(self, query: str, n: int, among_ids: list[str] | None = None) -> dict[str, float]:
        """Chunk id -> BM25 score scaled to [0, 1): the n best chunks, or the scores of `among_ids` (0 for
        those without a query word).

        Raw BM25 grows with the query's length and rarity of its words, so it cannot be compared with a
        threshold; divided by the most a chunk could score for this query (every word saturated), it says
        how much of the query a chunk covers, which can."""
        terms = sorted(set(keyword_terms(query, detect_language(query))))
        if not terms:
            return {}
        match = " OR ".join(f'"{term}"' for term in terms)
        if among_ids is None:
            rows = self.connection.execute(
                "SELECT chunks.id, best.score FROM (SELECT rowid, -rank AS score FROM terms WHERE terms MATCH ? "
                "ORDER BY rank LIMIT ?) AS best JOIN chunks ON chunks.rowid = best.rowid", (match, n)).fetchall()
        else:
            marks = ",".join("?" * len(among_ids))
            rows = self.connection.execute(
                f"SELECT chunks.id, -terms.rank FROM terms JOIN chunks ON chunks.rowid = terms.rowid "
                f"WHERE terms MATCH ? AND chunks.id IN ({marks})", (match, *among_ids)).fetchall()
        best_possible = self._best_possible_score(terms)
        return {chunk_id: score / best_possible for chunk_id, score in rows}

    def _best_possible_score(self, terms: list[str]) -> float:
        total = self.count()
        marks = ",".join("?" * len(terms))
        frequency = dict(self.connection.execute(f"SELECT term, doc FROM vocabulary WHERE term IN ({marks})",
                                                 terms).fetchall())
        # FTS5's own idf, floored the same way, so that the ratio stays below 1.
        idf = [max(math.log((total - frequency.get(term, 0) + 0.5) / (frequency.get(term, 0) + 0.5)), 1e-6)
               for term in terms]
        return sum(idf) * (K1 + 1)
