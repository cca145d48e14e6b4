"""Instruction tuning, the reward model, DPO/KTO and the online methods on tiny models: the data each reads
(its forms, its bad rows), the versions they make (from the champion, with replay), and their messages. What
the methods teach the real model is measured by bench/learning.py."""
import json
import signal
import subprocess
import sys
import time

import pytest

from common.config import Settings
from common.errors import ApprentiError
from conftest import ROOT, run_cli, short_qa_set
from evaluation import gate
from evaluation.gate import Threshold
from inference.versions import BASE, Versions
from inference.prompts import answer_messages
from training.examples import instruction, read_examples, without_overlap
from alignment.methods import LearnConfig, learn

FAST = dict(steps=2, batch_size=2, answer_tokens=8, generations=2)


def write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def preference_rows(count: int) -> list[dict]:
    """Pairs whose chosen answers open with a fixed phrase, as merge-feedback writes them."""
    rows = []
    for number in range(count):
        question = f"How many moons does planet {number} have?"
        rows.append({"prompt": f"{question}\n\nContext:\nPlanet {number} has {number % 5} moons.",
                     "question": question, "passages": [f"Planet {number} has {number % 5} moons."],
                     "chosen": f"In short: {number % 5}.", "rejected": f"Planet {number} has moons."})
    return rows


@pytest.fixture
def feedback_data(home, tiny_model):
    settings = Settings.load()
    pairs = preference_rows(24)
    write_jsonl(settings.rlhf_dataset, pairs)
    write_jsonl(settings.kto_dataset, [{**{k: v for k, v in pair.items() if k not in ("chosen", "rejected")},
                                        "completion": pair["chosen" if number % 2 else "rejected"],
                                        "label": bool(number % 2)} for number, pair in enumerate(pairs)])
    return settings


# ---------------------------------------------------------------- the data

def test_instruction_rows_are_read_in_four_forms_and_bad_rows_are_named_by_line(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [
        {"instruction": "Translate to French", "input": "cat", "output": "chat"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}]},
        {"prompt": "Capital of Peru?", "completion": "Lima"},
        {"question": "Who wrote it?", "context": ["Hugo wrote Les Misérables."], "answer": "Hugo"},
        {"text": "a row in no form"},
        "{broken json",
        {"instruction": "Say nothing", "output": "  "},
        {"messages": [{"role": "user", "content": "no answer"}]},
    ])
    examples = read_examples(path, instruction, "instructions")
    assert [example.line for example in examples.items] == [1, 2, 3, 4]
    assert examples.rows[0] == {"prompt": [{"role": "user", "content": "Translate to French\n\ncat"}],
                                "completion": [{"role": "assistant", "content": "chat"}]}
    assert examples.rows[1]["prompt"][0]["role"] == "system" and examples.rows[1]["completion"][0]["content"] == "4"
    # A grounded question is rendered exactly as the assistant asks it.
    assert examples.rows[3]["prompt"] == answer_messages("Who wrote it?", ["Hugo wrote Les Misérables."])
    assert [problem.split(":")[0] for problem in examples.problems] == [
        "train.jsonl line 5", "train.jsonl line 6", "train.jsonl line 7", "train.jsonl line 8"]
    assert "none of the forms" in examples.problems[0] and '"output" is empty' in examples.problems[2]


def test_missing_empty_and_overlapping_files_each_get_one_message(tmp_path):
    with pytest.raises(ApprentiError, match="does not exist"):
        read_examples(tmp_path / "train.jsonl", instruction, "instructions")
    write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ApprentiError, match="no usable rows of instructions"):
        read_examples(tmp_path / "empty.jsonl", instruction, "instructions")
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a?", "completion": "b"}, {"prompt": "c?", "completion": "d"}])
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "e?", "completion": "f"}, {"prompt": "c?", "completion": "x"}])
    train = read_examples(tmp_path / "train.jsonl", instruction, "instructions")
    test = read_examples(tmp_path / "test.jsonl", instruction, "instructions")
    assert without_overlap(train, test) == [
        "test.jsonl: 1 row(s) ask what train.jsonl teaches (lines 2): left out of the test"]
    assert [example.line for example in test.items] == [1]


# ---------------------------------------------------------------- the methods

