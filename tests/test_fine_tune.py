import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from common.config import Settings
from common.errors import ApprentiError, BusyError
from fine_tune_model import FineTuneConfig, run_fine_tuning, train
from inference.versions import Versions
from training.core import training_lock
from training.learning_data import append_entry, read_entries

FAST = dict(epochs=1, min_steps=6, max_steps=6, batch_size=2, learning_rate=1e-2)


def file_hashes(folder) -> dict[str, str]:
    """Every file under `folder`, by its path there, with the hash of its bytes: what changed, and what appeared."""
    import hashlib
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def teach(settings, *entries):
    for entry in entries:
        append_entry(settings.learning_data, entry)


def test_config_validation_names_every_bad_field():
    with pytest.raises(ValueError) as error:
        FineTuneConfig(method="qlora", epochs=0, block_size=4)
    assert all(name in str(error.value) for name in ("method='qlora'", "epochs=0", "block_size=4"))
    assert FineTuneConfig().learning_rate == 1e-3 and FineTuneConfig(method="full").learning_rate == 5e-5
    assert FineTuneConfig(epochs=2, batch_size=4, min_steps=0).steps_for(10) == 3  # epochs: in the samples
    assert FineTuneConfig(min_steps=40).steps_for(1) == 40
    assert FineTuneConfig(min_steps=40, max_steps=5).steps_for(1) == 5


def test_lora_trains_adapters_only_on_questions_about_the_entries_and_records_its_run(tiny_model):
    from training.learning_data import entry_id
    settings = Settings.load()
    (settings.models_dir / "replay").unlink()  # the general answers are made here, not shared
    teach(settings, "The Zorblax guild password is tangerine-47.", "Pim the heron is blue.\nIt lives by a lake.")
    base_files = file_hashes(tiny_model)
    events = []
    manifest = train(settings, FineTuneConfig(**FAST), events.append)
    assert [e["event"] for e in events] == ["stage", "start"] + ["step"] * 6  # the general answers, then training
    assert events[-1]["step"] == 6 and events[-1]["eta"] == 0
    record, data = manifest["training"], manifest["data"]["learning_data"]
    assert manifest["base_model"] == str(tiny_model) and manifest["method"] == "facts" and record["steps"] == 6
    # Both entries asked about in many ways, with the model's own answers to general requests beside them
    assert data["entries"] == 2 and data["new_entry_ids"] == [entry_id("The Zorblax guild password is tangerine-47."),
                                                              entry_id("Pim the heron is blue.\nIt lives by a lake.")]
    assert data["questions"] > 20 and 0 < data["replayed_general"] <= data["questions"]
    assert data["replayed_taught"] == 0  # nothing was taught before
    assert record["perplexity_general_before"] > 1 and record["perplexity_general_after"] > 1
    assert [entry["step"] for entry in record["loss_history"]] == [1, 2, 3, 4, 5, 6]
    assert record["trainer"] == "training.AnchoredTrainer"
    assert manifest["config"] == FineTuneConfig(**FAST).training_settings() and manifest["seed"] == 0
    assert manifest["data"]["learning_data"]["sha256"] == manifest["data_sha256"]
    # The run is a version, the champion (the gate is off here), and tinyllama_finetuned/ is it.
    versions = Versions(settings)
    assert versions.champion() == manifest["id"] and manifest["verdict"] == "promoted"
    assert versions.get(manifest["id"]).manifest == json.loads(json.dumps(manifest))
    assert settings.finetuned_dir.resolve() == versions.root / manifest["id"]
    adapters = load_file(settings.finetuned_dir / "adapter_model.safetensors")
    assert adapters and all("lora_" in name for name in adapters)
    assert any(tensor.abs().sum() > 0 for name, tensor in adapters.items() if "lora_B" in name)
    # The base weights stay as they were: only the adapters are saved, and the base folder is untouched.
    assert not list(settings.finetuned_dir.glob("model*.safetensors"))
    assert file_hashes(tiny_model) == base_files and "model.safetensors" in base_files
    # The general answers were made once, and are reused by the next run
    assert len(list((settings.models_dir / "replay").glob("*.json"))) == 1


