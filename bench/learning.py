"""What instruction tuning and the preference methods teach the bundled model, and what a step of each costs.

    apt-get install python3-doc debian-faq    # once (make bench does it)
    .venv/bin/python bench/learning.py [--parts sft,taste,minimum,forget,cost] [--skip-tinyllama]

Grounded questions from text no one on the team wrote: the sections of the Debian FAQ (training) and of the
Python FAQ (testing: other documents, other subject). A section's heading is the question, its first ~120 words
the context, and the context's first sentence the answer.

  sft     answer token F1 on the Python FAQ's questions (through `evaluate`), base model and after SFT on the
          Debian FAQ's.
  taste   a taste taught by feedback: chosen answers open with "In short:", rejected ones (the same answer) do
          not. The reward model's accuracy on pairs of unseen questions; the share of greedy answers to unseen
          questions that open with the phrase, base and after DPO (pairs) and after KTO (thumbs alone: each
          question has one rated answer); the reward model's mean score of greedy answers to unseen questions,
          base and after RLOO, GRPO and PPO.
  minimum the reward model's accuracy on unseen pairs against the number of pairs it learned from: what sets
          the least data a preference run accepts.
  forget  SFT and DPO with a learning rate far too high, through the promotion gate (whole shipped QA set).
  cost    seconds per step and peak memory of each method, each in its own process, on the bundled model and
          a random model of TinyLlama-1.1B's shape.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

PHRASE = "In short:"
CONTEXT_WORDS = 120
TRAIN_QUESTIONS, TEST_QUESTIONS = 64, 32


def grounded(entries) -> list[dict]:
    """{"question", "context", "answer"} rows of FAQ sections with a real sentence to answer with."""
    rows = []
    for _, question, body in entries:
        context = " ".join(" ".join(body.split()).split()[:CONTEXT_WORDS])
        first = re.match(r"(.{30,300}?[.!?])(\s|$)", context)
        if question.endswith("?") and first:
            rows.append({"question": question, "context": context, "answer": first.group(1)})
    return rows


def faq_sets() -> tuple[list[dict], list[dict]]:
    from retrieval import debian_faq, python_faq
    train, test = grounded(debian_faq("en")), grounded(python_faq())
    return train[:TRAIN_QUESTIONS], test[:TEST_QUESTIONS]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def fresh_home(scratch: Path, name: str, gate: bool = False):
    """A data dir on the bundled model, converted once and linked."""
    from common.config import Settings
    from inference.locate import bundled_chat_model
    home = scratch / name
    (home / "models").mkdir(parents=True)
    converted = bundled_chat_model(Settings.load(home=ROOT).models_dir)
    (home / "models" / converted.name).symlink_to(converted, target_is_directory=True)
    os.environ["APPRENTI_HOME"] = str(home)
    os.environ["APPRENTI_GATE"] = "true" if gate else "false"
    os.environ.pop("APPRENTI_BASE_MODEL", None)
    return Settings.load()


def pair_rows(rows: list[dict]) -> list[dict]:
    return [{"prompt": row["question"], "question": row["question"], "passages": [row["context"]],
             "chosen": f"{PHRASE} {row['answer']}", "rejected": row["answer"]} for row in rows]


def greedy_answers(settings, rows: list[dict], tokens: int = 16) -> list[str]:
    from inference.transformers_model import ChatModel
    from inference.versions import Versions
    from inference.prompts import answer_messages
    versions = Versions(settings)
    model = ChatModel(versions.source(versions.champion()))
    return ["".join(model.stream(model.chat_ids(answer_messages(row["question"], [row["context"]])), tokens)).strip()
            for row in rows]


def trait_share(answers: list[str]) -> float:
    return sum(answer.startswith(PHRASE) for answer in answers) / len(answers)


def timed_learn(settings, method: str, **options) -> dict:
    from alignment.methods import LearnConfig, learn
    started = time.perf_counter()
    manifest = learn(settings, method, LearnConfig(**options), lambda event: None)
    manifest["wall_seconds"] = time.perf_counter() - started
    return manifest


def part_sft(scratch: Path, train: list[dict], test: list[dict]) -> None:
    from evaluation.evaluate import evaluate
    from inference.versions import BASE, Versions
    settings = fresh_home(scratch, "sft")
    write_jsonl(settings.sft_train, train)
    qa = scratch / "python_faq_qa.jsonl"
    write_jsonl(qa, [{"question": row["question"], "answers": [row["answer"]], "context": row["context"]}
                     for row in test])
    os.environ["APPRENTI_MAX_NEW_TOKENS"] = "64"
    settings = type(settings).load()
    versions = Versions(settings)
    before = evaluate(settings, qa, source=versions.source(BASE))["metrics"]
    manifest = timed_learn(settings, "sft", steps=48, batch_size=4)
    after = evaluate(settings, qa, source=versions.source(manifest["id"]))["metrics"]
    print(f"sft: {len(train)} Debian FAQ questions, 48 steps in {manifest['training']['seconds']:.0f} s; "
          f"answer F1 on {len(test)} Python FAQ questions (gold context, 64 tokens): "
          f"{before['answer_f1']:.3f} -> {after['answer_f1']:.3f}; ROUGE-L {before.get('rouge_l', 0):.3f} -> "
          f"{after.get('rouge_l', 0):.3f}", flush=True)


def part_taste(scratch: Path, train: list[dict], test: list[dict]) -> None:
    from alignment.reward import load_reward_model, pairwise_accuracy, scores, train_reward
    from alignment.methods import LearnConfig
    from inference.prompts import answer_messages
    from training.examples import preference_pair
    settings = fresh_home(scratch, "taste")
    write_jsonl(settings.rlhf_dataset, pair_rows(train))
    unseen_pairs = [preference_pair(row) for row in pair_rows(test)]
    started = time.perf_counter()
    reward = train_reward(settings, LearnConfig(steps=48, batch_size=4), lambda event: None)
    model, tokenizer = load_reward_model(settings)
    print(f"taste: reward model, {reward['data']['train_pairs']} pairs, 48 steps in "
          f"{time.perf_counter() - started:.0f} s: ranks {pairwise_accuracy(model, tokenizer, unseen_pairs):.2f} "
          f"of {len(unseen_pairs)} pairs of unseen questions right", flush=True)

    def mean_reward(answers: list[str]) -> float:
        chats = [answer_messages(row["question"], [row["context"]]) + [{"role": "assistant", "content": answer}]
                 for row, answer in zip(test, answers)]
        return sum(scores(model, tokenizer, chats)) / len(chats)

    base_answers = greedy_answers(settings, test)
    print(f"taste: base model, share of answers opening with '{PHRASE}': {trait_share(base_answers):.2f}, "
          f"mean reward {mean_reward(base_answers):.3f}", flush=True)
    # Each method from the base model, as a user's first learning from feedback would be.
    thumbs = [{"prompt": row["question"], "question": row["question"], "passages": [row["context"]],
               "completion": f"{PHRASE} {row['answer']}" if number % 2 else row["answer"], "label": bool(number % 2)}
              for number, row in enumerate(train)]
    write_jsonl(settings.kto_dataset, thumbs)
    runs = {"dpo": dict(steps=48, batch_size=4), "kto": dict(steps=48, batch_size=4),
            "rloo": dict(steps=24, batch_size=8, generations=4, answer_tokens=24),
            "grpo": dict(steps=24, batch_size=8, generations=4, answer_tokens=24),
            "ppo": dict(steps=24, batch_size=8, answer_tokens=24)}
    from inference.versions import BASE, Versions
    for method, options in runs.items():
        Versions(settings).set_champion(BASE, "use")
        manifest = timed_learn(settings, method, **options)
        answers = greedy_answers(settings, test)
        print(f"taste: {method}, {options['steps']} steps in {manifest['training']['seconds']:.0f} s: share of "
              f"answers opening with '{PHRASE}' {trait_share(answers):.2f}, mean reward {mean_reward(answers):.3f}"
              + (f"; sampled answers' reward {manifest['training']['reward_first_quarter']:.3f} -> "
                 f"{manifest['training']['reward_last_quarter']:.3f}" if "reward_first_quarter" in manifest[
                     "training"] else ""), flush=True)


def part_minimum(scratch: Path, train: list[dict], test: list[dict], counts: list[int]) -> None:
    import alignment.reward as reward
    from alignment.methods import LearnConfig
    from common.errors import ApprentiError
    from training.examples import preference_pair
    reward.MIN_PAIRS = 1  # measured here, so not enforced
    unseen = [preference_pair(row) for row in pair_rows(test)]
    for count in counts:
        settings = fresh_home(scratch, f"minimum-{count}")
        write_jsonl(settings.rlhf_dataset, pair_rows(train[:count]))
        try:
            manifest = reward.train_reward(settings, LearnConfig(min_steps=16, batch_size=4), lambda event: None)
        except ApprentiError as error:
            print(f"minimum: {count} pairs: {error}", flush=True)
            continue
        model, tokenizer = reward.load_reward_model(settings)
        print(f"minimum: reward model on {manifest['data']['train_pairs']} pairs ({manifest['training']['steps']} "
              f"steps): ranks {reward.pairwise_accuracy(model, tokenizer, unseen):.2f} of {len(unseen)} unseen "
              "pairs right", flush=True)


def part_forget(scratch: Path, train: list[dict]) -> None:
    settings = fresh_home(scratch, "forget", gate=True)
    write_jsonl(settings.sft_train, train)
    write_jsonl(settings.rlhf_dataset, pair_rows(train))
    for method, rate in (("sft", 3e-2), ("dpo", 3e-2)):
        manifest = timed_learn(settings, method, steps=24, batch_size=4, learning_rate=rate)
        print(f"forget: {method} at learning rate {rate}: {manifest['verdict']} "
              f"({manifest['gate'].get('failed') or 'no metric regressed'}); {manifest['wall_seconds']:.0f} s "
              "with the gate", flush=True)


def one_cost(model: Path, method: str, steps: int, data_home: Path) -> dict:
    """One method's run in its own process, as the CLI runs it; its step events and peak memory."""
    job = ["align", "--method", method] if method not in ("sft", "reward") else (
        ["sft"] if method == "sft" else ["train-reward"])
    env = {**os.environ, "APPRENTI_HOME": str(data_home), "APPRENTI_BASE_MODEL": str(model), "APPRENTI_GATE": "false"}
    process = subprocess.Popen([sys.executable, "-m", "alignment.jobs", *job, "--steps", str(steps), "--batch-size",
                                "4", "--generations", "4", "--answer-tokens", "24", "--force"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0]

    def watch() -> None:  # the process's own high-water mark (ru_maxrss would count this bench's memory too)
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak[0] = max(peak[0], int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
            except (OSError, AttributeError):
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = process.stdout.read()
    process.wait()
    watcher.join()
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    done = [event for event in events if event["event"] == "done"]
    if process.returncode != 0 or not done:
        return {"error": events[-1:] and events[-1].get("message")}
    training = done[0]["record"]["training"]
    return {"seconds_per_step": training["seconds_per_step"], "peak_gib": peak[0] / 1024 / 1024}


def part_cost(scratch: Path, train: list[dict], skip_tinyllama: bool) -> None:
    from common.config import Settings
    from inference.locate import bundled_chat_model
    from run_all import tinyllama_shaped
    bundled = bundled_chat_model(Settings.load(home=ROOT).models_dir)
    models = {"SmolLM2-135M (bundled)": bundled}
    if not skip_tinyllama:
        models["TinyLlama-1.1B-shaped"] = tinyllama_shaped(scratch / "tinyllama-shaped", bundled)
    for label, model in models.items():
        home = scratch / f"cost-{len(label)}"
        settings = Settings.load(home=home)
        write_jsonl(settings.sft_train, train[:16])
        write_jsonl(settings.rlhf_dataset, pair_rows(train[:16]))
        for method in ("sft", "reward", "dpo", "kto", "rloo", "grpo", "ppo"):
            if method == "kto":
                write_jsonl(settings.kto_dataset, [{"prompt": row["question"], "completion": row["answer"],
                                                    "label": bool(n % 2)} for n, row in enumerate(train[:16])])
            figures = one_cost(model, method, 3 if label.startswith("SmolLM2") else 2, home)
            print(f"cost: {label}, {method}: " + (f"{figures['seconds_per_step']:.2f} s/step, peak "
                                                    f"{figures['peak_gib']:.2f} GiB" if "error" not in figures
                                                    else f"failed: {figures['error']}"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="sft,taste,minimum,forget,cost")
    parser.add_argument("--skip-tinyllama", action="store_true")
    parser.add_argument("--pair-counts", default="1,2,4,8,16,32", help="minimum: pairs to train reward models on")
    arguments = parser.parse_args()
    parts = arguments.parts.split(",")
    train, test = faq_sets()
    print(f"{len(train)} training questions (Debian FAQ), {len(test)} test questions (Python FAQ)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if "sft" in parts:
            part_sft(scratch, train, test)
        if "taste" in parts:
            part_taste(scratch, train, test)
        if "minimum" in parts:
            part_minimum(scratch, train, test, [int(count) for count in arguments.pair_counts.split(",")])
        if "forget" in parts:
            part_forget(scratch, train)
        if "cost" in parts:
            part_cost(scratch, train, arguments.skip_tinyllama)


if __name__ == "__main__":
    main()