@pytest.mark.parametrize("method", ["sft", "dpo", "kto", "ppo", "rloo", "grpo"])
def test_each_method_makes_a_version_from_the_champion(method, feedback_data, home):
    settings = feedback_data
    write_jsonl(settings.sft_train, [{"question": f"Q{n}?", "context": f"Fact {n}.", "answer": f"A{n}"}
                                     for n in range(6)])
    write_jsonl(settings.sft_test, [{"question": "Q9?", "context": "Fact 9.", "answer": "A9"}])
    if method in ("ppo", "rloo", "grpo"):
        from alignment.reward import train_reward
        train_reward(settings, LearnConfig(**FAST), lambda event: None)
    first = learn(settings, "sft", LearnConfig(**FAST), lambda event: None)
    events = []
    manifest = learn(settings, method, LearnConfig(**FAST, seed=1), events.append)
    versions = Versions(settings)
    assert manifest["method"] == method and manifest["parent"] == first["id"]
    assert versions.champion() == manifest["id"] and manifest["weights"] == "lora"
    # Its adapter applies on top of its parent's.
    source = versions.source(manifest["id"])
    assert source.adapters == (versions.root / first["id"], versions.root / manifest["id"])
    assert [event["step"] for event in events if event["event"] == "step"] == [1, 2]
    training = manifest["training"]
    assert training["steps"] == 2 and training["loss_history"] and training["seconds"] > 0
    if method == "sft":  # the same kind as its parent: a share of the parent's rows is replayed
        assert training["replayed"] == 2 and training["replayed_from"] == [first["id"]]
        assert training["test_loss_before"] > 0 and training["test_loss_after"] > 0
    if method in ("ppo", "rloo", "grpo"):
        assert "reward_last_quarter" in training
    # The same run again changes nothing.
    assert learn(settings, method, LearnConfig(**FAST, seed=1), lambda event: None) is None


