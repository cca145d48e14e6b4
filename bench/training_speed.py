"""Speed and memory of a LoRA fine-tuning step, before and after the move to trl, in one run.

    .venv/bin/python bench/training_speed.py [--skip-tinyllama] [--steps N] [--repeats N]

"Before" is the hand-written training loop of commit HANDWRITTEN_LOOP (its tree is taken from git into a
temporary folder); "after" is fine_tune_model.py as it is now, on transformers' Trainer. Both run as the CLI runs
them (a subprocess of their own) on the same learning data, model and steps, one after the other, on the
bundled SmolLM2-135M and on a random model of TinyLlama-1.1B's shape. Figures per run: tokens/s over the
training steps (the fair comparison: the two order their batches differently, and with 9 samples in
batches of 4 the old loop took the 1-sample batch first, so their steps do not hold the same tokens), seconds
per step, and the peak memory of the training process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

HANDWRITTEN_LOOP = "9dfec30"  # the last commit whose fine_tune_model.py trained with its own loop


def checkout(commit: str, folder: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tree:
        tree.extractall(folder, filter="data")
    return folder


def learning_data(home: Path) -> None:
    """8 entries of about 200 words: 4 samples a step of ~250 tokens."""
    words = ("Apprenti learns from the notes its user writes down every day, " * 40).split()
    with open(home / "learning_data.txt", "w") as data:
        for i in range(8):
            data.write(" ".join(words[i:i + 200]) + "\n%\n")


def one_run(tree: Path, model: Path, steps: int) -> dict:
    """One fine-tuning in its own process; its step events and its own peak memory (wait4's rusage)."""
    with tempfile.TemporaryDirectory() as home:
        learning_data(Path(home))
        process = subprocess.Popen([sys.executable, str(tree / "fine_tune_model.py"), "--home", home, "--model",
                                    str(model), "--max-steps", str(steps), "--min-steps", str(steps)],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tree)
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    steps_done = [event for event in events if event["event"] == "step"]
    if process.returncode != 0 or not steps_done:
        raise SystemExit(f"{tree}: the fine-tuning failed: {events[-1:]}")
    last = steps_done[-1]
    return {"tokens_per_second": last["tokens_per_second"], "seconds_per_step": last["elapsed"] / last["step"],
            "peak_gib": usage.ru_maxrss / 1024 / 1024}


def compare(label: str, model: Path, before_tree: Path, steps: int, repeats: int) -> None:
    runs = {"before (own loop)": [], "after (transformers Trainer)": []}
    for _ in range(repeats):  # interleaved, so that a slow moment of the machine hits both
        runs["before (own loop)"].append(one_run(before_tree, model, steps))
        runs["after (transformers Trainer)"].append(one_run(ROOT, model, steps))
    medians = {name: {key: statistics.median(run[key] for run in results) for key in results[0]}
               for name, results in runs.items()}
    for name, figures in medians.items():
        print(f"{label}, LoRA, {steps} steps, {name}: {figures['tokens_per_second']:8.1f} tokens/s  "
              f"{figures['seconds_per_step']:6.2f} s/step  peak {figures['peak_gib']:5.2f} GiB", flush=True)
    before, after = medians.values()
    print(f"{label}: after/before  tokens/s {after['tokens_per_second'] / before['tokens_per_second']:.3f}  "
          f"peak memory {after['peak_gib'] / before['peak_gib']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-tinyllama", action="store_true", help="only the bundled model")
    parser.add_argument("--steps", type=int, default=8, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; medians are shown")
    arguments = parser.parse_args()
    from common.config import Settings
    from inference.locate import bundled_chat_model
    from run_all import tinyllama_shaped
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        before_tree = checkout(HANDWRITTEN_LOOP, scratch / "before")
        bundled = bundled_chat_model(Settings.load(home=ROOT).models_dir)
        compare("SmolLM2-135M (bundled)", bundled, before_tree, arguments.steps, arguments.repeats)
        if not arguments.skip_tinyllama:
            folder = tinyllama_shaped(scratch / "tinyllama-shaped", bundled)
            compare("TinyLlama-1.1B-shaped", folder, before_tree, max(arguments.steps // 2, 2), arguments.repeats)


if __name__ == "__main__":
    main()
