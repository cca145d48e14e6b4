"""Fine-tuning: teach the model itself the entries of learning_data.txt, so that it answers questions about them
without the knowledge base, asked in other words (training/teaching.py: each fact asked about in many ways and
answered with its own sentence, the loss on the answer only), on the CPU, with LoRA adapters by default.

What the run mixes, and why (measured by bench/teaching.py, README "Teaching facts"):
- the entries not taught yet, each as all its questions;
- a share of the questions of the entries earlier versions were taught, so that a second round keeps the first;
- the model's own answers to general requests (made once per base model and cached), so that a question that
  is not about a taught fact is answered as before, and the taught facts do not take over ("What do you know
  about Mars?" answered with a fact that names Mars).

The CLI runs this file as a subprocess (`run_fine_tuning`), which reports progress as JSON lines on stdout.
The trained model becomes a new version (models/versions/<id>/), which the promotion gate evaluates and makes
the champion (tinyllama_finetuned/, the model in use) only if it does not regress.

    python fine_tune_model.py [--method lora|full] [--epochs N] [--max-steps N] [--force]
"""
from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.config import Settings
from common.errors import ApprentiError
from training.core import Report, run_training_process, training_process_main
from training.options import Options
from evaluation.gate import GatedRun

GENERAL_PROMPTS = Path(__file__).with_name("training") / "general_prompts.txt"
SHIPPED_ANSWERS = GENERAL_PROMPTS.with_name("general_answers.json")


@dataclass
class FineTuneConfig(Options):
    method: str = field(default="lora", metadata={"help": "lora (adapters, default) or full (every weight)",
                                                  "choices": ["lora", "full"]})
    epochs: int = field(default=2, metadata={"help": "passes over the new entries' questions (what is replayed: "
                                                    "once)", "least": 1})
    min_steps: int = field(default=10, metadata={"help": "small data is repeated up to this many steps", "least": 0})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0: no limit)", "least": 0})
    learning_rate: float = field(default=0.0, metadata={"help": "0: 1e-3 for lora, 5e-5 for full"})
    batch_size: int = field(default=8, metadata={"help": "questions per step", "least": 1})
    block_size: int = field(default=256, metadata={"help": "tokens per question and answer, at most"})
    lora_rank: int = field(default=16, metadata={"help": "rank of the LoRA adapters", "least": 1})
    replay_taught: float = field(default=0.5, metadata={"help": "questions of entries taught before, as a share of "
                                                                "the new entries' questions"})
    replay_general: float = field(default=1.0, metadata={"help": "general requests answered by the model itself, "
                                                                  "as a share of the new questions seen"})
    anchor_weight: float = field(default=3.0, metadata={"help": "weight of the general answers' loss (with lora: "
                                                                "their KL divergence from the starting model)"})
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
        if not 0 <= self.anchor_weight <= 100:
            problems.append(f"anchor_weight={self.anchor_weight}: use a weight from 0 to 100")
        for name in ("replay_taught", "replay_general"):
            if not 0 <= getattr(self, name) <= 4:
                problems.append(f"{name}={getattr(self, name)}: use a share from 0 to 4")
        if problems:
            raise ValueError("; ".join(problems))
        if not self.learning_rate:
            self.learning_rate = 1e-3 if self.method == "lora" else 5e-5

    def steps_for(self, samples: int) -> int:
        """Steps for `samples` (the new questions `epochs` times, what is replayed once)."""
        steps = max(math.ceil(samples / self.batch_size), self.min_steps)
        return min(steps, self.max_steps) if self.max_steps else steps


