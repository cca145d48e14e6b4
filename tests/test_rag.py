import json

import pytest

from common.config import Settings
from common.errors import ApprentiError
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
    assert set(as_json) == {"answer", "refused", "model", "sources", "prompt_tokens", "completion_tokens"}
    assert as_json["sources"][0] == {"id": "paris#0", "doc_id": "paris", "score": answer.sources[0].score,
                                     "text": "Paris is the capital of France.", "source": "typed"}


@pytest.fixture
def wide_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    """The tiny model with a 2,048-token window, TinyLlama's."""
    import shutil
    folder = tmp_path / "wide-tiny"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    monkeypatch.setenv("APPRENTI_BASE_MODEL", str(folder))
    return folder


def passages(count: int, words: int) -> list[Passage]:
    return [Passage(f"doc{i}#0", f"doc{i}", 0.9 - i / 10, f"Passage {i} tells about Paris. " + "France " * words,
                    "typed") for i in range(count)]


def test_a_long_question_is_shortened_first_and_the_best_passage_stays(wide_tiny_model, capsys):
    assistant = Assistant(Settings.load())
    assert assistant.model.context_window == 2048
    budget = assistant.model.context_window - assistant.answer_tokens
    question = "Where is the tower? " + "and also tell me more " * 4000 + "What is the capital of France?"
    assert len(question) > 20_000
    input_ids, kept = assistant.fit_prompt(question, passages(4, 400), use_rag=True)
    assert len(input_ids) <= budget and [source.id for source in kept] == ["doc0#0", "doc1#0", "doc2#0"]
    prompt = assistant.model.tokenizer.decode(input_ids)
    assert "Where is the tower?" in prompt and "capital of France?" in prompt and " [...] " in prompt
    assert "Passage 0 tells about Paris." in prompt
    assert "its middle was left out" in capsys.readouterr().err

    # Where a passage and the question's ends cannot both fit, the question gives way further.
    input_ids, kept = assistant.fit_prompt(question, passages(2, 1600), use_rag=True)
    assert len(input_ids) <= budget and [source.id for source in kept] == ["doc0#0"]
    capsys.readouterr()
    # A short question keeps every word, and says nothing.
    input_ids, kept = assistant.fit_prompt("What is the capital of France?", passages(4, 300), use_rag=True)
    assert "What is the capital of France?" in assistant.model.tokenizer.decode(input_ids)
    assert capsys.readouterr().err == ""


def test_a_passage_that_leaves_no_room_for_the_question_is_one_clear_message(wide_tiny_model):
    assistant = Assistant(Settings.load())
    with pytest.raises(ApprentiError, match="do not fit in the model's 2048-token window: ask a shorter question"):
        assistant.fit_prompt("What is the capital of France?", passages(1, 2100), use_rag=True)


def test_a_long_question_over_the_knowledge_base_is_answered_with_its_sources(tiny_model):
    assistant = Assistant(Settings.load(max_new_tokens=16))
    assistant.knowledge_base.add("Paris is the capital of France.", "paris")
    answer = assistant.ask("What is the capital of France? " + "Please answer. " * 1500)
    assert not answer.refused and [source.doc_id for source in answer.sources] == ["paris"]


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


ELECTION = "In the spring election the town of Wexmoor chose Dariela Montfort as its mayor. She replaced Mayor Hale."


@pytest.mark.parametrize("answer, note", [
    ("The mayor of Wexmoor is Dariela Montfort.", ""),
    ("Dariela Montfort replaced Mayor Hale in the spring.", ""),
    ("The mayor of Wexmoor is the town of Wexwater's Mayor.",
     '(Not in the passages: Wexwater. They say: "In the spring election the town of Wexmoor chose Dariela '
     'Montfort as its mayor.")'),
    ("She was elected in 1962.", "(Not in the passages: 1962. They say: \"In the spring election the town of "
                                 "Wexmoor chose Dariela Montfort as its mayor.\")"),
])
def test_names_and_numbers_the_passages_do_not_hold_are_followed_by_their_words(answer, note):
    from rag_module import grounding_note
    assert grounding_note("Who is the mayor of Wexmoor?", answer, [Passage("e#0", "e", 0.9, ELECTION, "typed")]) == note


def test_numbers_are_compared_whatever_their_separators_and_french_gets_a_french_note():
    from rag_module import grounding_note
    lake = [Passage("l#0", "l", 0.9, "Le lac de Sarvène se trouve à 1 450 mètres. Son gardien s'appelle Yvon.", "typed")]
    assert grounding_note("À quelle altitude est le lac de Sarvène ?", "Il est à 1450 mètres.", lake) == ""
    assert grounding_note("Comment s'appelle le gardien du lac ?", "Le gardien s'appelle Yves.", lake) == (
        "(Absent des passages : Yves. Ils disent : « Son gardien s'appelle Yvon. »)")


def test_the_note_is_streamed_after_the_answer_and_kept_in_it(tiny_model):
    assistant = Assistant(Settings.load(max_new_tokens=16), log_answers=False)
    assistant.model.stream = lambda *arguments: iter(["The mayor is ", "Wexwater."])
    pieces = []
    sources = [Passage("e#0", "e", 0.9, ELECTION, "typed")]
    answer = assistant.ask("Who is the mayor of Wexmoor?", sources=sources, on_text=pieces.append)
    assert answer.answer == "".join(pieces).strip() and answer.answer.startswith("The mayor is Wexwater.\n\n(Not in")
    assert "Wexmoor chose Dariela Montfort" in answer.answer
    # A client's own bounds (the API's max_tokens, stop) keep the text as the model made it.
    assert assistant.ask("Who is the mayor of Wexmoor?", sources=sources, max_new_tokens=8).answer == (
        "The mayor is Wexwater.")