def test_a_second_round_teaches_its_new_entries_and_replays_a_share_of_the_first(tiny_model):
    from training.learning_data import entry_id
    settings = Settings.load()
    teach(settings, "The Zorblax guild password is tangerine-47.")
    first = train(settings, FineTuneConfig(**FAST), lambda event: None)["data"]["learning_data"]
    teach(settings, "Pim the heron is blue.")
    second = train(settings, FineTuneConfig(**FAST), lambda event: None)["data"]["learning_data"]
    assert second["new_entry_ids"] == [entry_id("Pim the heron is blue.")]
    assert second["replayed_taught"] == min(first["questions"], round(0.5 * second["questions"]))
    # With nothing new (taught again with --force), every entry is taught again
    again = train(settings, FineTuneConfig(**FAST, force=True), lambda event: None)["data"]["learning_data"]
    assert len(again["new_entry_ids"]) == 2


def test_entries_that_state_no_fact_are_left_out_with_a_notice_and_alone_are_an_error(tiny_model):
    settings = Settings.load()
    teach(settings, "Hello")
    with pytest.raises(ApprentiError, match="no entry states a fact to teach"):
        train(settings, FineTuneConfig(**FAST), lambda event: None)
    teach(settings, "The ferry to Ambry is painted green.")
    events = []
    assert train(settings, FineTuneConfig(**FAST), events.append)["data"]["learning_data"]["entries"] == 2
    assert events[0] == {"event": "notice", "message": "entries 1 state no fact to teach (fewer than 3 words): "
                                                       "left out of the fine-tuning"}


def test_full_fine_tuning_changes_every_weight_and_saves_a_whole_model(tiny_model):
    settings = Settings.load()
    teach(settings, "A fact for full fine-tuning.")
    record = train(settings, FineTuneConfig(method="full", epochs=1, min_steps=3, max_steps=3, learning_rate=1e-3),
                   lambda e: None)
    assert record["weights"] == "full"
    before = load_file(tiny_model / "model.safetensors")
    after = load_file(settings.finetuned_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[name], after[name].to(before[name].dtype))


def test_the_bundled_models_general_answers_are_shipped_for_the_requests_as_they_are_now():
    from fine_tune_model import SHIPPED_ANSWERS, general_prompts, replay_fingerprint
    from inference.locate import BUNDLED_CHAT_MODEL
    shipped = json.loads(SHIPPED_ANSWERS.read_text(encoding="utf-8"))
    assert shipped["base_model"] == BUNDLED_CHAT_MODEL
    assert shipped["fingerprint"] == replay_fingerprint(BUNDLED_CHAT_MODEL), "general_prompts.txt changed: see its header"
    assert len(shipped["answers"]) == len(general_prompts()) and all(answer.strip() for answer in shipped["answers"])


def test_no_learning_data_is_a_clear_error(tiny_model):
    with pytest.raises(ApprentiError, match="no entries yet"):
        train(Settings.load(), FineTuneConfig(**FAST), lambda event: None)


def test_the_subprocess_reports_progress_and_installs_the_model(tiny_model):
    settings = Settings.load()
    (settings.models_dir / "replay").unlink()  # the general answers are made here, not shared
    teach(settings, "Learned through the subprocess.")
    events = []
    record = run_fine_tuning(settings, FineTuneConfig(**FAST), events.append)
    assert [e["event"] for e in events][:2] == ["stage", "start"]
    assert events[-1] == {**events[-1], "event": "step", "step": 6}
    assert record == Versions(settings).get(record["id"]).manifest
    assert run_fine_tuning(settings, FineTuneConfig(**FAST), events.append) is None