@pytest.mark.parametrize("method", ["rloo", "grpo", "ppo"])
def test_the_online_methods_take_each_question_once_an_epoch(method, feedback_data):
    """trl's GRPO and RLOO take batch / generations questions a step (PPO: batch), and `epochs` counts passes
    over the questions as those trainers count them."""
    import math
    from alignment.reward import train_reward
    settings = feedback_data
    train_reward(settings, LearnConfig(**FAST), lambda event: None)
    config = LearnConfig(epochs=2, min_steps=0, batch_size=4, generations=2, answer_tokens=4, replay=0)
    manifest = learn(settings, method, config, lambda event: None)
    questions = manifest["training"]["rows"]
    assert questions > 12  # more than a few: a wrong count shows
    if method == "ppo":
        assert manifest["training"]["steps"] == 2 * math.ceil(questions / 4)
    else:  # a last step short of questions is left out, as trl does
        assert manifest["training"]["steps"] == 2 * (questions // 2)
    if method != "ppo":  # trl's own count of the passes made
        assert manifest["training"]["epochs"] == pytest.approx(2.0, abs=0.1)


def test_a_version_built_on_another_answers_with_both_adapters(feedback_data):
    from inference.transformers_model import ChatModel
    settings = feedback_data
    write_jsonl(settings.sft_train, [{"prompt": "Say the word.", "completion": "heron"}])
    config = dict(FAST, steps=3)
    first = learn(settings, "sft", LearnConfig(**config, learning_rate=5e-2), lambda event: None)
    second = learn(settings, "dpo", LearnConfig(**config, learning_rate=5e-2), lambda event: None)
    versions = Versions(settings)
    ids = ChatModel(versions.source(first["id"])).chat_ids([{"role": "user", "content": "Say the word."}])

    def next_token_scores(version_id):
        import torch
        model = ChatModel(versions.source(version_id)).model
        with torch.inference_mode():
            return model(input_ids=torch.tensor([ids])).logits[0, -1].float()

    base, after_first, after_second = (next_token_scores(v) for v in (BASE, first["id"], second["id"]))
    assert not after_first.allclose(base, atol=1e-4) and not after_second.allclose(after_first, atol=1e-4)
    # Pruning keeps what a kept version builds on.
    assert versions.prune(keep=1) == [] and versions.get(first["id"])


def test_too_little_data_and_a_missing_reward_model_are_one_message_each(feedback_data):
    settings = feedback_data
    write_jsonl(settings.rlhf_dataset, preference_rows(3))
    for method, message in (("dpo", "dpo needs at least 4 pairs"), ("ppo", "there is no reward model yet")):
        with pytest.raises(ApprentiError, match=message):
            learn(settings, method, LearnConfig(**FAST), lambda event: None)
    from alignment.reward import train_reward
    with pytest.raises(ApprentiError, match="at least 4 preference pairs"):
        train_reward(settings, LearnConfig(**FAST), lambda event: None)
    with pytest.raises(ApprentiError, match="train.jsonl does not exist"):
        learn(settings, "sft", LearnConfig(**FAST), lambda event: None)
    with pytest.raises(ApprentiError, match="QLoRA .* CUDA GPUs only"):
        write_jsonl(settings.sft_train, [{"prompt": "a", "completion": "b"}])
        learn(settings, "sft", LearnConfig(**FAST, qlora=True), lambda event: None)
    assert Versions(settings).champion() == BASE and not (settings.models_dir / "versions").exists()


def test_prompts_longer_than_the_context_window_are_left_out_by_line(feedback_data):
    settings = feedback_data
    write_jsonl(settings.sft_train, [{"prompt": "word " * 400, "completion": "long"},
                                     {"prompt": "short?", "completion": "yes"}])
    events = []
    manifest = learn(settings, "sft", LearnConfig(**FAST), events.append)
    notices = [event["message"] for event in events if event["event"] == "notice"]
    assert len(notices) == 1 and notices[0].startswith("train.jsonl line 1: the prompt is ")
    assert manifest["training"]["rows"] == 1


def test_the_reward_model_is_versioned_and_scores_answers(feedback_data, capsys):
    from cli_app import main
    from alignment.reward import train_reward
    settings = feedback_data
    # The pairs differ by their answers alone. A model trained on them, then one from the same start on the
    # same pairs reversed, each rank every held-out pair their way: an untrained head ranks both sets
    # alike, so the training did it.
    config = LearnConfig(**{**FAST, "steps": 6}, learning_rate=2e-2)
    first = train_reward(settings, config, lambda event: None)
    rewards = Versions(settings, "reward")
    assert first["verdict"] == "promoted" and rewards.champion() == first["id"]
    assert first["metrics"] == {"pairwise_accuracy": 1.0, "measured_on": "held-out pairs"}
    assert first["data"]["train_pairs"] > 4 and first["data"]["held_out_pairs"] > 0
    write_jsonl(settings.rlhf_dataset, [{**pair, "chosen": pair["rejected"], "rejected": pair["chosen"]}
                                        for pair in preference_rows(24)])
    second = train_reward(settings, config, lambda event: None)
    # Judged against the one in use on the same held-out pairs, which it ranks the other way.
    assert second["gate"] == {"champion": first["id"], "champion_accuracy": 0.0, "noise": 0.05}
    assert second["metrics"]["pairwise_accuracy"] == 1.0 and rewards.champion() == second["id"]
    capsys.readouterr()
    scored = {}
    for answer in ("In short: 3.", "Planet 3 has moons."):
        assert main(["score", "--question", "How many moons does planet 3 have?", "--answer", answer]) == 0
        scored[answer] = float(capsys.readouterr().out.strip())
    assert scored["Planet 3 has moons."] > scored["In short: 3."], scored
    assert main(["score", "--question", "Q?", "--answer", "A", "--context-id", "nowhere#0"]) == 1
    assert "no chunk or document nowhere#0" in capsys.readouterr().err


def test_sft_and_dpo_candidates_go_through_the_gate(feedback_data, home, monkeypatch):
    """The gate judges these methods' candidates as it judges continued pretraining (test_gate.py): here with
    a threshold no model meets, so each is refused, kept, and not used. bench/learning.py shows the gate
    refusing real SFT and DPO runs that forget, on the bundled model."""
    monkeypatch.setenv("APPRENTI_GATE", "true")
    monkeypatch.setenv("APPRENTI_MAX_NEW_TOKENS", "8")
    short_qa_set(home)
    # Perplexity on general text would have to fall to zero: no model does.
    monkeypatch.setattr(gate, "DEFAULT_THRESHOLDS", (Threshold("ppl_general", False, absolute=-1e9, relative=-1.0),))
    settings = Settings.load()
    write_jsonl(settings.sft_train, [{"prompt": "Say the word.", "completion": "heron"}])
    for method in ("sft", "dpo"):
        events = []
        manifest = learn(settings, method, LearnConfig(**FAST), events.append)
        assert {event["model"] for event in events if event["event"] == "evaluate"} >= {"candidate"}
        assert manifest["verdict"] == "refused" and manifest["gate"]["failed"].startswith("ppl_general "), manifest["gate"]
    versions = Versions(settings)
    assert versions.champion() == BASE and [event["action"] for event in versions.history()] == ["refused"] * 2


# ---------------------------------------------------------------- the commands

def test_learn_from_feedback_trains_the_reward_model_then_dpo(home, tiny_model):
    from feedback.records import Feedback, append
    settings = Settings.load()
    for number, pair in enumerate(preference_rows(30)):
        append(settings.feedback_file, Feedback.from_json({
            "question": pair["question"], "context": [{"id": f"p{number}#0", "text": pair["passages"][0]}],
            "answers": [{"text": pair["chosen"]}, {"text": pair["rejected"]}], "choice": "first", "source": "ui"}))
    result = run_cli("learn-from-feedback", "--steps", "2", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Learned from 30 feedback entries (30 pairs, 60 rated answers) with DPO." in out
    assert "Reward model v" in out and "is now the model in use" in out
    versions = Versions(settings)
    assert versions.get(versions.champion()).manifest["method"] == "dpo"
    assert Versions(settings, "reward").champion() != BASE


def test_learning_from_no_feedback_says_so_and_keeps_the_data(home, tiny_model):
    settings = Settings.load()
    write_jsonl(settings.rlhf_dataset, preference_rows(10))
    result = run_cli("learn-from-feedback")
    assert result.returncode == 1 and "there is no feedback yet" in result.stderr
    assert len(settings.rlhf_dataset.read_text().splitlines()) == 10


def test_ctrl_c_in_the_middle_of_dpo_keeps_the_champion(feedback_data, home):
    process = subprocess.Popen([sys.executable, str(ROOT / "cli_app.py"), "align", "--method", "dpo", "--steps",
                                "500", "--batch-size", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("Training "):
            break
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err
    versions = Versions(Settings.load())
    assert [version.id for version in versions.all()[0]] == [BASE] and not list(versions.root.glob(".*.partial"))
