"""The reward model (step 5 of the pipeline sketch): the base model with a one-number head, trained with trl's
RewardTrainer on the preference pairs to score the chosen answer above the rejected one. It is versioned like
the chat models, in models/reward_model/ (inference/versions.py, family "reward"): a new one is used only if it
ranks the held-out pairs at least as well as the one in use. The online methods (PPO, RLOO, GRPO) learn from
its scores, and `python cli_app.py score` prints one.
"""
from __future__ import annotations

import gc
import time
from datetime import datetime
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report

MIN_PAIRS = 4  # the fewest from which bench/learning.py's reward model ranked unseen pairs of a taste right
NOISE = 0.05  # a new reward model may rank held-out pairs this much worse than the one in use and still replace it


def split_pairs(settings: Settings):
    """The preference pairs, as train and held-out examples (merge-feedback's split, by prompt)."""
    from feedback.datasets import split_of
    from training.examples import preference_pair, read_examples
    pairs = read_examples(settings.rlhf_dataset, lambda record: (split_of(str(record.get("prompt", ""))),
                                                                  preference_pair(record)), "preference pairs")
    train = [example.row[1] for example in pairs.items if example.row[0] == "train"]
    test = [example.row[1] for example in pairs.items if example.row[0] == "test"]
    return pairs, train, test


def conversations(rows: list[dict], answer: str) -> list[list[dict]]:
    return [row["prompt"] + row[answer] for row in rows]


def scores(model, tokenizer, chats: list[list[dict]]) -> list[float]:
    """The reward of each conversation (a prompt and its answer), one at a time: no padding to get wrong."""
    import torch
    from inference.loading import context_window
    found = []
    with torch.inference_mode():
        for chat in chats:
            ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
            ids = torch.tensor([ids[-context_window(model):]], device=model.device)
            found.append(float(model(input_ids=ids).logits[0, 0]))
    return found


def pairwise_accuracy(model, tokenizer, rows: list[dict]) -> float:
    chosen = scores(model, tokenizer, conversations(rows, "chosen"))
    rejected = scores(model, tokenizer, conversations(rows, "rejected"))
    return sum(good > bad for good, bad in zip(chosen, rejected)) / len(rows)


def load_classifier(path: Path, adapters: tuple[Path, ...] = ()):
    """The model at `path` with a one-number head (random until trained), in fp32: the head and adapters are
    trained weights, which bf16 would round."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from inference.loading import quiet_transformers, with_adapters
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                   use_safetensors=True)
        model = with_adapters(model, adapters, merge_all=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def load_reward_model(settings: Settings):
    """The reward model in use and its tokenizer."""
    from inference.versions import BASE, Versions
    versions = Versions(settings, "reward")
    current = versions.champion()
    if current == BASE:
        raise ApprentiError("there is no reward model yet: 'python cli_app.py train-reward' trains one from the "
                            "preference pairs")
    source = versions.source(current)
    return load_classifier(source.path, source.adapters)


def train_reward(settings: Settings, config, report: Report) -> dict | None:
    """Train a reward model on the train split of the pairs; it replaces the one in use unless it ranks the
    held-out pairs worse. Returns its manifest, or None when one was trained from the same data and settings."""
    import torch
    import trl
    from datasets import Dataset
    from inference.loading import context_window
    from inference.locate import resolve_base_model
    from inference.versions import BASE, Versions
    from training.core import (already_trained, lora_config, progress_callback, quiet, save_model, scratch_dir,
                               staged_version, trainer_arguments)

    pairs, train, test = split_pairs(settings)
    if len(train) < MIN_PAIRS:
        raise ApprentiError(f"a reward model needs at least {MIN_PAIRS} preference pairs to train on; "
                            f"{settings.rlhf_dataset.name} has {len(train)} (and {len(test)} held out): compare more "
                            "answers (menu 7), then 'python cli_app.py merge-feedback'")
    for problem in pairs.problems:
        report({"event": "notice", "message": problem})
    base = resolve_base_model(settings)
    inputs = {"base_model": base.name, "method": "reward", "data_sha256": pairs.fingerprint(),
              "config": config.training_settings()}
    if not config.force and already_trained(settings, inputs, "reward"):
        return None
    held_out = test or train  # too few pairs for a held-out split: said in the manifest and the summary
    torch.manual_seed(config.seed)
    started_at = datetime.now().isoformat(timespec="seconds")
    with scratch_dir() as scratch:
        model, tokenizer = load_classifier(base.path)
        steps = config.steps_for(len(train), config.batch_size)
        arguments = trainer_arguments(trl.RewardConfig, Path(scratch), steps=steps, batch_size=config.batch_size,
                                      learning_rate=config.rate_for("reward"), seed=config.seed,
                                      max_length=context_window(model))
        trainer = quiet(trl.RewardTrainer(
            model=model, args=arguments, train_dataset=Dataset.from_list(train), processing_class=tokenizer,
            peft_config=lora_config(config.lora_rank, task_type="SEQ_CLS", modules_to_save=["score"]),
            callbacks=[progress_callback(report)]))
        report({"event": "start", "model": f"{base.name} (reward model)", "method": "reward", "entries": len(train),
                "samples": len(train), "steps": steps, "device": str(trainer.args.device),
                "dtype": "bfloat16" if arguments.bf16 else "float32", "what": "pairs"})
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        accuracy = pairwise_accuracy(trainer.model.eval(), tokenizer, held_out)
        versions = Versions(settings, "reward")
        current = versions.champion()
        current_accuracy = None
        if current != BASE:
            current_model, _ = load_reward_model(settings)
            current_accuracy = pairwise_accuracy(current_model, tokenizer, held_out)
            current_model = None
        promoted = current_accuracy is None or accuracy >= current_accuracy - NOISE
        losses = [{"step": log["step"], "loss": log["loss"]} for log in trainer.state.log_history if "loss" in log]
        with staged_version(settings, "reward") as (version_id, partial):
            save_model(trainer.model, tokenizer, partial, whole_model=False)
            trainer = model = None
            gc.collect()
            manifest = {**inputs, "parent": BASE, "weights": "lora", "seed": config.seed,
                        "data": {"pairs": pairs.describe(), "train_pairs": len(train), "held_out_pairs": len(test)},
                        "training": {"trainer": "trl.RewardTrainer", "steps": steps, "seconds": round(seconds, 1),
                                     "seconds_per_step": round(seconds / steps, 2), "loss_history": losses,
                                     "final_loss": losses[-1]["loss"] if losses else None,
                                     "started": started_at, "finished": datetime.now().isoformat(timespec="seconds")},
                        "metrics": {"pairwise_accuracy": accuracy,
                                    "measured_on": "held-out pairs" if test else "the training pairs (none held out)"},
                        "verdict": "promoted" if promoted else "refused",
                        "gate": {"champion": current, "champion_accuracy": current_accuracy, "noise": NOISE}}
            version = versions.publish(version_id, partial, manifest)
        if promoted:
            versions.set_champion(version.id, "promoted", accuracy=accuracy)
        else:
            versions.record("refused", version.id, accuracy=accuracy, champion_accuracy=current_accuracy)
        return version.manifest


def score(settings: Settings, question: str, answer: str, passages: list[str]) -> float:
    """The reward model's score of `answer` to `question` asked with `passages`."""
    from training.examples import assistant_turn, grounded_prompt
    if not question.strip() or not answer.strip():
        raise ApprentiError("give both a question and an answer to score")
    model, tokenizer = load_reward_model(settings)
    return scores(model, tokenizer, [grounded_prompt(question, passages) + assistant_turn(answer)])[0]
