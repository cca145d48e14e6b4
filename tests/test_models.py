import os
import time

import pytest
import torch

from common.config import Settings
from common.errors import ApprentiError
from inference import loading
from inference.transformers_model import ChatModel
from inference.versions import Versions, choose_chat_model
from inference.loading import device_and_dtype
from inference.locate import BUNDLED_CHAT_MODEL, from_cache_or_hub, hub_reachable, resolve_base_model


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


def test_a_cached_model_is_found_without_probing_the_hub(home, monkeypatch, tiny_model_dir):
    """A connection attempt takes up to 3 s: only a model that is not cached is worth one."""
    import shutil
    import huggingface_hub.constants
    from inference import locate
    probes = []
    monkeypatch.setattr(locate, "hub_reachable", lambda: probes.append(1) or False)
    cache = home / "hub-cache"
    snapshot = cache / "models--someone--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (cache / "models--someone--tiny" / "refs").mkdir()
    (cache / "models--someone--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert from_cache_or_hub("someone/tiny") == snapshot and probes == []
    assert from_cache_or_hub("someone/not-cached") is None and probes == [1]


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
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert device_and_dtype() == ("cpu", torch.bfloat16)
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert device_and_dtype() == ("cpu", torch.float32)


def _make_version(settings, base_model, weights="lora"):
    """A version folder as a training run leaves it, made the champion."""
    versions = Versions(settings)
    version_id, partial = versions.staging()
    versions.publish(version_id, partial, {"base_model": base_model, "method": "pretraining", "weights": weights,
                                           "verdict": "promoted", "created": "2026-11-22T10:00:00"})
    versions.set_champion(version_id, "promoted")
    return version_id


def test_the_champion_is_used_only_when_trained_from_the_base_in_use(tiny_model, capsys):
    settings = Settings.load()
    version_id = _make_version(settings, str(tiny_model))
    chosen = choose_chat_model(settings)
    assert chosen.adapters == (Versions(settings).root / version_id,) and chosen.path == tiny_model
    assert chosen.version == version_id and f"version {version_id}" in chosen.name
    assert choose_chat_model(Settings.load(use_finetuned=False)).adapters == ()


def test_a_champion_of_another_base_is_ignored_with_a_notice(tiny_model, capsys):
    settings = Settings.load()
    _make_version(settings, "some/other-model")
    assert choose_chat_model(settings).adapters == ()
    assert "trained from some/other-model" in capsys.readouterr().err


def test_streaming_yields_pieces_and_closing_the_stream_stops_the_generation(tiny_model):
    model = ChatModel(resolve_base_model(Settings.load()))
    assert model.context_window == 128 and model.device == "cpu"
    model.model.generation_config.eos_token_id = None  # every run goes to max_new_tokens unless cancelled
    forwards = []

    def slow_forward(module, inputs, output):  # 20 ms a token: a cancelled run cannot finish unseen
        forwards.append(time.perf_counter())
        time.sleep(0.02)

    model.model.register_forward_hook(slow_forward)
    pieces = list(model.stream(model.text_ids("Hello"), 40))
    assert len(pieces) >= 1 and all(isinstance(piece, str) for piece in pieces) and len(forwards) == 40
    forwards.clear()
    stream = model.stream(model.text_ids("Hello"), 40)
    next(stream)
    stream.close()  # what Ctrl-C in the middle of an answer does
    stopped_at = len(forwards)
    time.sleep(0.3)
    assert stopped_at < 20 and len(forwards) == stopped_at  # the generation ended, and stays ended


def test_settings_reach_a_child_process_through_the_environment(monkeypatch):
    settings = Settings.load(relevance_threshold=0.8, use_finetuned=False, top_k=2)
    monkeypatch.setattr(os, "environ", settings.environment())
    assert Settings.load() == settings
    monkeypatch.setattr(os, "environ", {"APPRENTI_USE_FINETUNED": "perhaps"})
    with pytest.raises(ApprentiError, match="APPRENTI_USE_FINETUNED='perhaps' is not a bool"):
        Settings.load()


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ApprentiError, match="cannot load the model"):
        loading.load_causal_lm(tmp_path)
