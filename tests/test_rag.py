import pytest

from common.config import Settings
from rag_module import REFUSALS, Assistant
from store.hybrid_search import Passage
from store.language import detect_language


@pytest.mark.parametrize("question, language", [
    ("What is the capital of France?", "en"),
    ("Quelle est la capitale de la France ?", "fr"),
    ("Où est né Victor Hugo ?", "fr"),
    ("How do I brew tea?", "en"),
    ("Qui a écrit Les Misérables ?", "fr"),
])
def test_question_language(question, language):
    assert detect_language(question) == language


def test_nothing_relevant_means_i_dont_know_without_calling_the_model(tiny_model):
    assistant = Assistant(Settings.load())
    assistant.knowledge_base.add("Green tea is brewed at 80 degrees Celsius.", "tea")
    streamed = []
    answer = assistant.ask("Who won the football World Cup in 1998?", on_text=streamed.append)
    assert answer.refused and answer.answer == REFUSALS["en"] and answer.sources == []
    assert answer.model is None and not assistant.model_loaded
    assert "".join(streamed) == answer.answer
    assert assistant.ask("Qui a gagné la Coupe du monde de football en 1998 ?").answer == REFUSALS["fr"]


def test_an_answer_is_streamed_and_names_its_real_sources(tiny_model):
    assistant = Assistant(Settings.load())
    assistant.knowledge_base.add("Paris is the capital of France.", "paris")
    streamed = []
    answer = assistant.ask("What is the capital of France?", on_text=streamed.append)
    assert not answer.refused and answer.model == str(tiny_model)
    assert [source.id for source in answer.sources] == ["paris#0"]
    assert answer.sources[0].score >= assistant.settings.relevance_threshold
    assert "".join(streamed).strip() == answer.answer
    as_json = answer.to_json()
    assert set(as_json) == {"answer", "refused", "model", "sources"}
    assert as_json["sources"][0] == {"id": "paris#0", "doc_id": "paris", "score": answer.sources[0].score,
                                     "text": "Paris is the capital of France.", "source": "typed"}


def test_the_prompt_always_fits_the_context_window(tiny_model):
    """The tiny model's window is 128 tokens: long passages are dropped, an overlong question is cut."""
    assistant = Assistant(Settings.load(max_new_tokens=40))
    budget = assistant.model.context_window - assistant.answer_tokens
    sources = [Passage(f"doc{i}#0", f"doc{i}", 0.9 - i / 10, "A fairly long passage about Paris and France. " * 8,
                      "typed")
               for i in range(3)]
    input_ids, kept = assistant.fit_prompt("What is the capital of France?", sources, use_rag=True)
    assert len(input_ids) <= budget and len(kept) < len(sources)
    input_ids, kept = assistant.fit_prompt("why " * 500, [], use_rag=True)
    assert len(input_ids) <= budget
    assistant.knowledge_base.add("Paris is the capital of France. " * 200, "long")
    assert not assistant.ask("Paris capital of France " * 50, k=4).refused


def test_without_rag_the_model_answers_alone(tiny_model):
    """No retrieval and no passage in the prompt, even with a knowledge base that would answer."""
    assistant = Assistant(Settings.load())
    assistant.knowledge_base.add("Paris is the capital of France.", "paris")
    assert assistant.ask("What is the capital of France?").sources  # with RAG it is found

    def no_retrieval(*arguments, **options):
        raise AssertionError("the knowledge base was searched")

    prompts, chat_ids = [], assistant.model.chat_ids
    assistant.retrieve = no_retrieval
    assistant.model.chat_ids = lambda messages: prompts.append(messages) or chat_ids(messages)
    answer = assistant.ask("What is the capital of France?", use_rag=False)
    assert not answer.refused and answer.sources == [] and answer.model == str(tiny_model)
    assert prompts == [[{"role": "user", "content": "What is the capital of France?"}]]
