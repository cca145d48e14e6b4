import json

import pytest
import torch

import models
from config import ApprentiError, Settings
from models import (BUNDLED_CHAT_MODEL, ChatModel, choose_chat_model, device_and_dtype, from_cache_or_hub,
                    hub_reachable, install_model, recover_model, resolve_base_model)


def test_settings_take_defaults_then_environment_then_flags(monkeypatch, home):
    assert Settings.load().base_model == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert Settings.load().home == home
    monkeypatch.setenv("APPRENTI_RELEVANCE_THRESHOLD", "0.2")
    assert Settings.load().relevance_threshold == 0.2
    assert Settings.load(relevance_threshold=0.7).relevance_threshold == 0.7
    with pytest.raises(ApprentiError, match="relevance_threshold=3.0"):
        Settings.load(relevance_threshold=3)
    with pytest.raises(ValueError, match="unknown settings: colour"):
        Settings.load(colour="blue")


def test_offline_means_no_hub_and_an_unknown_model_is_not_found(monkeypatch):
    assert not hub_reachable()
    assert from_cache_or_hub("nobody/no-such-model") is None
    with pytest.raises(ApprentiError, match="does not exist"):
        from_cache_or_hub("./no/such/folder")


def test_an_uncached_base_model_falls_back_to_the_bundled_one_with_one_notice(real_model, capsys):
    source = resolve_base_model(Settings.load())
    assert source.name == BUNDLED_CHAT_MODEL
    assert (source.path / "model.safetensors").is_file()
    notices = capsys.readouterr().err.strip().splitlines()
    assert notices == [f"note: TinyLlama/TinyLlama-1.1B-Chat-v1.0 is neither cached nor reachable; "
                       f"using {BUNDLED_CHAT_MODEL}"]


def test_a_local_model_folder_is_used_as_it_is(tiny_model):
    source = resolve_base_model(Settings.load())
    assert source.path == tiny_model and source.name == str(tiny_model)


def test_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert device_and_dtype() == ("cpu", torch.bfloat16)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert device_and_dtype() == ("cpu", torch.float32)


def test_installing_a_model_replaces_the_old_one_and_a_crash_midway_is_recovered(tmp_path):
    target = tmp_path / "tinyllama_finetuned"
    target.mkdir()
    (target / "weights").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "weights").write_text("new")
    install_model(new, target)
    assert (target / "weights").read_text() == "new" and not new.exists()
    # A crash after the old model was moved aside, before the new one arrived:
    target.rename(tmp_path / "tinyllama_finetuned.previous")
    recover_model(target)
    assert (target / "weights").read_text() == "new"


def _write_record(settings, **fields):
    settings.finetuned_dir.mkdir(parents=True)
    record = {"base_model": "x", "method": "lora", "finished_at": "2026-11-22T10:00:00", **fields}
    (settings.finetuned_dir / models.TRAINING_RECORD).write_text(json.dumps(record))


def test_the_fine_tuned_model_is_used_only_when_trained_from_the_base_in_use(tiny_model, capsys):
    settings = Settings.load()
    _write_record(settings, base_model=str(tiny_model))
    chosen = choose_chat_model(settings)
    assert chosen.adapter == settings.finetuned_dir and chosen.path == tiny_model
    assert "fine-tuned 2026-11-22 10:00" in chosen.name
    assert choose_chat_model(Settings.load(use_finetuned=False)).adapter is None


def test_a_fine_tuned_model_of_another_base_is_ignored_with_a_notice(tiny_model, capsys):
    settings = Settings.load()
    _write_record(settings, base_model="some/other-model")
    assert choose_chat_model(settings).adapter is None
    assert "trained from some/other-model" in capsys.readouterr().err


def test_streaming_yields_pieces_and_stops_when_closed(tiny_model):
    model = ChatModel(resolve_base_model(Settings.load()))
    assert model.context_window == 128 and model.device == "cpu"
    pieces = list(model.stream(model.text_ids("Hello"), 8))
    assert len(pieces) >= 1 and all(isinstance(piece, str) for piece in pieces)
    stream = model.stream(model.text_ids("Hello"), 100)
    next(stream)
    stream.close()  # what Ctrl-C in the middle of an answer does: the generation thread ends


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ApprentiError, match="cannot load the model"):
        models.load_causal_lm(tmp_path)
