"""Fine-tuning: continued pretraining of the base model on all of learning_data.txt, on the CPU.

The CLI runs this file as a subprocess (`run_fine_tuning`), so that its memory is returned when it ends and
a crash cannot take the CLI with it; it reports progress as JSON lines on stdout. The new model is written
to a temporary folder and put in place of tinyllama_finetuned/ only once whole: a crash, a kill or Ctrl-C
leaves the previous model as it was.

    python fine_tune_model.py [--method lora|full] [--epochs N] [--max-steps N] [--force]
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from config import ApprentiError, BusyError, Settings, append_whole

ENTRY_SEPARATOR = "%"  # a line of its own after each entry, as in fortune files: entries keep their blank lines


# ---------------------------------------------------------------- learning data

def append_entry(path: Path, text: str) -> None:
    """Append one entry whole. Safe with several writers: one locked write of the whole entry; a failed
    write (a full disk) is cut back, so the file never holds half an entry."""
    text = text.strip()
    if not text:
        raise ApprentiError("the entry is empty: nothing was saved")
    if any(line.strip() == ENTRY_SEPARATOR for line in text.splitlines()):
        raise ApprentiError(f"a line holding only '{ENTRY_SEPARATOR}' separates entries in {path.name}: "
                            "reword that line")
    append_whole(path, f"{text}\n{ENTRY_SEPARATOR}\n".encode())


def read_entries(path: Path) -> list[str]:
    """The entries of the learning data; a file written by hand without separators is one entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as error:
        raise ApprentiError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except OSError as error:
        raise ApprentiError(f"cannot read {path}: {error.strerror}") from None
    entries, lines = [], []
    for line in text.splitlines() + [ENTRY_SEPARATOR]:
        if line.strip() == ENTRY_SEPARATOR:
            entry = "\n".join(lines).strip()
            if entry:
                entries.append(entry)
            lines = []
        else:
            lines.append(line)
    return entries


def data_fingerprint(entries: list[str]) -> str:
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


# ---------------------------------------------------------------- configuration

