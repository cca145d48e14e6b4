"""Model versions and `models list|show|use|rollback|diff|prune`, on version folders written by hand: a
manifest.json and a dummy adapter file each (no model is loaded, but in the test of a running assistant)."""
import json
import os
import shutil

import pytest

from cli_app import main
from common.config import Settings
from conftest import at_once, run_cli
from inference.versions import BASE, VERDICTS, Versions

GATE_CONFIG = {"learning_rate": 0.0002, "epochs": 3, "lora": {"rank": 8, "alpha": 16}}


def make_version(home, version_id, created, *, verdict="promoted", metrics=None, config=None, gate=None,
                 weights="lora", base_model=None):
    folder = home / "models" / "versions" / version_id
    folder.mkdir(parents=True)
    if weights == "lora":
        (folder / "adapter_model.safetensors").write_bytes(b"not really weights")
    manifest = {"id": version_id, "parent": BASE, "base_model": base_model or Settings.load().base_model,
                "method": "pretraining", "weights": weights, "config": config or GATE_CONFIG,
                "data": {"learning_data": {"file": "learning_data.txt", "sha256": "ab" * 32, "entries": 3}},
                "training": {"steps": 40, "final_loss": 1.25, "loss_history": [{"step": 40, "loss": 1.25}]},
                "metrics": metrics or {"answer_f1": 0.5, "ppl_general": 30.0}, "gate": gate or {"verdict": verdict},
                "verdict": verdict, "created": created}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


REFUSAL = {"verdict": "refused", "champion": "v2", "thresholds": [],
           "findings": [{"metric": "answer_f1", "champion": 0.5, "candidate": 0.5, "worsening": 0.0,
                         "allowed": 0.05, "passed": True},
                        {"metric": "ppl_general", "champion": 30.0, "candidate": 48.5, "worsening": 18.5,
                         "allowed": 15.0, "passed": False}]}


@pytest.fixture
def three(home, tiny_model):
    """v1 and v2 promoted (v2 the champion, v1 the one before), v3 refused by the gate: 2 promotion lines."""
    make_version(home, "v1", "2026-11-01T10:00:00")
    make_version(home, "v2", "2026-11-02T10:00:00", metrics={"answer_f1": 0.6, "ppl_general": 31.5},
                 config={**GATE_CONFIG, "learning_rate": 0.0001})
    make_version(home, "v3", "2026-11-03T10:00:00", verdict="refused", gate=REFUSAL,
                 metrics={"answer_f1": 0.6, "ppl_general": 48.5})
    versions = Versions(Settings.load())
    versions.set_champion("v1", "promoted")
    versions.set_champion("v2", "promoted")
    return versions


def log(home) -> list[dict]:
    return [json.loads(line) for line in (home / "models" / "promotions.jsonl").read_text().splitlines()]


