"""Learning from instructions and preferences: sft, train-reward, score, align, learn-from-feedback (menu 9).
Each trains in a subprocess (alignment/jobs.py) and reports what the promotion gate decided."""
from __future__ import annotations

from pathlib import Path

from cli.learning import report_verdict
from cli.progress import TrainingProgress
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import Settings


def learning_options(parser) -> None:
    from alignment.methods import LearnConfig
    LearnConfig.add_arguments(parser)


def run(settings: Settings, job: list[str], arguments) -> dict | None:
    from alignment.jobs import run_job
    from alignment.methods import LearnConfig
    config = LearnConfig.from_arguments(arguments) if arguments is not None else LearnConfig()
    progress = TrainingProgress()
    try:
        return run_job(job, config, settings, progress)
    finally:
        progress.close()


def report_version(manifest: dict | None, texts: dict) -> None:
    """What a run trained, and the gate's verdict."""
    if manifest is None:
        print(texts["unchanged"])
        return
    training = manifest["training"]
    print(texts["trained"].format(seconds=training["seconds"], steps=training["steps"], rows=training["rows"],
                                  what=manifest["examples_kind"], replayed=training["replayed"]))
    if "test_loss_before" in training:
        print(f"Loss on the test rows: {training['test_loss_before']:.3f} -> {training['test_loss_after']:.3f}.")
    if "reward_first_quarter" in training:
        print(f"Mean reward of the sampled answers: {training['reward_first_quarter']:.3f} (first quarter of the "
              f"steps) -> {training['reward_last_quarter']:.3f} (last quarter).")
    findings = manifest.get("gate", {}).get("findings", [])
    if findings:
        print("Measured by the gate (in use -> new): " + ", ".join(
            f"{finding['metric']} {finding['champion']:.4g} -> {finding['candidate']:.4g}" for finding in findings))
    report_verdict(manifest, texts)


def report_reward_model(manifest: dict | None, texts: dict) -> None:
    if manifest is None:
        print("A reward model was already trained on these pairs with these settings: nothing to do (--force "
              "trains anyway).")
        return
    metrics = manifest["metrics"]
    print(texts["reward_trained"].format(version=manifest["id"], accuracy=metrics["pairwise_accuracy"],
                                         measured=metrics["measured_on"], verdict=manifest["verdict"]))


@command("sft", "instruction tuning (LoRA) on data/train.jsonl, evaluated on data/test.jsonl, then the gate",
         option("--train", help="instruction rows (default: data/train.jsonl)"),
         option("--test", help="held-out rows for the evaluation loss (default: data/test.jsonl, if present)"),
         learning_options)
def sft(settings: Settings, arguments) -> int:
    """Instruction tuning. Rows in any of these forms: {"instruction", "input", "output"},
    {"messages": [...]}, {"prompt", "completion"}, {"question", "context", "answer"}; the loss is on the
    answers only."""
    job = ["sft"]  # paths made absolute: the training subprocess runs in the project folder
    for flag, path in (("--train", arguments.train), ("--test", arguments.test)):
        job += [flag, str(Path(path).expanduser().resolve())] if path else []
    report_version(run(settings, job, arguments), TEXTS["en"])
    return 0


@command("train-reward", "train the reward model on the preference pairs (data/dataset_rlhf.jsonl)",
         learning_options)
def train_reward(settings: Settings, arguments) -> int:
    report_reward_model(run(settings, ["train-reward"], arguments), TEXTS["en"])
    return 0


@command("score", "print the reward model's score of an answer",
         option("--question", required=True), option("--answer", required=True),
         option("--context-id", action="append", default=[], help="a knowledge-base passage the question was asked "
                                                                  "with (repeatable; ids as 'ask --json' shows them)"))
def score(settings: Settings, arguments) -> int:
    from alignment.reward import score as reward_score
    passages = []
    if arguments.context_id:
        from knowledge_base import KnowledgeBase
        passages = [text for _, text in KnowledgeBase.open(settings).passages(arguments.context_id)]
    print(f"{reward_score(settings, arguments.question, arguments.answer, passages):.4f}")
    return 0


@command("align", "learn from preferences: DPO, KTO, or online with the reward model (PPO, RLOO, GRPO)",
         option("--method", required=True, choices=["dpo", "kto", "ppo", "rloo", "grpo"]), learning_options)
def align(settings: Settings, arguments) -> int:
    """DPO learns from data/dataset_rlhf.jsonl (pairs), KTO from data/dataset_kto.jsonl (rated answers); PPO,
    RLOO and GRPO sample answers to the feedback's questions and learn from the reward model's scores."""
    report_version(run(settings, ["align", "--method", arguments.method], arguments), TEXTS["en"])
    return 0


def learn_from_feedback_run(settings: Settings, arguments, texts: dict) -> None:
    summary = run(settings, ["learn-from-feedback"], arguments)
    feedback = summary["feedback"]
    print(texts["learned_from"].format(entries=feedback["entries"], pairs=feedback["pairs"],
                                       rated=feedback["rated_answers"], method=summary["method"].upper()))
    if "reward_model" in summary:
        report_reward_model(summary["reward_model"], texts)
    report_version(summary["version"], texts)


@command("learn-from-feedback", "merge the feedback, train the reward model, align (DPO or KTO), then the gate",
         learning_options)
def learn_from_feedback(settings: Settings, arguments) -> int:
    learn_from_feedback_run(settings, arguments, TEXTS["en"])
    return 0


def menu_learn_from_feedback(assistant, texts: dict) -> None:
    learn_from_feedback_run(assistant.settings, None, texts)
