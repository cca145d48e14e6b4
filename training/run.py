"""One training run's lifecycle, for every learning step: starting point -> inputs -> already trained? -> load ->
trainer -> train -> loss history -> stage -> publish. Each method (teaching facts in fine_tune_model.py, the
instruction and preference methods in alignment/methods.py, the reward model in alignment/reward.py) brings only
its data, its model and its trainer, as trl's trainers do; this class does the rest the same way for all.
"""
from __future__ import annotations

import gc
import time
from datetime import datetime
from pathlib import Path

from common.config import Settings
from training.core import LOSS_NAMES, Report


class TrainingRun:
    family = "chat"  # the versions it joins (inference/versions.py): "chat", or "reward"
    method = ""  # what the manifest calls it
    weights = "lora"  # what is saved: "lora" adapters, or the "full" model

    def __init__(self, settings: Settings, config, report: Report):
        self.settings, self.config, self.report = settings, config, report

    # ------------------------------------------------------------ what a method brings

    def read_data(self) -> None:
        """Read and check the data (raising ApprentiError when it cannot teach anything)."""
        raise NotImplementedError

    def data_fingerprint(self) -> str:
        """A hash of the data: with the base model, method and settings, what a version was trained on."""
        raise NotImplementedError

    def data_record(self) -> dict:
        """What the manifest records of the data."""
        raise NotImplementedError

    def starting_point(self):
        """(parent version id, the ModelSource to start from): the champion, so that what it learned stays."""
        from training.core import starting_point
        return starting_point(self.settings)

    def load(self, source):
        """The model to train and its tokenizer."""
        from training.core import load_for_training
        return load_for_training(source, full=self.weights == "full", quantized=getattr(self.config, "qlora", False))

    def trainer(self, model, tokenizer, scratch: Path):
        """The transformers or trl trainer of this method, ready to train."""
        raise NotImplementedError

    def measure(self, trainer, tokenizer) -> dict:
        """Figures measured before and after training (recorded as NAME_before and NAME_after)."""
        return {}

    def figures(self, trainer) -> dict:
        """What else the manifest's "training" records."""
        return {}

    def stage(self, trainer, tokenizer, folder: Path) -> None:
        """Write the trained model (and whatever comes with it) in the staging folder."""
        from training.core import save_model
        model = getattr(trainer, "policy_model", None) or trainer.model  # PPO keeps it beside its value model
        save_model(model, tokenizer, folder, whole_model=self.weights == "full")

    def publish(self, version_id: str, partial: Path, manifest: dict) -> dict:
        """Make the staged model a version, judged (a chat model: by the promotion gate, evaluation.gate.GatedRun);
        returns its manifest."""
        raise NotImplementedError

    # ------------------------------------------------------------ the lifecycle

    def run(self) -> dict | None:
        """Train and publish; returns the new version's manifest, or None when a version was already trained
        from the same starting point, data and settings."""
        import torch
        from inference.loading import quiet_transformers
        from inference.locate import resolve_base_model
        from training.core import already_trained, progress_callback, quiet, scratch_dir, staged_version
        self.read_data()
        parent, source = self.starting_point()
        inputs = {"base_model": resolve_base_model(self.settings).name, "method": self.method,
                  "data_sha256": self.data_fingerprint(), "config": self.config.training_settings()}
        if not self.config.force and already_trained(self.settings, inputs, self.family):
            return None
        torch.manual_seed(self.config.seed)
        started_at = datetime.now().isoformat(timespec="seconds")
        with quiet_transformers(), scratch_dir() as scratch:
            model, tokenizer = self.load(source)
            trainer = quiet(self.trainer(model, tokenizer, Path(scratch)))
            trainer.add_callback(progress_callback(self.report))
            before = self.measure(trainer, tokenizer)
            # PPO counts its own loop's batches, not max_steps
            planned = trainer.args.max_steps if trainer.args.max_steps > 0 else trainer.args.num_total_batches
            self.report({"event": "start", "model": source.name, "method": self.method, **self.start_event(),
                         "steps": planned, "device": str(trainer.args.device),
                         "dtype": "bfloat16" if trainer.args.bf16 else "float32",
                         **{f"{name}_before": value for name, value in before.items()}})
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
            after = self.measure(trainer, tokenizer)
            logs = [log for log in trainer.state.log_history if any(name in log for name in LOSS_NAMES)]
            losses = [{"step": log["step"], "loss": next(log[name] for name in LOSS_NAMES if name in log)}
                      for log in logs]
            steps = trainer.state.global_step
            training = {"trainer": f"{type(trainer).__module__.split('.')[0]}.{type(trainer).__name__}",
                        "steps": steps, "epochs": round(trainer.state.epoch or 0, 2), "seconds": round(seconds, 1),
                        "seconds_per_step": round(seconds / max(steps, 1), 2),
                        "tokens_per_second": round(trainer.state.num_input_tokens_seen / seconds, 1),
                        "loss_history": losses, "final_loss": losses[-1]["loss"] if losses else None,
                        **{f"{name}_before": value for name, value in before.items()},
                        **{f"{name}_after": value for name, value in after.items()},
                        **self.figures(trainer),
                        "started": started_at, "finished": datetime.now().isoformat(timespec="seconds")}
            with staged_version(self.settings, self.family) as (version_id, partial):
                self.stage(trainer, tokenizer, partial)
                trainer = model = None
                self.release()
                gc.collect()  # the trained model goes before the gate loads the candidate and the champion
                manifest = {**inputs, "parent": parent, "weights": self.weights, "seed": self.config.seed,
                            "data": self.data_record(), "training": training}
                return self.publish(version_id, partial, manifest)

    def start_event(self) -> dict:
        """What the progress bar's first line says of the data: {"entries", "samples", "what"}."""
        return {}

    def release(self) -> None:
        """Let go of whatever else holds memory (a reward model) before the gate loads two models."""
