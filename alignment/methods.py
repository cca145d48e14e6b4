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

import math
from dataclasses import dataclass, field
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report
from training.options import Options
from evaluation.gate import GatedRun

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

    def steps_for(self, rows: int, rows_per_step: int, whole_steps_only: bool = False) -> int:
        """`steps`, or `epochs` passes over `rows` (at least min_steps); `whole_steps_only`: as trl's GRPO and
        RLOO count a pass, which leaves out the rows of a last, incomplete step."""
        per_pass = rows // rows_per_step if whole_steps_only else math.ceil(rows / rows_per_step)
        return self.steps or max(self.epochs * max(per_pass, 1), self.min_steps)

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
            return row if split_of(record) == "train" else None
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
                  scratch: Path, reward=None):
    """trl's trainer for `method`, LoRA on the model (trl applies `peft_config`), for `config.epochs` passes over
    `rows` (at least `config.min_steps` steps), as each trainer counts a step: `batch_size` rows, PPO's
    `batch_size` prompts, GRPO's and RLOO's `batch_size` sampled answers, `generations` to each prompt."""
    import datasets
    import trl
    from datasets import Dataset
    from inference.loading import context_window
    from training.core import lora_config, trainer_arguments
    datasets.disable_progress_bars()  # its per-map bars; our own events say what happens
    window = context_window(model)
    # Every GRPO/RLOO step samples `generations` answers to each of its prompts, and compares them together.
    batch = math.ceil(config.batch_size / config.generations) * config.generations if method in ("grpo", "rloo") \
        else config.batch_size
    prompts_per_step = batch // config.generations if method in ("grpo", "rloo") else batch
    steps = config.steps_for(len(rows), prompts_per_step, whole_steps_only=method in ("grpo", "rloo"))
    common = dict(steps=steps, batch_size=batch, learning_rate=config.rate_for(method), seed=config.seed)
    train = Dataset.from_list(rows)
    peft_config = lora_config(config.lora_rank)
    if method == "sft":
        arguments = trainer_arguments(trl.SFTConfig, scratch, **common, max_length=window, completion_only_loss=True)
        return trl.SFTTrainer(model=model, args=arguments, train_dataset=train, processing_class=tokenizer,
                              eval_dataset=Dataset.from_list(test_rows) if test_rows else None,
                              peft_config=peft_config)
    if method in OFFLINE:
        config_class, trainer_class = (trl.DPOConfig, trl.DPOTrainer) if method == "dpo" else (trl.KTOConfig,
                                                                                              trl.KTOTrainer)
        arguments = trainer_arguments(config_class, scratch, **common, max_length=window, beta=config.beta)
        return trainer_class(model=model, args=arguments, train_dataset=train, processing_class=tokenizer,
                             peft_config=peft_config)
    reward_model, reward_tokenizer = reward
    if method == "ppo":
        import copy
        from trl.experimental.ppo import PPOConfig, PPOTrainer
        tokenizer.padding_side = "left"  # PPO generates a batch of prompts at once
        prompts = [tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"] for row in rows]
        arguments = trainer_arguments(PPOConfig, scratch, **{**common, "steps": -1}, kl_coef=config.beta,
                                      response_length=config.answer_tokens, total_episodes=steps * batch,
                                      num_ppo_epochs=1, num_mini_batches=1, local_rollout_forward_batch_size=batch,
                                      stop_token_id=tokenizer.eos_token_id, temperature=0.9, missing_eos_penalty=None)
        return PPOTrainer(args=arguments, processing_class=tokenizer, model=model, ref_model=None,
                          reward_model=reward_model, value_model=copy.deepcopy(reward_model),
                          train_dataset=Dataset.from_dict({"input_ids": prompts}), peft_config=peft_config)
    config_class, trainer_class = (trl.RLOOConfig, trl.RLOOTrainer) if method == "rloo" else (trl.GRPOConfig,
                                                                                            trl.GRPOTrainer)
    arguments = trainer_arguments(config_class, scratch, **common,
                                  num_generations=config.generations, max_completion_length=config.answer_tokens,
                                  beta=config.beta, temperature=0.9, log_completions=False)
    return trainer_class(model=model, reward_funcs=reward_model, args=arguments, train_dataset=train,
                         processing_class=tokenizer, reward_processing_classes=reward_tokenizer,
                         peft_config=peft_config)


# ---------------------------------------------------------------- a run

class MethodRun(GatedRun):
    """A run of one of METHODS on the training lifecycle (training/run.py): its data, its trl trainer."""

    def __init__(self, settings: Settings, method: str, config: LearnConfig, report: Report,
                 train_path: Path | None = None, test_path: Path | None = None):
        if method not in METHODS:
            raise ApprentiError(f"no learning method '{method}': use one of {', '.join(METHODS)}")
        super().__init__(settings, config, report)
        self.method, self.paths = method, (train_path, test_path)
        self.reward = None

    def read_data(self) -> None:
        self.train, self.test = read_data(self.settings, self.method, *self.paths)

    def data_fingerprint(self) -> str:
        return self.train.fingerprint()

    def data_record(self) -> dict:
        return {KIND[self.method]: self.train.describe(), **({"test": self.test.describe()} if self.test else {})}

    def load(self, source):
        from inference.loading import context_window
        from inference.versions import Versions
        from training.examples import fitting, replay_sample
        self.reward = load_reward_for(self.settings, self.method)
        model, tokenizer = super().load(source)
        window = context_window(model)
        for examples in (self.train, self.test) if self.test else (self.train,):
            fitting(examples, tokenizer, window, self.config.answer_tokens if self.method in ONLINE else ANSWER_ROOM)
        for problem in self.train.problems:
            self.report({"event": "notice", "message": problem})
        parent = Versions(self.settings).champion()
        self.replayed, self.replayed_from = replay_sample(Versions(self.settings), parent, KIND[self.method],
                                                          round(self.config.replay * len(self.train.rows)),
                                                          self.config.seed)
        return model, tokenizer

    def trainer(self, model, tokenizer, scratch: Path):
        rows = self.train.rows + self.replayed
        return build_trainer(self.method, model, tokenizer, rows, self.test.rows if self.test else None, self.config,
                             scratch, self.reward)

    def start_event(self) -> dict:
        return {"entries": len(self.train.rows), "samples": len(self.train.rows) + len(self.replayed),
                "what": KIND[self.method]}

    def measure(self, trainer, tokenizer) -> dict:
        return {"test_loss": trainer.evaluate()["eval_loss"]} if self.test else {}

    def figures(self, trainer) -> dict:
        figures = {"rows": len(self.train.rows), "replayed": len(self.replayed), "replayed_from": self.replayed_from,
                   "skipped_rows": self.train.problems, **({"test_rows": len(self.test.rows)} if self.test else {})}
        logs = trainer.state.log_history
        rewards = [log[name] for log in logs for name in ("reward", "objective/scores") if name in log]
        if self.method in ONLINE and rewards:
            quarter = max(1, len(rewards) // 4)
            figures["reward_first_quarter"] = sum(rewards[:quarter]) / quarter
            figures["reward_last_quarter"] = sum(rewards[-quarter:]) / quarter
        return figures

    def stage(self, trainer, tokenizer, folder: Path) -> None:
        from training.examples import write_examples
        super().stage(trainer, tokenizer, folder)
        write_examples(folder, self.train.rows)

    def release(self) -> None:
        self.reward = None

    def publish(self, version_id: str, partial: Path, manifest: dict) -> dict:
        return super().publish(version_id, partial, {**manifest, "examples_kind": KIND[self.method]})


def learn(settings: Settings, method: str, config: LearnConfig, report: Report, train_path: Path | None = None,
          test_path: Path | None = None) -> dict | None:
    """Train a candidate with `method` from the champion and pass it through the promotion gate; returns the
    new version's manifest, or None when one was already trained from the same champion, data and settings."""
    return MethodRun(settings, method, config, report, train_path, test_path).run()


def load_reward_for(settings: Settings, method: str):
    """The reward model and its tokenizer for an online method (None for the others)."""
    if method not in ONLINE:
        return None
    from alignment.reward import load_reward_model
    return load_reward_model(settings)
