"""Teaching facts by fine-tuning, on the bundled model, through the product's own path (README, "Teaching facts").

    .venv/bin/python bench/teaching.py [--variants recipe,no-general-replay,...] [--rounds 2]   (make bench runs it)

Each variant is a FineTuneConfig of fine_tune_model.py. Facts no model has seen (bench/taught_facts.jsonl: 12
invented facts, 2 in French, in two rounds of 6) are taught as a user does (`learn`, then `finetune`, the gate
off so that every round is kept), and after each round the model is asked, closed-book as `ask --no-rag` asks:
- the facts: two questions a fact, written by hand in other words than any training question (the fact's
  reference word in the answer counts as right), for the facts of each round so far;
- general questions: evaluation/general_questions.jsonl (which the base model answers right), the reference in
  the answer counting as right; and three questions a taught fact could take over ("What do you know about Mars?").
Printed: per variant and round, training seconds and steps, each round's facts answered, general questions kept.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

FACTS = ROOT / "bench" / "taught_facts.jsonl"
TAKEOVERS = ["What do you know about Mars?", "Tell me about the Moon.", "Qui a écrit Les Misérables ?"]
VARIANTS = {
    "recipe (default)": {},
    "no general replay": {"replay_general": 0.0},
    "anchor weight 1": {"anchor_weight": 1.0},
    "no replay of round 1": {"replay_taught": 0.0},
    "one epoch": {"epochs": 1},
    "lr 3e-4": {"learning_rate": 3e-4},
}


def right(answer: str, reference: str) -> bool:
    from evaluation.metrics import normalize
    return any(re.search(rf"\b{re.escape(normalize(option))}\b", normalize(answer)) for option in reference.split("|"))


def closed_book(assistant, question: str) -> str:
    return assistant.ask(question, use_rag=False, max_new_tokens=64, check=False).answer


def run_variant(name: str, overrides: dict, rounds: int, facts: list[dict], general: list[dict]) -> list[dict]:
    from common.config import Settings
    from evaluation.metrics import answer_contains
    from fine_tune_model import FineTuneConfig, train
    from rag_module import Assistant
    from training.learning_data import append_entry
    rows = []
    with tempfile.TemporaryDirectory(prefix="apprenti-bench-teaching-") as home:
        os.environ["APPRENTI_HOME"], os.environ["APPRENTI_GATE"] = home, "false"
        settings = Settings.load()
        for round_number in range(1, rounds + 1):
            for fact in facts:
                if fact["round"] == round_number:
                    append_entry(settings.learning_data, fact["entry"])
            started = time.perf_counter()
            manifest = train(settings, FineTuneConfig(**overrides), lambda event: None)
            seconds = time.perf_counter() - started
            assistant = Assistant(Settings.load(), log_answers=False)
            row = {"variant": name, "round": round_number, "training_seconds": manifest["training"]["seconds"],
                   "run_seconds": round(seconds), "steps": manifest["training"]["steps"]}
            for asked_round in range(1, round_number + 1):
                questions = [q for fact in facts if fact["round"] == asked_round for q in fact["questions"]]
                row[f"round {asked_round} facts"] = sum(right(closed_book(assistant, q), a) for q, a in questions)
                row[f"round {asked_round} questions"] = len(questions)
            row["general"] = sum(answer_contains(closed_book(assistant, g["question"]), g["answers"]) > 0
                                 for g in general)
            row["takeovers"] = {question: closed_book(assistant, question)[:100] for question in TAKEOVERS}
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    return rows


def base_row(facts: list[dict], general: list[dict]) -> dict:
    from common.config import Settings
    from evaluation.metrics import answer_contains
    from rag_module import Assistant
    with tempfile.TemporaryDirectory(prefix="apprenti-bench-teaching-") as home:
        os.environ["APPRENTI_HOME"] = home
        assistant = Assistant(Settings.load(), log_answers=False)
        questions = [q for fact in facts for q in fact["questions"]]
        return {"variant": "base model", "facts": sum(right(closed_book(assistant, q), a) for q, a in questions),
                "questions": len(questions),
                "general": sum(answer_contains(closed_book(assistant, g["question"]), g["answers"]) > 0
                               for g in general)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="recipe (default),no general replay",
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    from evaluation.evaluate import GENERAL_QUESTIONS
    facts = [json.loads(line) for line in FACTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    general = [json.loads(line) for line in GENERAL_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    base = base_row(facts, general)
    print(json.dumps(base), flush=True)
    rows = []
    for name in arguments.variants.split(","):
        rows += run_variant(name.strip(), VARIANTS[name.strip()], arguments.rounds, facts, general)
    print(f"\n| variant | round | training s (steps) | round 1 facts | round 2 facts | general questions |\n"
          f"| --- | ---: | ---: | ---: | ---: | ---: |\n"
          f"| base model | - | - | {base['facts']}/{base['questions']} (both rounds) | | "
          f"{base['general']}/{len(general)} |")
    for row in rows:
        second = (f"{row['round 2 facts']}/{row['round 2 questions']}" if "round 2 facts" in row else "")
        print(f"| {row['variant']} | {row['round']} | {row['training_seconds']:.0f} ({row['steps']}) | "
              f"{row['round 1 facts']}/{row['round 1 questions']} | {second} | {row['general']}/{len(general)} |")


if __name__ == "__main__":
    main()
