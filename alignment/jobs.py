"""The training subprocess of the instruction, reward and preference methods (the CLI runs it with
`run_job`; training/core.py says why a subprocess):

    python -m alignment.jobs sft [--train PATH] [--test PATH] [options]
    python -m alignment.jobs train-reward [options]
    python -m alignment.jobs align --method dpo|kto|ppo|rloo|grpo [options]
    python -m alignment.jobs learn-from-feedback [options]
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Callable

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report, run_training_process, training_process_main
from alignment.methods import MIN_ROWS, OFFLINE, ONLINE, LearnConfig, learn
from alignment.reward import MIN_PAIRS, train_reward

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def learn_from_feedback(settings: Settings, config: LearnConfig, report: Report) -> dict:
    """Merge the feedback, train the reward model when there are enough pairs, then align: DPO with pairs,
    KTO with thumbs alone. Returns what changed."""
    from feedback.datasets import merge
    from feedback.records import read
    if not read(settings.feedback_file)[0]:  # merging nothing would empty the datasets someone may have written
        raise ApprentiError("there is no feedback yet: rate answers (menu 1 or 7) first; 'align --method dpo|kto' "
                            "learns from data/dataset_rlhf.jsonl or data/dataset_kto.jsonl as they are")
    report({"event": "stage", "stage": "merging the feedback"})
    merged = merge(settings.feedback_file, settings.rlhf_dataset, settings.kto_dataset)
    summary = {"feedback": {"entries": merged.entries, "pairs": merged.pairs, "train_pairs": merged.train,
                            "rated_answers": merged.kto, "broken_lines": merged.broken_lines}}
    if merged.train >= MIN_PAIRS:
        summary["reward_model"] = train_reward(settings, config, report)
        method = "dpo"
    elif merged.kto >= MIN_ROWS["kto"]:
        method = "kto"
    else:
        raise ApprentiError(f"too little feedback to learn from: {merged.train} preference pairs to train on and "
                            f"{merged.kto} rated answers, where DPO needs {MIN_ROWS['dpo']} pairs and KTO "
                            f"{MIN_ROWS['kto']} rated answers: rate more answers (menu 7)")
    summary["method"] = method
    summary["version"] = learn(settings, method, config, report)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data dir (default: APPRENTI_HOME, else the project folder)")
    jobs = parser.add_subparsers(dest="job", required=True)
    sft = jobs.add_parser("sft")
    sft.add_argument("--train", type=Path)
    sft.add_argument("--test", type=Path)
    align = jobs.add_parser("align")
    align.add_argument("--method", choices=[*OFFLINE, *ONLINE], required=True)
    for job in (sft, align, jobs.add_parser("train-reward"), jobs.add_parser("learn-from-feedback")):
        LearnConfig.add_arguments(job)
    arguments = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)  # trl's notes on figures of one-sample batches

    def work(settings: Settings, report: Report) -> dict | None:
        config = LearnConfig.from_arguments(arguments)
        if arguments.job == "sft":
            return learn(settings, "sft", config, report, arguments.train, arguments.test)
        if arguments.job == "align":
            return learn(settings, arguments.method, config, report)
        if arguments.job == "train-reward":
            return train_reward(settings, config, report)
        return learn_from_feedback(settings, config, report)

    return training_process_main(lambda: Settings.load(home=arguments.home), work)


def run_job(job: list[str], config: LearnConfig, settings: Settings, on_event: Callable[[dict], None]) -> dict | None:
    """Run a job (["sft", "--train", PATH], ["align", "--method", "dpo"], ...) in a training subprocess."""
    return run_training_process(["-m", "alignment.jobs", *job, *config.to_arguments()], settings, on_event)


if __name__ == "__main__":
    raise SystemExit(main())
