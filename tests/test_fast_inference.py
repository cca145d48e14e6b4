"""Fast answers: each model converted once for ONNX Runtime GenAI, transformers as the fallback."""
import pytest

from common.config import DEFAULT_BACKEND, Settings
from common.errors import ApprentiError
from inference import chat_model, onnx_model
from inference.chat_model import ChatModel, load_chat_model
from inference.locate import resolve_base_model
from inference.onnx_model import OnnxChatModel, converted_folder
from rag_module import Assistant


def test_the_bundled_model_answers_through_its_converted_form(real_model):
    settings = Settings.load()
    model = load_chat_model(settings, resolve_base_model(settings))
    assert isinstance(model, OnnxChatModel) and model.context_window == 8192
    ids = model.chat_ids([{"role": "user", "content": "Who wrote Romeo and Juliet?"}])
    assert ids == ChatModel(resolve_base_model(settings)).chat_ids(
        [{"role": "user", "content": "Who wrote Romeo and Juliet?"}])  # the same prompt on both paths
    pieces = list(model.stream(ids, 32))
    assert len(pieces) > 3 and "Shakespeare" in "".join(pieces)
    sampled = {"".join(model.stream(ids, 12, temperature=1.5)) for _ in range(3)}
    assert len(sampled) > 1  # a temperature samples


def test_closing_the_stream_stops_the_generation(real_model):
    settings = Settings.load()
    model = load_chat_model(settings, resolve_base_model(settings))
    stream = model.stream(model.chat_ids([{"role": "user", "content": "Tell me a long story."}]), 200)
    next(stream)
    stream.close()  # what Ctrl-C in the middle of an answer does: no token is made after it
    with pytest.raises(StopIteration):
        next(stream)


def test_stop_texts_and_a_token_budget_end_the_answer(real_model):
    assistant = Assistant(Settings.load(), log_answers=False)
    whole = assistant.ask("What is the capital of France?", use_rag=False).answer
    word = whole.split()[3]
    cut = assistant.ask("What is the capital of France?", use_rag=False, stop=[word]).answer
    assert word not in cut and whole.startswith(cut)
    short = assistant.ask("What is the capital of France?", use_rag=False, max_new_tokens=2).answer
    assert len(assistant.model.text_ids(short)) <= 2


def test_without_the_runtime_answers_come_from_transformers_with_one_notice(tiny_model, monkeypatch, capsys):
    settings = Settings.load(backend=DEFAULT_BACKEND)
    real_find_spec = chat_model.importlib.util.find_spec
    monkeypatch.setattr(chat_model.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime_genai" else real_find_spec(name))
    assert isinstance(load_chat_model(settings, resolve_base_model(settings)), ChatModel)
    assert capsys.readouterr().err.count("onnxruntime-genai is not installed") == 1
    assert not converted_folder(settings, resolve_base_model(settings)).exists()


def test_a_model_that_cannot_be_converted_falls_back_with_one_notice(tiny_model, monkeypatch, capsys):
    settings = Settings.load(backend=DEFAULT_BACKEND)

    def refuse(source, target, precision):
        raise ApprentiError(f"cannot convert {source.name} for fast answers: unsupported")
    monkeypatch.setattr(onnx_model, "convert", refuse)
    assistant = Assistant(settings, log_answers=False)
    first, second = assistant.complete("Hello"), assistant.complete("Hello")
    assert first == second and first.answer.strip()  # the tiny model answers, greedily, through transformers
    assert isinstance(assistant.model, ChatModel) and assistant.model.backend == "transformers"
    assert capsys.readouterr().err.count("unsupported: answering with transformers") == 1


def test_the_backend_setting_is_checked(monkeypatch):
    monkeypatch.setenv("APPRENTI_BACKEND", "llamas")
    with pytest.raises(ApprentiError, match="backend=llamas: use one of onnx-int8, onnx-int4, transformers"):
        Settings.load()


def test_both_backends_decode_alike(real_model, tmp_path):
    """Greedy answers to the shipped set's questions with their passages: the same text from transformers and
    from ONNX Runtime GenAI, both in fp32 (int8 weights would change the model, not the decoding)."""
    from evaluation.qa_set import SHIPPED_QA, read_qa_set
    from inference.prompts import answer_messages
    source = resolve_base_model(Settings.load())
    onnx_model.convert(source, tmp_path / "fp32", precision="fp32")
    fast, reference = OnnxChatModel(source, tmp_path / "fp32"), ChatModel(source)
    reference.model.float()
    questions = [question for question in read_qa_set(SHIPPED_QA)[0] if question.context][:8]
    for question in questions:
        ids = fast.chat_ids(answer_messages(question.question, [question.context]))
        assert "".join(fast.stream(ids, 48)) == "".join(reference.stream(ids, 48)), question.question