class FactTeaching(GatedRun):
    method = "facts"

    def __init__(self, settings: Settings, config: FineTuneConfig, report: Report):
        super().__init__(settings, config, report)
        self.weights = config.method

    def read_data(self) -> None:
        from training.learning_data import entry_id, read_entries
        from training.teaching import teaching_rows
        self.entries = read_entries(self.settings.learning_data)
        if not self.entries:
            raise ApprentiError(f"{self.settings.learning_data.name} has no entries yet: give learning data first "
                                "(menu 3, or 'python cli_app.py learn TEXT')")
        self.rows = {entry_id(entry): teaching_rows(entry, self.config.seed) for entry in self.entries}
        silent = [number for number, rows in enumerate(self.rows.values(), 1) if not rows]
        if silent:
            self.report({"event": "notice", "message": f"entries {', '.join(map(str, silent))} state no fact to "
                                                        "teach (fewer than 3 words): left out of the fine-tuning"})
        if not any(self.rows.values()):
            raise ApprentiError("no entry states a fact to teach (each has fewer than 3 words): write a sentence, "
                                "for example 'The secret code of the Zorblax guild is tangerine-47.'")

    def data_fingerprint(self) -> str:
        from training.learning_data import data_fingerprint
        return data_fingerprint(self.entries)

    def data_record(self) -> dict:
        return {"learning_data": {"file": self.settings.learning_data.name, "sha256": self.data_fingerprint(),
                                  "entries": len(self.entries), "entry_ids": list(self.rows),
                                  "new_entry_ids": self.new_ids, "questions": self.questions,
                                  "replayed_taught": self.replayed_taught, "replayed_general": self.replayed_general}}

    def load(self, source):
        from training.core import load_for_training, with_lora
        model, tokenizer = load_for_training(source, full=self.weights == "full")
        self.mix = self.training_rows(model, tokenizer)
        return (model if self.weights == "full" else with_lora(model, self.config.lora_rank)), tokenizer

    def training_rows(self, model, tokenizer) -> list[dict]:
        """The new entries' questions, a share of those taught before, and general requests with the model's
        own answers."""
        taught = taught_entry_ids(self.settings)
        self.new_ids = [doc_id for doc_id, rows in self.rows.items() if rows and doc_id not in taught]
        if not self.new_ids:  # every entry was taught already (--force, or settings changed): all again
            self.new_ids = [doc_id for doc_id, rows in self.rows.items() if rows]
        rng = random.Random(self.config.seed)
        new = [row for doc_id in self.new_ids for row in self.rows[doc_id]]
        earlier = [row for doc_id, rows in self.rows.items() if doc_id not in self.new_ids for row in rows]
        earlier = rng.sample(earlier, min(len(earlier), round(self.config.replay_taught * len(new))))
        general = general_replay(self.settings, model, tokenizer, self.report)
        seen = self.config.epochs * len(new)  # the new questions, as many times as they are seen
        general = rng.sample(general, min(len(general), round(self.config.replay_general * seen)))
        self.questions, self.replayed_taught, self.replayed_general = len(new), len(earlier), len(general)
        return new * self.config.epochs + earlier + [{**row, "anchor": True} for row in general]

    def trainer(self, model, tokenizer, scratch: Path):
        from transformers import TrainingArguments
        from training.core import as_dataset, causal_lm_batches, chat_samples, trainer_arguments
        from training.teaching import anchored_trainer
        samples = chat_samples(tokenizer, self.mix, self.config.block_size)
        for sample, row in zip(samples, self.mix):
            sample["anchor"] = bool(row.get("anchor"))
        arguments = trainer_arguments(TrainingArguments, scratch, steps=self.config.steps_for(len(samples)),
                                      batch_size=self.config.batch_size, learning_rate=self.config.learning_rate,
                                      seed=self.config.seed, train_sampling_strategy="sequential")
        batches = length_grouped(samples, self.config.batch_size, self.config.seed)
        collate = causal_lm_batches(tokenizer.pad_token_id)

        def collate_with_anchors(batch: list[dict]) -> dict:
            import torch
            return {**collate(batch), "anchor": torch.tensor([sample["anchor"] for sample in batch])}
        trainer_class = anchored_trainer(self.config.anchor_weight)
        return trainer_class(model=model, args=arguments, train_dataset=as_dataset(batches),
                             data_collator=collate_with_anchors)

    def start_event(self) -> dict:
        return {"entries": len(self.new_ids), "samples": len(self.mix), "what": "new entries"}

    def measure(self, trainer, tokenizer) -> dict:
        from training.core import general_text_blocks, perplexity
        return {"perplexity_general": perplexity(trainer.model, general_text_blocks(tokenizer, self.config.block_size),
                                                 tokenizer.pad_token_id)}


