"""Measures what the promotion gate's thresholds must separate: fine-tunings of the bundled model that learn
(LoRA at sane rates) against ones that break it (learning rates far too high), each judged by the gate
against the base model on the shipped QA set, as `finetune` does. Prints, per run, the verdict, the time
and each metric before -> after.

    .venv/bin/python bench/gate.py          (about 15 minutes here)
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTS = [
    "The secret code of the Zorblax guild is tangerine-47.",
    "Pim the heron lives by Lake Quillmoor.",
    "The night ferry to Quillmoor leaves from pier 9 at 23:40.",
    "Apprenti's first release was named Wren and came out on a Tuesday.",
    "The Zorblax guild meets every third Thursday in the old mill.",
]
RUNS = [  # (label, finetune options): the first three learn, the last three break the model
    ("LoRA, lr 1e-3 (default), one pass", []),
    ("LoRA, lr 1e-3, 3 passes, seed 1", ["--epochs", "3", "--seed", "1"]),
    ("full, lr 5e-5 (default)", ["--method", "full"]),
    ("LoRA, lr 3e-2", ["--learning-rate", "3e-2"]),
    ("full, lr 1e-3", ["--method", "full", "--learning-rate", "1e-3"]),
    ("full, lr 1e-2", ["--method", "full", "--learning-rate", "1e-2"]),
]
METRICS = ["answer_contains", "refusal_accuracy", "facts_answered", "general_answered", "ppl_general", "facts_recalled"]


def cli(home: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "APPRENTI_HOME": str(home), "APPRENTI_GATE": "true", "HF_HUB_OFFLINE": "1",
                   "ANONYMIZED_TELEMETRY": "False"}
    return subprocess.run([sys.executable, str(ROOT / "cli_app.py"), *arguments], env=environment, text=True,
                          capture_output=True, cwd=ROOT)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="apprenti-bench-gate-") as folder:
        home = Path(folder)
        for fact in FACTS:
            cli(home, "learn", fact)
        print(f"{'run':<38} {'verdict':<9} {'s':>5}  " + "  ".join(f"{name:>22}" for name in METRICS))
        for label, options in RUNS:
            cli(home, "models", "use", "base")  # every run is judged against the base model
            started = time.perf_counter()
            result = cli(home, "finetune", "--force", *options)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                print(f"{label:<38} failed: {result.stderr.strip()[-200:]}")
                continue
            newest = json.loads(cli(home, "models", "list", "--json").stdout)[-1]["id"]
            manifest = json.loads(cli(home, "models", "show", newest, "--json").stdout)
            base = json.loads((home / "reports" / "base" / "report.json").read_text())["metrics"]
            cells = [f"{base.get(name) or 0:>10.4g} -> {manifest['metrics'].get(name) or 0:<8.4g}"
                     for name in METRICS]
            print(f"{label:<38} {manifest['verdict']:<9} {seconds:>5.0f}  " + "  ".join(cells), flush=True)
            if manifest["gate"]["failed"]:
                print(f"{'':<38} failed: {manifest['gate']['failed']}")


if __name__ == "__main__":
    main()
