import pytest

from common.errors import ApprentiError, DuplicateIdError
from knowledge_base import KnowledgeBase


def chunk_counts(kb) -> dict:
    return {doc_id: record.chunks for doc_id, record in kb.documents().items()}


def test_added_text_is_found_with_its_real_id_and_a_score(kb):
    kb.add("Paris is the capital of France.", "paris")
    kb.add("Green tea is brewed at 80 degrees.", "tea")
    hits = kb.search("What is the capital of France?", k=2)
    assert [hit.id for hit in hits] == ["paris#0", "tea#0"]
    assert hits[0].doc_id == "paris" and hits[0].text == "Paris is the capital of France."
    assert hits[0].source == "typed"
    assert 0.5 < hits[0].score <= 1 and hits[1].score < hits[0].score


def test_a_duplicate_id_is_an_error_unless_replaced(kb):
    kb.add("first version", "note")
    with pytest.raises(DuplicateIdError, match="already has a document 'note'"):
        kb.add("second version", "note")
    assert kb.search("version", 1)[0].text == "first version"
    kb.add("second version", "note", replace=True)
    assert chunk_counts(kb) == {"note": 1}
    assert kb.search("version", 1)[0].text == "second version"


def test_long_texts_are_split_and_a_shorter_replacement_leaves_no_stale_chunk(kb):
    long_text = "\n\n".join(f"Paragraph {i} talks about topic number {i} at some length. " * 6 for i in range(10))
    ids = kb.add(long_text, "long")
    assert len(ids) > 3 and ids == [f"long#{i}" for i in range(len(ids))]
    assert chunk_counts(kb) == {"long": len(ids)}
    kb.add("now short", "long", replace=True)
    assert chunk_counts(kb) == {"long": 1} and kb.count_chunks() == 1


def test_generated_ids_list_count_and_delete(kb):
    ids = kb.add("Some text without an id.")
    doc_id = ids[0].split("#")[0]
    assert len(doc_id) == 12
    kb.add("Another text.", "other")
    assert chunk_counts(kb) == {doc_id: 1, "other": 1}
    assert kb.delete("other") == 1
    assert list(kb.documents()) == [doc_id]
    with pytest.raises(ApprentiError, match="no document 'other'"):
        kb.delete("other")


def test_bad_input_is_refused_and_the_store_is_unchanged(kb):
    kb.add("kept", "kept")
    for text, doc_id, message in [("", "x", "empty"), ("   \n", "x", "empty"), ("text", "x" * 600, "bad id")]:
        with pytest.raises(ApprentiError, match=message):
            kb.add(text, doc_id)
    assert chunk_counts(kb) == {"kept": 1}


def test_the_store_persists_across_processes(home, embeddings):
    KnowledgeBase(home / "chroma_db_store", embeddings).add("The heron is called Pim.", "heron")
    reopened = KnowledgeBase(home / "chroma_db_store", None)  # no embeddings needed to list
    assert chunk_counts(reopened) == {"heron": 1}


def test_the_retriever_keeps_ids_and_scores_and_applies_the_threshold(kb):
    kb.add("Paris is the capital of France.", "paris")
    kb.add("The Moon orbits the Earth in 27 days.", "moon")
    documents = kb.retriever(k=2, threshold=0.5).invoke("What is the capital of France?")
    assert [(d.id, d.metadata["doc_id"]) for d in documents] == [("paris#0", "paris")]
    assert documents[0].metadata["score"] >= 0.5
    assert len(kb.retriever(k=2, threshold=-1).invoke("What is the capital of France?")) == 2


def test_an_empty_store_answers_with_no_hits(kb):
    assert kb.search("anything") == []


def test_a_failed_write_gives_a_clear_message_and_keeps_the_old_document(kb, monkeypatch):
    import errno
    kb.add("old version", "note")

    def disk_full(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kb.collection, "upsert", disk_full)
    with pytest.raises(ApprentiError, match="cannot write the knowledge base.*No space left"):
        kb.add("new version", "note", replace=True)
    monkeypatch.undo()
    assert kb.search("version", 1)[0].text == "old version"
    assert kb.keywords.documents() == {"note": (kb.documents()["note"].hash, 1)}  # the index did not move either


def test_the_same_knowledge_base_answers_from_several_threads(kb):
    """A page serves each rerun on a new thread, with the knowledge base it opened on the first."""
    import threading
    kb.add("Paris is the capital of France.", "paris")
    results = []
    worker = threading.Thread(target=lambda: results.append(kb.search("capital of France", 1, mode="keyword")))
    worker.start()
    worker.join()
    assert [passage.id for passage in results[0]] == ["paris#0"]