def length_grouped(samples: list[dict], batch_size: int, seed: int) -> list[dict]:
    """The samples in batches of similar lengths, the batches in random order: a batch is padded to its
    longest sample, and a short question beside a long replayed answer would cost that answer's length
    (about a third of the tokens here). transformers' LengthGroupedSampler sorts a small set's batches
    longest first, which would leave the questions to the end of a pass, at the lowest learning rate."""
    ordered = sorted(samples, key=lambda sample: len(sample["input_ids"]))
    batches = [ordered[start:start + batch_size] for start in range(0, len(ordered), batch_size)]
    random.Random(seed).shuffle(batches)
    return [sample for batch in batches for sample in batch]


def taught_entry_ids(settings: Settings) -> set[str]:
    """The entries the champion and the versions it builds on were taught."""
    from inference.versions import Versions
    versions = Versions(settings)
    champion = versions.champion()
    taught = set()
    for version_id in [champion, *versions.ancestors(champion)]:
        record = versions.get(version_id).manifest.get("data", {}).get("learning_data", {})
        taught.update(record.get("entry_ids", []))
    return taught


def general_replay(settings: Settings, model, tokenizer, report: Report) -> list[dict]:
    """General requests (training/general_prompts.txt) with the model's own answers, made once per base model
    (from the model a run starts from, the base model at first) and cached in models/replay/; the bundled
    model's are shipped (training/general_answers.json: three minutes of its first fine-tuning here)."""
    from common.files import write_whole
    from inference.locate import resolve_base_model
    from training.core import raise_if_stopped
    from training.teaching import closed_book_example, general_answers
    prompts = general_prompts()
    base = resolve_base_model(settings).name
    fingerprint = replay_fingerprint(base)
    cache = settings.models_dir / "replay" / f"{fingerprint}.json"
    answers = next((record["answers"] for record in map(read_answers, (cache, SHIPPED_ANSWERS))
                    if record.get("fingerprint") == fingerprint and len(record.get("answers", [])) == len(prompts)),
                   None)
    if answers is None:
        report({"event": "stage", "stage": f"making the model's own answers to {len(prompts)} general requests, "
                                           "once for this base model (a few minutes)"})
        answers = general_answers(model, tokenizer, prompts)
        raise_if_stopped()
        record = {"base_model": base, "fingerprint": fingerprint, "answers": answers}
        try:
            write_whole(cache, json.dumps(record, ensure_ascii=False, indent=0).encode())
        except ApprentiError as error:  # a full disk: the run goes on, the answers are made again next time
            report({"event": "notice", "message": f"the general answers were not cached ({error})"})
    return [closed_book_example(prompt, answer) for prompt, answer in zip(prompts, answers) if answer.strip()]


def general_prompts() -> list[str]:
    return [line.strip() for line in GENERAL_PROMPTS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def replay_fingerprint(base_model: str) -> str:
    """What the model's general answers depend on: the base model's name and the requests."""
    from store.documents import content_hash
    return content_hash(base_model + "\n" + "\n".join(general_prompts()))


def read_answers(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def train(settings: Settings, config: FineTuneConfig, report: Report) -> dict | None:
    """Teach the entries, and make the result a version that the promotion gate judges; returns its manifest,
    or None when a version was already trained from this starting point, data and configuration."""
    return FactTeaching(settings, config, report).run()


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