def test_list_gives_every_version_with_exactly_one_champion_and_names_unreadable_ones(three, home, capsys):
    broken = home / "models" / "versions" / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{cut sh")
    assert main(["models", "list", "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [row["id"] for row in rows] == ["base", "v1", "v2", "v3"]
    assert all(set(row) == {"id", "parent", "method", "created", "verdict", "champion"} for row in rows)
    assert all(row["verdict"] in VERDICTS for row in rows) and rows[3]["verdict"] == "refused"
    assert [row["id"] for row in rows if row["champion"] is True] == ["v2"]
    problems = captured.err.strip().splitlines()
    assert len(problems) == 1 and "'broken'" in problems[0]

    assert main(["models", "list"]) == 0
    header, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["id", "parent", "method", "created", "verdict"]
    assert [line.split()[:2] for line in lines if line.startswith("*")] == [["*", "v2"]]
    assert lines[0].split() == ["base", "-", "base", "-", "base"]


def test_use_switches_a_refused_version_needs_force_and_each_action_is_one_log_line(three, home, capsys):
    versions = three
    assert main(["models", "use", "v1"]) == 0
    assert "Now using version v1 (was version v2)." in capsys.readouterr().out
    assert versions.champion() == "v1" and os.path.islink(home / "tinyllama_finetuned")
    assert log(home)[-1] | {"time": None} == {"time": None, "action": "use", "version": "v1", "previous": "v2"}

    assert main(["models", "use", "v1"]) == 0
    assert "already the model in use" in capsys.readouterr().out and len(log(home)) == 3

    assert main(["models", "use", "v3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused version 'v3'" in err and "ppl_general" in err and "--force" in err
    assert versions.champion() == "v1" and len(log(home)) == 3

    assert main(["models", "use", "v3", "--force"]) == 0
    assert versions.champion() == "v3" and versions.get("v3").verdict == "forced"
    assert [(e["action"], e["version"], e["previous"]) for e in log(home)[3:]] == [("forced", "v3", "v1")]

    assert main(["models", "use", "base"]) == 0
    assert versions.champion() == BASE and not os.path.lexists(home / "tinyllama_finetuned")
    assert [e["action"] for e in log(home)] == ["promoted", "promoted", "use", "forced", "use"]


def test_rollback_returns_to_the_previous_champion_and_is_logged(three, home, capsys):
    assert main(["models", "use", "v3", "--force"]) == 0
    assert main(["models", "rollback"]) == 0
    assert "Rolled back to version v2 (was version v3)." in capsys.readouterr().out
    assert three.champion() == "v2"
    assert log(home)[-1] | {"time": None} == {"time": None, "action": "rollback", "version": "v2",
                                              "previous": "v3"}
    # Rollbacks in a row go further back: v1, then the base model, then nothing earlier.
    assert main(["models", "rollback"]) == 0 and three.champion() == "v1"
    assert main(["models", "rollback"]) == 0 and three.champion() == "base"
    assert main(["models", "rollback"]) == 1
    assert "no earlier model" in capsys.readouterr().err


def test_rollback_skips_pruned_versions(three, home):
    assert main(["models", "use", "v3", "--force"]) == 0
    assert main(["models", "prune", "--keep", "0"]) == 0  # v1 and v2 go, the champion v3 stays
    assert main(["models", "rollback"]) == 0 and three.champion() == "base"


def test_rollback_without_an_earlier_champion_is_one_clear_message(home, tiny_model, capsys):
    assert main(["models", "rollback"]) == 1
    err = capsys.readouterr().err
    assert err == "error: there is no earlier model to roll back to\n"
    assert not (home / "models" / "promotions.jsonl").exists()


def test_prune_keeps_the_champion_even_when_it_is_the_oldest(three, home, capsys):
    assert main(["models", "use", "v1"]) == 0
    capsys.readouterr()
    assert main(["models", "prune", "--keep", "-1"]) == 1
    assert "--keep -1" in capsys.readouterr().err
    assert main(["models", "prune", "--keep", "1"]) == 0
    assert "Removed 1 version(s): v2" in capsys.readouterr().out
    assert sorted(os.listdir(home / "models" / "versions")) == ["v1", "v3"]
    assert main(["models", "prune", "--keep", "0"]) == 0
    assert "Removed 1 version(s): v3" in capsys.readouterr().out
    assert os.listdir(home / "models" / "versions") == ["v1"] and three.champion() == "v1"
    assert [(e["action"], e["version"]) for e in log(home)[-2:]] == [("pruned", "v2"), ("pruned", "v3")]
    assert main(["models", "prune", "--keep", "0"]) == 0
    assert "Nothing to remove" in capsys.readouterr().out


def test_diff_shows_metrics_side_by_side_and_the_config_keys_that_differ(three, home, capsys):
    assert main(["models", "diff", "v1", "v3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["metric", "v1", "v3", "change"]
    assert lines[1].split() == ["answer_f1", "0.5", "0.6", "+0.1"]
    assert lines[2].split() == ["ppl_general", "30", "48.5", "+18.5"]
    assert lines[3] == "config: the same"
    assert main(["models", "diff", "v1", "v2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "config learning_rate: 0.0002 -> 0.0001"
    # The base model's metrics are those of its last evaluation report.
    (home / "reports" / "base").mkdir(parents=True)
    (home / "reports" / "base" / "report.json").write_text(json.dumps({"metrics": {"answer_f1": 0.25}}))
    assert main(["models", "diff", "base", "v1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1].split() == ["answer_f1", "0.25", "0.5", "+0.25"]


def test_show_explains_the_gate_and_json_is_the_manifest(three, home, capsys):
    assert main(["models", "show", "v3"]) == 0
    out = capsys.readouterr().out
    for expected in ("version v3\n", "method: pretraining, lora weights", "  learning_rate: 0.0002",
                     "  lora.rank: 8", "  learning_data.sha256: " + "ab" * 32, "  steps: 40", "  ppl_general: 48.5",
                     "gate: refused against version v2; verdict refused",
                     "failed: ppl_general 30 -> 48.5 (worse by 18.5, 15 allowed)"):
        assert expected in out, expected
    assert "answer_f1 0.5 ->" not in out  # a metric that passed is no failure
    assert main(["models", "show", "v2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        (home / "models" / "versions" / "v2" / "manifest.json").read_text())
    assert main(["models", "show", "v2"]) == 0 and "version v2 (the model in use)" in capsys.readouterr().out


def test_an_unknown_version_is_one_clear_message_without_traceback(three, capsys):
    for arguments in (["show", "nope"], ["use", "nope"], ["diff", "v1", "nope"], ["use", "../v1"]):
        assert main(["models", *arguments]) == 1, arguments
        err = capsys.readouterr().err
        assert err.startswith("error: no version ") and err.count("\n") == 1, (arguments, err)
    result = run_cli("models", "show", "nope")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == "error: no version 'nope': 'python cli_app.py models list' shows them\n"
    assert run_cli("models", "diff", "v1").returncode == 2  # wrong usage


def set_champion_many(home, worker):
    os.environ["APPRENTI_HOME"] = str(home)
    versions = Versions(Settings.load())
    for n in range(25):
        versions.set_champion(["v1", "v2", "v3"][(worker + n) % 3], "use", worker=worker)


def test_set_champion_from_several_processes_at_once_leaves_a_valid_link(three, home):
    at_once(set_champion_many, [(home, worker) for worker in range(3)])
    pointer = home / "tinyllama_finetuned"
    assert pointer.is_symlink() and (pointer / "manifest.json").is_file()
    assert three.champion() in {"v1", "v2", "v3"}
    events = log(home)[2:]
    assert len(events) == 75 and sorted(e["worker"] for e in events) == sorted(list(range(3)) * 25)
    # Each change saw the one before it: the log is one chain of champions.
    assert all(later["previous"] == earlier["version"] for earlier, later in zip(events, events[1:]))
    assert events[-1]["version"] == three.champion()
    assert not list(home.glob(".tinyllama_finetuned.*"))


def test_a_running_assistant_follows_the_champion(home, tiny_model):
    from rag_module import Assistant
    settings = Settings.load()
    whole = make_version(home, "v1", "2026-11-01T10:00:00", weights="full")  # a whole model: the tiny one
    for item in tiny_model.iterdir():
        shutil.copy(item, whole / item.name)
    assistant = Assistant(settings)
    assert assistant.wanted_version() == BASE
    assert assistant.model.version == BASE and assistant.model_loaded
    assistant.follow_champion()
    assert assistant.model_loaded  # nothing changed: the model stays
    Versions(settings).set_champion("v1", "use")
    assert assistant.wanted_version() == "v1"
    assistant.follow_champion()
    assert not assistant.model_loaded
    assert assistant.model.version == "v1"


def test_a_model_left_by_an_older_apprenti_becomes_a_version(home, tiny_model, capsys):
    legacy = home / "tinyllama_finetuned"
    legacy.mkdir()
    (legacy / "adapter_model.safetensors").write_bytes(b"weights")
    (legacy / "apprenti_training.json").write_text(json.dumps(
        {"finished_at": "2026-11-22T10:00:00", "base_model": str(tiny_model), "method": "lora",
         "config": {"epochs": 3}}))
    # Adopting takes the versions lock: changing the champion first must not wait for itself.
    result = run_cli("models", "use", "base", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Now using the base model (was version v20261122-100000)." in result.stdout
    assert legacy.is_symlink() is False and not legacy.exists()
    adopted = home / "models" / "versions" / "v20261122-100000"
    assert (adopted / "adapter_model.safetensors").read_bytes() == b"weights"
    assert [(e["action"], e["version"]) for e in log(home)] == [("adopted", "v20261122-100000"), ("use", "base")]
    assert main(["models", "rollback"]) == 0 and legacy.is_symlink()
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows[1] | {"created": None} == {"id": "v20261122-100000", "parent": BASE, "method": "pretraining",
                                           "created": None, "verdict": "promoted", "champion": True}
    manifest = Versions(Settings.load()).get("v20261122-100000").manifest
    assert manifest["weights"] == "lora" and manifest["config"] == {"epochs": 3}


def test_a_model_left_by_an_older_apprenti_is_adopted_when_first_listed(home, tiny_model, capsys):
    legacy = home / "tinyllama_finetuned"
    legacy.mkdir()
    (legacy / "apprenti_training.json").write_text(json.dumps(
        {"finished_at": "2026-11-22T10:00:00", "base_model": str(tiny_model), "method": "full", "config": {}}))
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["id"], row["champion"]) for row in rows] == [("base", False), ("v20261122-100000", True)]
    assert legacy.is_symlink() and (legacy / "manifest.json").is_file()


def test_a_champion_deleted_by_hand_leaves_the_base_model_in_use_said_once(three, home, capsys):
    shutil.rmtree(home / "models" / "versions" / "v2")
    assert main(["models", "list", "--json"]) == 0
    captured = capsys.readouterr()
    assert [row["id"] for row in json.loads(captured.out) if row["champion"]] == [BASE]
    assert captured.err.count("\n") == 1 and "version 'v2', is gone" in captured.err


def test_a_version_of_another_base_model_is_refused_by_use(three, home, capsys):
    make_version(home, "v4", "2026-11-04T10:00:00", base_model="someone/other-model")
    assert main(["models", "use", "v4"]) == 1
    assert "version 'v4' was trained from someone/other-model" in capsys.readouterr().err
    assert three.champion() == "v2"