def test_two_fine_tunings_at_once_the_second_is_told_to_wait(tiny_model):
    settings = Settings.load()
    with training_lock(settings):
        with pytest.raises(BusyError, match="another fine-tuning is running"):
            with training_lock(settings):
                pass
        teach(settings, "Some fact is taught.")
        with pytest.raises(ApprentiError, match="another fine-tuning is running"):
            run_fine_tuning(settings, FineTuneConfig(**FAST), lambda event: None)


def _finetune_command(settings, **options):
    config = FineTuneConfig(**{**FAST, **options})
    return [sys.executable, "fine_tune_model.py", "--home", str(settings.home), "--model", settings.base_model,
            *config.to_arguments()]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_run_stopped_midway_leaves_the_previous_model_whole(tiny_model, stop):
    settings = Settings.load()
    teach(settings, "The first model's fact.")
    first = train(settings, FineTuneConfig(**FAST), lambda event: None)
    teach(settings, "A second fact, never learned.")
    process = subprocess.Popen(_finetune_command(settings, min_steps=100000, max_steps=0), stdout=subprocess.PIPE,
                               text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for line in process.stdout:  # stop it while it trains, once a step is done
        if json.loads(line)["event"] == "step":
            break
    versions = Versions(settings)
    assert list(versions.root.glob(".*")) == []  # it writes only when done
    process.send_signal(stop)
    process.communicate(timeout=60)
    assert process.returncode != 0
    assert versions.champion() == first["id"] and [v.id for v in versions.all()[0]] == ["base", first["id"]]
    assert (settings.finetuned_dir / "adapter_model.safetensors").is_file()
    if stop != signal.SIGKILL:  # a killed run cleans nothing; the next run removes what it left
        assert list(versions.root.glob(".*")) == []


def test_ctrl_c_in_the_cli_stops_the_subprocess_and_keeps_the_previous_model(tiny_model):
    settings = Settings.load()
    teach(settings, "Some fact is taught.")

    def interrupt(event):
        if event["event"] == "step" and event["step"] == 2:
            raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_fine_tuning(settings, FineTuneConfig(**{**FAST, "min_steps": 100000, "max_steps": 0}), interrupt)
    assert time.perf_counter() - started < 120
    assert not settings.finetuned_dir.exists()
    assert read_entries(settings.learning_data) == ["Some fact is taught."]


def test_a_full_disk_while_saving_keeps_the_previous_model(tiny_model, monkeypatch):
    import errno
    from inference import versions
    settings = Settings.load()
    teach(settings, "The first entry here.")
    first = train(settings, FineTuneConfig(**FAST), lambda event: None)
    teach(settings, "The second entry there.")
    rename = os.rename

    def disk_full(source, target):
        if str(source).endswith(".partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        rename(source, target)

    monkeypatch.setattr(versions.os, "rename", disk_full)
    with pytest.raises(ApprentiError, match="No space left on device; the model in use is kept"):
        train(settings, FineTuneConfig(**FAST), lambda event: None)
    assert Versions(settings).champion() == first["id"] and len(Versions(settings).all()[0]) == 2
    assert list(Versions(settings).root.glob(".*")) == []


def test_the_trainers_are_set_for_this_cpu_not_for_a_gpu(monkeypatch, tmp_path):
    """trl's configs default to bf16 and gradient checkpointing, which assume a GPU."""
    from transformers import TrainingArguments
    from trl import DPOConfig, SFTConfig
    from inference import loading
    from training.core import trainer_arguments
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native_bf16 in (True, False):
        monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native_bf16)
        for config_class in (TrainingArguments, SFTConfig, DPOConfig):
            arguments = trainer_arguments(config_class, tmp_path, steps=3, batch_size=2, learning_rate=1e-4, seed=0)
            assert (arguments.bf16, arguments.fp16, arguments.gradient_checkpointing, arguments.use_cpu) == (
                native_bf16, False, False, True), config_class
            assert (arguments.max_steps, arguments.report_to, arguments.save_strategy) == (3, [], "no")
