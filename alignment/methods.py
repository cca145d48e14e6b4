"""Learning from instructions and preferences, with trl's trainers on the training core: SFT (instruction
tuning), DPO and KTO (offline preferences), and PPO, RLOO and GRPO (online: answers sampled and scored by the
reward model, alignment/reward.py).

Every run starts from the champion and trains LoRA adapters on top of it (a LoRA champion's adapters merged
in fp32 first; the new version keeps its own adapter and names the champion its parent, inference/versions.py).
With LoRA the reference model of DPO, KTO and the online methods is the new adapter switched off, that is the
champion itself, not a second copy in memory. A sample of the rows earlier runs of the same kind learned is
mixed in against forgetting (`--replay`). The result is a candidate version that the promotion gate judges.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report
from training.options import Options

OFFLINE = ("dpo", "kto")
ONLINE = ("ppo", "rloo", "grpo")
METHODS = ("sft", *OFFLINE, *ONLINE)
# What each method learns from, and the least of it a run accepts: 4 pairs were the fewest from which
# bench/learning.py's reward model ranked unseen pairs of a taste right; fewer is a message, not a run.
MIN_ROWS = {"sft": 1, "dpo": 4, "kto": 4, "ppo": 4, "rloo": 4, "grpo": 4}
KIND = {"sft": "instructions", "dpo": "pairs", "kto": "thumbs", "ppo": "prompts", "rloo": "prompts", "grpo": "prompts"}
LEARNING_RATES = {"sft": 3e-4, "dpo": 2e-4, "kto": 2e-4, "ppo": 5e-5, "rloo": 1e-4, "grpo": 1e-4, "reward": 2e-4}
ANSWER_ROOM = 16  # tokens of the context window a training prompt must leave for its answer


@dataclass
class LearnConfig(Options):
    steps: int = field(default=0, metadata={"help": "training steps (0: `epochs` passes, at least min-steps)",
                                            "least": 0})
    epochs: int = field(default=3, metadata={"help": "passes over the data", "least": 1})
    min_steps: int = field(default=20, metadata={"help": "small data is repeated up to this many steps", "least": 0})
    learning_rate: float = field(default=0.0, metadata={"help": "0: the method's default"})
    batch_size: int = field(default=4, metadata={"help": "rows per step (online methods: sampled answers)",
                                                 "least": 2})
    lora_rank: int = field(default=16, metadata={"help": "rank of the LoRA adapters", "least": 1})
    beta: float = field(default=0.1, metadata={"help": "DPO/KTO/online: how strongly the model is held to where it "
                                                       "started"})
    generations: int = field(default=4, metadata={"help": "online methods: answers sampled per question",
                                                  "least": 2})
    answer_tokens: int = field(default=48, metadata={"help": "online methods: tokens per sampled answer",
                                                     "least": 4})
    replay: float = field(default=0.25, metadata={"help": "earlier runs' rows mixed in, as a share of the new ones"})
    qlora: bool = field(default=False, metadata={"help": "QLoRA: the base model in 4 bits (needs a CUDA GPU)"})
    seed: int = field(default=0, metadata={"help": "random seed, for runs that repeat"})
    force: bool = field(default=False, metadata={"help": "train even when the data and settings have not changed"})

    def __post_init__(self):
        problems = self.problems()
        if self.learning_rate < 0:
            problems.append(f"learning_rate={self.learning_rate}: use a positive rate, or 0 for the default")
        if not 0 <= self.replay <= 1:
            problems.append(f"replay={self.replay}: use a share from 0 to 1")
        if problems:
            raise ValueError("; ".join(problems))

    def steps_for(self, rows: int, batch_size: int) -> int:
        return self.steps or max(self.epochs * math.ceil(rows / batch_size), self.min_steps)

    def rate_for(self, method: str) -> float:
        return self.learning_rate or LEARNING_RATES[method]


# ---------------------------------------------------------------- the data of each method

def read_data(settings: Settings, method: str, train_path: Path | None = None, test_path: Path | None = None):
    """The train examples of `method`, and its test examples (SFT: the test file; the preference methods:
    held out by merge-feedback's split, which the gate's preference accuracy reads)."""
    from feedback.datasets import split_of
    from training.examples import (instruction, preference_pair, prompt_turns, read_examples, thumb,
                                   without_overlap)

    def train_split(parse):
        def parse_train(record: dict) -> dict | None:
            row = parse(record)
            return row if split_of(str(record.get("prompt", ""))) == "train" else None
        return parse_train

    if method == "sft":
        train = read_examples(train_path or settings.sft_train, instruction, "instructions")
        test_path = test_path or settings.sft_test
        test = read_examples(test_path, instruction, "instructions") if (
            test_path.is_file() or test_path != settings.sft_test) else None
        if test is not None:
            train.problems += test.problems + without_overlap(train, test)
            test.problems = []
            if not test.items:
                test = None
    elif method == "dpo":
        train, test = read_examples(settings.rlhf_dataset, train_split(preference_pair), "preference pairs"), None
    elif method == "kto":
        train, test = read_examples(settings.kto_dataset, train_split(thumb), "rated answers"), None
    else:  # the online methods sample answers to the feedback's questions
        train = questions_of_feedback(settings, train_split(lambda record: {"prompt": prompt_turns(record)}))
        test = None
    train.items = [example for example in train.items if example.row is not None]
    least = MIN_ROWS[method]
    if len(train.items) < least:
        raise ApprentiError(f"{method} needs at least {least} {KIND[method]} to learn anything; "
                            f"{train.path.name} has {len(train.items)}: rate more answers (menu 7), then "
                            "'python cli_app.py merge-feedback'")
    return train, test


def questions_of_feedback(settings: Settings, parse):
    """The distinct prompts of the preference pairs and rated answers."""
    from training.examples import Examples, prompt_key, read_examples
    found = Examples(settings.rlhf_dataset)
    seen = set()
    for path, what in ((settings.rlhf_dataset, "preference pairs"), (settings.kto_dataset, "rated answers")):
        if not path.is_file():
            continue
        try:
            examples = read_examples(path, parse, what)
        except ApprentiError:
            continue  # an empty file: the other may have questions
        found.problems += examples.problems
        for example in examples.items:
            if example.row is not None and prompt_key(example.row) not in seen:
                seen.add(prompt_key(example.row))
                found.items.append(example)
    return found


# ---------------------------------------------------------------- the trainers

def build_trainer(method: str, model, tokenizer, rows: list[dict], test_rows: list[dict] | None, config: LearnConfig,
                  steps: int, scratch: Path, callbacks: list, reward=None):
    """trl's trainer for `method`, LoRA on the model (trl applies `peft_config`)."""
    import datasets
    import trl
    from datasets import Dataset
    from inference.loading import context_window
    from training.core import lora_config, trainer_arguments
    datasets.disable_progress_bars()  # its per-map bars; our own events say what happens
    window = context_window(model)
    common = dict(steps=steps, batch_size=config.batch_size, learning_rate=config.rate_for(method), seed=config.seed)
    train = Dataset.from_list(rows)
    peft_config = lora_config(config.lora_rank)
    if method == "sft":
        arguments = trainer_arguments(trl.SFTConfig, scratch, **common, max_length=window, completion_only_loss=True)
        return trl.SFTTrainer(model=model, args=arguments, train_dataset=train, processing_class=tokenizer,
                              eval_dataset=Dataset.from_list(test_rows) if test_rows else None,
                              peft_config=peft_config, callbacks=callbacks)
    if method in OFFLINE:
        config_class, trainer_class = (trl.DPOConfig, trl.DPOTrainer) if method == "dpo" else (trl.KTOConfig,
                                                                                              trl.KTOTrainer)
        arguments = trainer_arguments(config_class, scratch, **common, max_length=window, beta=config.beta)
        return trainer_class(model=model, args=arguments, train_dataset=train, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=callbacks)
    reward_model, reward_tokenizer = reward
    if method == "ppo":
        import copy
        from trl.experimental.ppo import PPOConfig, PPOTrainer
        tokenizer.padding_side = "left"  # PPO generates a batch of prompts at once
        prompts = [tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"] for row in rows]
        batch = config.batch_size
        arguments = trainer_arguments(PPOConfig, scratch, **{**common, "steps": -1}, kl_coef=config.beta,
                                      response_length=config.answer_tokens, total_episodes=steps * batch,
                                      num_ppo_epochs=1, num_mini_batches=1, local_rollout_forward_batch_size=batch,
                                      stop_token_id=tokenizer.eos_token_id, temperature=0.9, missing_eos_penalty=None)
        return PPOTrainer(args=arguments, processing_class=tokenizer, model=model, ref_model=None,
                          reward_model=reward_model, value_model=copy.deepcopy(reward_model),
                          train_dataset=Dataset.from_dict({"input_ids": prompts}), peft_config=peft_config,
                          callbacks=callbacks)
    config_class, trainer_class = (trl.RLOOConfig, trl.RLOOTrainer) if method == "rloo" else (trl.GRPOConfig,
                                                                                            trl.GRPOTrainer)
    # Every step samples `generations` answers to each of its questions, and compares them with each other.
    batch = math.ceil(config.batch_size / config.generations) * config.generations
    arguments = trainer_arguments(config_class, scratch, **{**common, "batch_size": batch},
                                  num_generations=config.generations, max_completion_length=config.answer_tokens,
                                  beta=config.beta, temperature=0.9, log_completions=False)
    return trainer_class(model=model, reward_funcs=reward_model, args=arguments, train_dataset=train,
                         processing_class=tokenizer, reward_processing_classes=reward_tokenizer,
                         peft_config=peft_config, callbacks=callbacks)


def trained_model(trainer):
    """The PeftModel a trainer trained (PPO keeps it beside its value model)."""
    return getattr(trainer, "policy_model", None) or trainer.model


# ---------------------------------------------------------------- a run

def learn(settings: Settings, method: str, config: LearnConfig, report: Report, train_path: Path | None = None,
          test_path: Path | None = None) -> dict | None:
    """Train a candidate with `method` from the champion and pass it through the promotion gate; returns the
    new version's manifest, or None when one was already trained from the same champion, data and settings."""
    import torch
    from evaluation.gate import publish_through_gate
    from inference.loading import context_window, quiet_transformers
    from inference.locate import resolve_base_model
    from inference.versions import Versions
    from training.core import (already_trained, load_for_training, progress_callback, quiet, save_model, scratch_dir,
                               staged_version, starting_point)
    from training.examples import fitting, replay_sample, write_examples

    if method not in METHODS:
        raise ApprentiError(f"no learning method '{method}': use one of {', '.join(METHODS)}")
    train, test = read_data(settings, method, train_path, test_path)
    parent, source = starting_point(settings)
    inputs = {"base_model": resolve_base_model(settings).name, "method": method, "data_sha256": train.fingerprint(),
              "config": config.training_settings()}
    if not config.force and already_trained(settings, inputs):
        return None
    reward = load_reward_for(settings, method)
    torch.manual_seed(config.seed)
    started_at = datetime.now().isoformat(timespec="seconds")
    with quiet_transformers(), scratch_dir() as scratch:
        model, tokenizer = load_for_training(source, full=False, quantized=config.qlora)
        window = context_window(model)
        for examples in (train, test) if test else (train,):
            fitting(examples, tokenizer, window, config.answer_tokens if method in ONLINE else ANSWER_ROOM)
        for problem in train.problems:
            report({"event": "notice", "message": problem})
        versions = Versions(settings)
        replayed, replayed_from = replay_sample(versions, parent, KIND[method], round(config.replay * len(train.rows)),
                                                config.seed)
        rows = train.rows + replayed
        batch = config.batch_size
        steps = config.steps_for(len(rows), batch * (config.generations if method in ONLINE else 1))
        trainer = quiet(build_trainer(method, model, tokenizer, rows, test.rows if test else None, config, steps,
                                      Path(scratch), [progress_callback(report)], reward))
        report({"event": "start", "model": source.name, "method": method, "entries": len(train.rows),
                "samples": len(rows), "steps": steps, "device": str(trainer.args.device),
                "dtype": "bfloat16" if trainer.args.bf16 else "float32", "what": KIND[method]})
        test_loss_before = trainer.evaluate()["eval_loss"] if test else None
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        logs = [log for log in trainer.state.log_history if "loss" in log or "loss/policy_avg" in log]
        training = {"trainer": f"trl.{type(trainer).__name__}", "rows": len(train.rows), "replayed": len(replayed),
                    "replayed_from": replayed_from, "steps": steps, "seconds": round(seconds, 1),
                    "seconds_per_step": round(seconds / max(steps, 1), 2),
                    "loss_history": [{"step": log["step"], "loss": log.get("loss", log.get("loss/policy_avg"))}
                                     for log in logs],
                    "started": started_at, "finished": datetime.now().isoformat(timespec="seconds"),
                    "skipped_rows": train.problems}
        training["final_loss"] = training["loss_history"][-1]["loss"] if logs else None
        rewards = [log.get("reward", log.get("objective/scores")) for log in logs]
        if method in ONLINE and rewards:
            quarter = max(1, len(rewards) // 4)
            training["reward_first_quarter"] = sum(rewards[:quarter]) / quarter
            training["reward_last_quarter"] = sum(rewards[-quarter:]) / quarter
        if test:
            training.update(test_loss_before=test_loss_before, test_loss_after=trainer.evaluate()["eval_loss"],
                            test_rows=len(test.rows))
        with staged_version(settings) as (version_id, partial):
            save_model(trained_model(trainer), tokenizer, partial, whole_model=False)
            write_examples(partial, train.rows)
            trainer = model = reward = None
            gc.collect()  # the trained model goes before the gate loads the candidate and the champion
            data = {KIND[method]: train.describe(), **({"test": test.describe()} if test else {})}
            manifest = {**inputs, "parent": parent, "weights": "lora", "seed": config.seed, "examples_kind": KIND[method],
                        "data": data, "training": training}
            return publish_through_gate(settings, version_id, partial, manifest, report)


def load_reward_for(settings: Settings, method: str):
    """The reward model and its tokenizer for an online method (None for the others)."""
    if method not in ONLINE:
        return None
    from alignment.reward import load_reward_model
    return load_reward_model(settings)
