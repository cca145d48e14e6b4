"""Cold starts as a user meets them, each in a new process: `ask` from the shell, `add` of a short text, and the
menu's first answer (from launch to the answer's sources), beside `python -c "import torch"` on the same
machine. The bundled model answers on the default backend; the models are converted and exported once,
untimed, before the runs; the shell's environment is a user's (no HF_HUB_OFFLINE).

    .venv/bin/python bench/cold_start.py [--runs 5]      (make bench runs it)
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FACT = "The Apprenti project's mascot is a blue heron called Pim."
QUESTION = "What is the mascot of the Apprenti project?"


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def menu_first_answer(env: dict) -> float:
    """From launch to the line that lists the first answer's sources."""
    started = time.perf_counter()
    menu = subprocess.Popen([sys.executable, "cli_app.py"], cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    menu.stdin.write(f"1\n{QUESTION}\n")
    menu.stdin.flush()
    answered = threading.Event()

    def watch():
        for line in menu.stdout:
            if line.startswith("Sources:") or "I don't know" in line:
                answered.set()
                return
    threading.Thread(target=watch, daemon=True).start()
    if not answered.wait(120):
        raise SystemExit("the menu gave no answer within 120 s")
    elapsed = time.perf_counter() - started
    menu.kill()
    menu.wait()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each, the median reported")
    arguments = parser.parse_args()
    from inference.locate import bundled_chat_model
    model = bundled_chat_model(ROOT / "models")
    with tempfile.TemporaryDirectory(prefix="apprenti-cold-") as home:
        env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
        env |= {"APPRENTI_HOME": home, "ANONYMIZED_TELEMETRY": "False"}
        (Path(home) / "models").mkdir()
        (Path(home) / "models" / model.name).symlink_to(model)
        cli = [sys.executable, "cli_app.py"]
        timed([*cli, "add", "--id", "mascot", FACT], env)  # exports the embedding model, once
        timed([*cli, "ask", QUESTION], env)  # converts the chat model, once
        cases = {"python -c 'import torch'": lambda number: timed([sys.executable, "-c", "import torch"], env),
                 "ask (a grounded answer)": lambda number: timed([*cli, "ask", QUESTION], env),
                 "add (a short text)": lambda number: timed([*cli, "add", "--id", f"note{number}",
                                                              f"Note {number}: the heron sleeps at noon."], env),
                 "menu: first answer": lambda number: menu_first_answer(env)}
        results = {name: [] for name in cases}
        for number in range(arguments.runs):  # interleaved, so that a slower moment falls on every case alike
            for name, case in cases.items():
                results[name].append(case(number))
    torch_seconds = statistics.median(results["python -c 'import torch'"])
    print(f"Cold starts, median of {arguments.runs} runs (min-max), {os.cpu_count()} CPUs:")
    print(f"| {'what':<26} | {'seconds':>16} | {'x import torch':>14} |")
    print(f"| {'-' * 26} | {'-' * 16}:| {'-' * 14}:|")
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"| {name:<26} | {median:5.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
              f"{median / torch_seconds:14.2f} |")


if __name__ == "__main__":
    main()
