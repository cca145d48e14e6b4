"""Hybrid retrieval: dense candidates from the vector store and keyword candidates from the BM25 index,
each scored by both, the two scores added with weights.

Fusion adds the two scores, weighed, for every chunk either retriever proposes, rather than fusing ranks
(RRF): ranks would let a weak keyword list push good dense results down, and a fused score that keeps the
scale of the scores can still be held against the relevance threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

from store.documents import doc_id_of
from store.language import detect_language

CANDIDATES = 30  # chunks each retriever proposes before fusion
# Weight of the keyword score in the fused score (the rest is the dense cosine similarity), by the question's
# language: the embedding model is English-centred, so French leans more on words. Chosen by
# `python bench/retrieval.py` on three FAQ sets (English, French); figures in the README.
KEYWORD_WEIGHTS = {"en": 0.25, "fr": 0.5}
MODES = ("hybrid", "dense", "keyword")


@dataclass
class Passage:
    """A retrieved chunk, as search returns it and as an answer cites it."""
    id: str  # the chunk id, ID#n
    doc_id: str
    score: float  # dense, keyword or fused: higher is more relevant; the fused score lies in [-1, 1]
    text: str
    source: str  # the file it comes from, or "typed"


def hybrid_search(collection, keywords, embeddings, query: str, k: int, mode: str = "hybrid",
                  keyword_weight: float | None = None) -> list[Passage]:
    """The k best chunks for `query`: by meaning ("dense"), by words ("keyword"), or both fused ("hybrid").
    `embeddings` is called only when the dense half is needed."""
    if mode not in MODES:
        raise ValueError(f"mode={mode}: use hybrid, dense or keyword")
    total = collection.count()
    if total == 0:
        return []
    if keyword_weight is None:
        keyword_weight = KEYWORD_WEIGHTS[detect_language(query)]
    dense_weight = {"hybrid": 1 - keyword_weight, "dense": 1.0, "keyword": 0.0}[mode]
    keyword_weight = 1 - dense_weight
    query_vector = embeddings().embed_query(query) if dense_weight else None
    candidates: dict[str, dict] = {}  # id -> text, metadata, dense, keyword
    if dense_weight:
        found = collection.query(query_embeddings=[query_vector], n_results=min(CANDIDATES, total),
                                 include=["documents", "metadatas", "distances"])
        for chunk_id, text, metadata, distance in zip(found["ids"][0], found["documents"][0], found["metadatas"][0],
                                                      found["distances"][0]):
            candidates[chunk_id] = {"text": text, "metadata": metadata, "dense": 1 - distance}
    if keyword_weight:
        keyword = keywords.search(query, CANDIDATES)
        if dense_weight:  # the dense candidates' keyword scores, and the keyword candidates' similarities
            keyword |= keywords.search(query, CANDIDATES, among_ids=[i for i in candidates if i not in keyword])
        missing = [chunk_id for chunk_id in keyword if chunk_id not in candidates]
        if missing:
            found = collection.get(ids=missing, include=["documents", "metadatas", "embeddings"])
            for chunk_id, text, metadata, vector in zip(found["ids"], found["documents"], found["metadatas"],
                                                        found["embeddings"]):
                similarity = float(sum(a * b for a, b in zip(query_vector, vector))) if dense_weight else 0.0
                candidates[chunk_id] = {"text": text, "metadata": metadata, "dense": similarity}
        for chunk_id, candidate in candidates.items():
            candidate["keyword"] = keyword.get(chunk_id, 0.0)
    passages = [Passage(chunk_id, c["metadata"].get("doc_id", doc_id_of(chunk_id)),
                        round(dense_weight * c.get("dense", 0.0) + keyword_weight * c.get("keyword", 0.0), 4),
                        c["text"], c["metadata"].get("source", ""))
                for chunk_id, c in candidates.items()]
    return sorted(passages, key=lambda passage: -passage.score)[:k]
