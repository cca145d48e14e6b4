"""Fine-tuning: continued pretraining of the base model on all of learning_data.txt, on the CPU, with
transformers' Trainer (LoRA adapters by default) through the training core (training/core.py).

Plain text needs no more than the Trainer: trl's SFTTrainer computes its loss through a tiled LM head, which
trained the bundled model with LoRA at 0.73x the tokens/s and 1.19x the memory here (bench/training_speed.py);
trl's trainers serve the instruction and preference steps, which need what they add.

The CLI runs this file as a subprocess (`run_fine_tuning`), which reports progress as JSON lines on stdout.
The trained model becomes a new version (models/versions/<id>/), which the promotion gate evaluates and makes
the champion (tinyllama_finetuned/, the model in use) only if it does not regress.

    python fine_tune_model.py [--method lora|full] [--epochs N] [--max-steps N] [--force]
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report, run_training_process, training_process_main
from training.options import Options


@dataclass
class FineTuneConfig(Options):
    method: str = field(default="lora", metadata={"help": "lora (adapters, default) or full (every weight)",
                                                  "choices": ["lora", "full"]})
    epochs: int = field(default=3, metadata={"help": "passes over the learning data", "least": 1})
    min_steps: int = field(default=40, metadata={"help": "small data is repeated up to this many steps", "least": 0})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0: no limit)", "least": 0})
    learning_rate: float = field(default=0.0, metadata={"help": "0: 3e-4 for lora, 3e-5 for full"})
    batch_size: int = field(default=4, metadata={"help": "samples per step", "least": 1})
    block_size: int = field(default=256, metadata={"help": "tokens per sample; longer entries are split"})
    lora_rank: int = field(default=16, metadata={"help": "rank of the LoRA adapters", "least": 1})
    seed: int = field(default=0, metadata={"help": "random seed, for runs that repeat"})
    force: bool = field(default=False, metadata={"help": "train even when the data and settings have not changed"})

    def __post_init__(self):
        problems = self.problems()
        if self.method not in {"lora", "full"}:
            problems.append(f"method={self.method!r}: use 'lora' or 'full'")
        if not 16 <= self.block_size <= 8192:
            problems.append(f"block_size={self.block_size}: use 16 to 8192 tokens")
        if self.learning_rate < 0:
            problems.append(f"learning_rate={self.learning_rate}: use a positive rate, or 0 for the default")
        if problems:
            raise ValueError("; ".join(problems))
        if not self.learning_rate:
            self.learning_rate = 3e-4 if self.method == "lora" else 3e-5

    def steps_for(self, samples: int) -> int:
        batches = math.ceil(samples / self.batch_size)
        steps = max(self.epochs * batches, self.min_steps)
        return min(steps, self.max_steps) if self.max_steps else steps


def train(settings: Settings, config: FineTuneConfig, report: Report) -> dict | None:
    """Fine-tune, and make the result a version that the promotion gate judges; returns its manifest, or
    None when a version was already trained from this base model, data and configuration."""
    import gc
    import torch
    from transformers import Trainer, TrainingArguments
    from evaluation.gate import publish_through_gate
    from inference.loading import quiet_transformers
    from inference.locate import resolve_base_model
    from training.core import (already_trained, as_dataset, causal_lm_batches, general_text_blocks, load_for_training,
                               perplexity, progress_callback, quiet, save_model, scratch_dir, staged_version,
                               starting_point, token_blocks, trainer_arguments, with_lora)
    from training.learning_data import data_fingerprint, read_entries

    entries = read_entries(settings.learning_data)
    if not entries:
        raise ApprentiError(f"{settings.learning_data.name} has no entries yet: give learning data first "
                            "(menu 3, or 'python cli_app.py learn TEXT')")
    base = resolve_base_model(settings)
    fingerprint = data_fingerprint(entries)
    parent, source = starting_point(settings)
    inputs = {"base_model": base.name, "method": "pretraining", "data_sha256": fingerprint,
              "config": config.training_settings()}
    if not config.force and already_trained(settings, inputs):
        return None

    torch.manual_seed(config.seed)
    full = config.method == "full"
    started_at = datetime.now().isoformat(timespec="seconds")
    with quiet_transformers(), scratch_dir() as scratch:
        model, tokenizer = load_for_training(source, full)
        model = model if full else with_lora(model, config.lora_rank)
        samples = token_blocks(tokenizer, entries, config.block_size)
        texts = {"learning": samples, "general": general_text_blocks(tokenizer, config.block_size)}
        steps = config.steps_for(len(samples))
        arguments = trainer_arguments(TrainingArguments, Path(scratch), steps=steps, batch_size=config.batch_size,
                                      learning_rate=config.learning_rate, seed=config.seed)
        trainer = quiet(Trainer(model=model, args=arguments, train_dataset=as_dataset(samples),
                                data_collator=causal_lm_batches(tokenizer.pad_token_id),
                                callbacks=[progress_callback(report)]))

        def perplexities() -> dict:
            return {name: perplexity(trainer.model, blocks, tokenizer.pad_token_id) for name, blocks in texts.items()}

        before = perplexities()
        report({"event": "start", "model": source.name, "method": config.method, "entries": len(entries),
                "samples": len(samples), "steps": steps, "device": str(trainer.args.device),
                "dtype": "bfloat16" if arguments.bf16 else "float32", "perplexity_before": before["learning"],
                "perplexity_general_before": before["general"]})
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        after = perplexities()
        losses = [{"step": log["step"], "loss": log["loss"]} for log in trainer.state.log_history if "loss" in log]
        training = {"trainer": "transformers.Trainer", "entries": len(entries), "samples": len(samples),
                    "steps": steps, "final_loss": losses[-1]["loss"], "loss_history": losses,
                    "perplexity_before": before["learning"], "perplexity_after": after["learning"],
                    "perplexity_general_before": before["general"], "perplexity_general_after": after["general"],
                    "seconds": round(seconds, 1), "tokens_per_second": trainer.state.num_input_tokens_seen / seconds,
                    "started": started_at, "finished": datetime.now().isoformat(timespec="seconds")}
        with staged_version(settings) as (version_id, partial):
            save_model(trainer.model, tokenizer, partial, whole_model=full)
            trainer = model = None
            gc.collect()  # the trained model goes before the gate loads the candidate and the champion
            manifest = {**inputs, "parent": parent, "weights": config.method, "seed": config.seed,
                        "data": {"learning_data": {"file": settings.learning_data.name, "sha256": fingerprint,
                                                   "bytes": settings.learning_data.stat().st_size,
                                                   "entries": len(entries)}},
                        "training": training}
            return publish_through_gate(settings, version_id, partial, manifest, report)


def run_fine_tuning(settings: Settings, config: FineTuneConfig, on_event: Callable[[dict], None]) -> dict | None:
    """Run the fine-tuning in a subprocess, passing its progress events to `on_event`; returns the new
    version's manifest, or None when there was nothing to do. Ctrl-C stops the subprocess and is re-raised."""
    return run_training_process([str(Path(__file__).resolve()), *config.to_arguments()], settings, on_event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data dir (default: APPRENTI_HOME, else the project folder)")
    parser.add_argument("--model", help="base model: hub id or folder (default: APPRENTI_BASE_MODEL, else TinyLlama)")
    FineTuneConfig.add_arguments(parser)
    arguments = parser.parse_args(argv)

    def work(settings: Settings, report: Report) -> dict | None:
        return train(settings, FineTuneConfig.from_arguments(arguments), report)

    return training_process_main(lambda: Settings.load(home=arguments.home, base_model=arguments.model), work)


if __name__ == "__main__":
    raise SystemExit(main())