@dataclass
class FineTuneConfig:
    method: str = field(default="lora", metadata={"help": "lora (adapters, default) or full (every weight)"})
    epochs: int = field(default=3, metadata={"help": "passes over the learning data"})
    min_steps: int = field(default=40, metadata={"help": "small data is repeated up to this many steps"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0: no limit)"})
    learning_rate: float = field(default=0.0, metadata={"help": "0: 3e-4 for lora, 3e-5 for full"})
    batch_size: int = field(default=4, metadata={"help": "samples per step"})
    block_size: int = field(default=256, metadata={"help": "tokens per sample; longer entries are split"})
    lora_rank: int = field(default=16, metadata={"help": "rank of the LoRA adapters"})
    seed: int = field(default=0, metadata={"help": "random seed, for runs that repeat"})
    force: bool = field(default=False, metadata={"help": "train even when the data has not changed"})

    def __post_init__(self):
        problems = []
        if self.method not in {"lora", "full"}:
            problems.append(f"method={self.method!r}: use 'lora' or 'full'")
        for name in ("epochs", "batch_size", "lora_rank"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}: use 1 or more")
        for name in ("min_steps", "max_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)}: use 0 or more")
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

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field, with its help: the CLI and this script take the same options."""
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.type == "bool":
                parser.add_argument(flag, action="store_true", help=f.metadata["help"])
            else:
                parser.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"],
                                    **({"choices": ["lora", "full"]} if f.name == "method" else {}))

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace) -> "FineTuneConfig":
        try:
            return cls(**{f.name: getattr(arguments, f.name) for f in dataclasses.fields(cls)})
        except ValueError as error:
            raise ApprentiError(f"bad fine-tuning option: {error}") from None

    def to_arguments(self) -> list[str]:
        arguments = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                arguments += [flag] if value else []
            else:
                arguments += [flag, str(value)]
        return arguments


# ---------------------------------------------------------------- training

def training_samples(tokenizer, entries: list[str], block_size: int) -> list[list[int]]:
    """Each entry, ended by the end-of-text token, as one sample; a long one split into blocks."""
    samples = []
    for entry in entries:
        ids = tokenizer(entry)["input_ids"] + [tokenizer.eos_token_id]
        samples += [ids[start:start + block_size] for start in range(0, len(ids), block_size)]
    return samples


def collate(samples: list[list[int]], pad_id: int):
    import torch
    longest = max(map(len, samples))
    input_ids = torch.full((len(samples), longest), pad_id)
    attention = torch.zeros((len(samples), longest), dtype=torch.long)
    for row, ids in enumerate(samples):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)
    return input_ids, attention, labels


def mean_loss(model, samples, batch_size, pad_id, device, autocast) -> float:
    """Token-weighted mean loss over (at most 64 of) the samples: its exp is the perplexity."""
    import torch
    samples = samples[:64]
    total, tokens = 0.0, 0
    model.eval()
    with torch.inference_mode(), autocast():
        for start in range(0, len(samples), batch_size):
            input_ids, attention, labels = (t.to(device) for t in collate(samples[start:start + batch_size], pad_id))
            count = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=input_ids, attention_mask=attention, labels=labels).loss) * count
            tokens += count
    return total / max(tokens, 1)


def train(settings: Settings, config: FineTuneConfig, report: Callable[[dict], None]) -> dict | None:
    """Fine-tune and install the new model; returns its training record, or None when nothing changed."""
    import contextlib
    import torch
    from models import device_and_dtype, install_model, load_causal_lm, read_training_record, \
        recover_model, resolve_base_model, TRAINING_RECORD

    entries = read_entries(settings.learning_data)
    if not entries:
        raise ApprentiError(f"{settings.learning_data.name} has no entries yet: give learning data first "
                            "(menu 3, or 'python cli_app.py learn TEXT')")
    base = resolve_base_model(settings)
    fingerprint = data_fingerprint(entries)
    recover_model(settings.finetuned_dir)
    previous = read_training_record(settings.finetuned_dir)
    if not config.force and previous and (previous["base_model"], previous["data_sha256"], previous["method"]) \
            == (base.name, fingerprint, config.method):
        return None

    torch.manual_seed(config.seed)
    device, dtype = device_and_dtype()
    # Trained weights stay in fp32 (bf16 steps would round small updates away); the frozen base of LoRA
    # can be kept in bf16 to halve its memory, and autocast computes in bf16 where that is native.
    model, tokenizer = load_causal_lm(base.path, device, dtype if config.method == "lora" else torch.float32)
    if dtype == torch.float32:
        autocast = contextlib.nullcontext
    else:
        def autocast():
            return torch.autocast(device_type=device, dtype=dtype)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                                 lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    samples = training_samples(tokenizer, entries, config.block_size)
    steps = config.steps_for(len(samples))
    pad_id = tokenizer.pad_token_id
    loss_before = mean_loss(model, samples, config.batch_size, pad_id, device, autocast)
    report({"event": "start", "model": base.name, "method": config.method, "entries": len(entries),
            "samples": len(samples), "steps": steps, "device": device, "dtype": str(dtype).removeprefix("torch."),
            "perplexity_before": math.exp(loss_before)})

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)  # linear decay
    order = torch.Generator().manual_seed(config.seed)
    batches = []
    started = time.perf_counter()
    tokens_seen = 0
    model.train()
    for step in range(1, steps + 1):
        if not batches:
            shuffled = [samples[i] for i in torch.randperm(len(samples), generator=order)]
            batches = [shuffled[i:i + config.batch_size] for i in range(0, len(shuffled), config.batch_size)]
        input_ids, attention, labels = (t.to(device) for t in collate(batches.pop(), pad_id))
        with autocast():
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss = float(loss.detach())
        tokens_seen += int(attention.sum())
        elapsed = time.perf_counter() - started
        report({"event": "step", "step": step, "steps": steps, "loss": loss, "elapsed": elapsed,
                "eta": elapsed / step * (steps - step), "tokens_per_second": tokens_seen / elapsed})
    loss_after = mean_loss(model, samples, config.batch_size, pad_id, device, autocast)

    record = {"base_model": base.name, "method": config.method, "data_sha256": fingerprint,
              "entries": len(entries), "samples": len(samples), "steps": steps, "epochs": config.epochs,
              "learning_rate": config.learning_rate, "final_loss": loss,
              "perplexity_before": math.exp(loss_before), "perplexity_after": math.exp(loss_after),
              "seconds": round(time.perf_counter() - started, 1), "tokens_per_second": tokens_seen / elapsed,
              "finished_at": datetime.now().isoformat(timespec="seconds")}
    partial = settings.finetuned_dir.with_name(f"{settings.finetuned_dir.name}.partial-{os.getpid()}")
    try:
        # LoRA saves its adapters alone: merged into bf16 base weights, small updates would round away.
        model.save_pretrained(partial, safe_serialization=True)
        if config.method == "full":
            tokenizer.save_pretrained(partial)
        (partial / TRAINING_RECORD).write_text(json.dumps(record, indent=2))
        install_model(partial, settings.finetuned_dir)
    except OSError as error:
        raise ApprentiError(f"cannot save the model in {settings.home}: {error.strerror}; "
                            "the previous model is kept") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return record


# ---------------------------------------------------------------- running it

def hold_lock(settings: Settings):
    """One fine-tuning at a time per data dir; the lock goes with the process, even when it is killed."""
    settings.home.mkdir(parents=True, exist_ok=True)
    lock = open(settings.home / ".finetune.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BusyError("another fine-tuning is running on this data dir: wait for it to finish") from None
    # Whatever partial folders exist belong to runs that died: this one holds the lock.
    for stale in settings.home.glob(f"{settings.finetuned_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return lock


def run_fine_tuning(settings: Settings, config: FineTuneConfig, on_event: Callable[[dict], None]) -> dict | None:
    """Run the fine-tuning in a subprocess, passing its progress events to `on_event`; returns the
    training record, or None when the data had not changed. Ctrl-C stops the subprocess and is re-raised."""
    command = [sys.executable, str(Path(__file__).resolve()), "--home", str(settings.home),
               "--model", settings.base_model, *config.to_arguments()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent)
    outcome = {"event": "error", "message": "the fine-tuning process ended without a result"}
    try:
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                print(line, end="", file=sys.stderr)  # a library's own output
                continue
            if event["event"] in {"done", "unchanged", "error"}:
                outcome = event
            else:
                on_event(event)
        process.wait()
    except KeyboardInterrupt:
        # In a terminal the subprocess got the same Ctrl-C; from a script it did not, so it is sent.
        process.send_signal(signal.SIGINT)
        process.wait()
        raise
    if outcome["event"] == "error":
        if process.returncode < 0:
            outcome["message"] = f"the fine-tuning process was killed (signal {-process.returncode})"
        raise ApprentiError(f"fine-tuning failed: {outcome['message']}; the previous model is kept")
    return outcome.get("record")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data dir (default: APPRENTI_HOME, else the project folder)")
    parser.add_argument("--model", help="base model: hub id or folder (default: APPRENTI_BASE_MODEL, else TinyLlama)")
    FineTuneConfig.add_arguments(parser)
    arguments = parser.parse_args(argv)
    # SIGTERM and SIGKILL leave the previous model whole; SIGTERM also cleans up on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def report(event: dict) -> None:
        print(json.dumps(event), flush=True)

    settings = None
    try:
        settings = Settings.load(home=arguments.home, base_model=arguments.model)
        config = FineTuneConfig.from_arguments(arguments)
        with hold_lock(settings):
            record = train(settings, config, report)
        report({"event": "done", "record": record} if record else {"event": "unchanged"})
        return 0
    except ApprentiError as error:
        report({"event": "error", "message": str(error)})
        return 1
    except KeyboardInterrupt:
        report({"event": "error", "message": "stopped by Ctrl-C"})
        return 130
    except MemoryError:
        report({"event": "error", "message": "out of memory: try '--method lora', a smaller --batch-size "
                                             "or --block-size"})
        return 1
    except Exception as error:  # logged whole for us, told in one line to the user
        log = settings.log_file if settings else Path("apprenti.log")
        with open(log, "a") as handle:
            handle.write(f"{datetime.now().isoformat()} fine-tuning\n{traceback.format_exc()}\n")
        report({"event": "error", "message": f"{type(error).__name__}: {error} (details in {log})"})
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
