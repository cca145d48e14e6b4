"""The training core that every learning step runs on: load the base model, apply LoRA, run a trainer
(transformers' Trainer, or one of trl's, which derive from it) with JSON progress events, measure perplexity,
and install the result whole.

A training runs in a subprocess of the CLI (`run_training_process`), so that its memory goes back when it
ends and a crash cannot take the CLI with it; the subprocess (`training_process_main`) holds the data dir's
training lock and prints one JSON event a line on stdout. The new model is written to a temporary folder and
made a version (inference/versions.py) only once whole and judged by the promotion gate: a crash, a kill or
Ctrl-C leaves the model in use as it was.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from common.config import Settings
from common.crash import log_crash
from common.errors import ApprentiError
from common.files import file_lock

STOP_REQUESTS: list[int] = []  # the signals (SIGINT, SIGTERM) that asked this training process to stop
GENERAL_TEXT = Path(__file__).with_name("general_text.txt")  # see the README for its source and licence
EVALUATION_SAMPLES = 64  # blocks of each text that perplexity is measured on
LOSS_NAMES = ("loss", "loss/policy_avg")  # what the trainers log their loss as (trl's PPO: the second)
REWARD_NAMES = ("reward", "objective/scores")  # the mean reward of the online methods' sampled answers
Report = Callable[[dict], None]


# ---------------------------------------------------------------- the model and its data

def load_for_training(source, full: bool, quantized: bool = False):
    """The model to train from `source` (inference.locate.ModelSource) and its tokenizer. Trained weights stay
    in fp32 (bf16 steps would round small updates away); the frozen base under LoRA is kept in bf16 where the
    CPU computes it natively, which halves its memory, and the trainer's autocast computes in bf16 there. A
    source with adapters (a LoRA champion) has them merged in fp32, so that a new adapter learns on top of
    what they taught."""
    import torch
    from inference.loading import device_and_dtype, load_causal_lm
    if quantized:
        return load_quantized(source)
    device, dtype = device_and_dtype()
    model, tokenizer = load_causal_lm(source.path, device, torch.float32 if full else dtype, source.adapters,
                                      merge_all=True)
    model.requires_grad_(True)  # merged adapters leave the weights frozen; LoRA freezes them again itself
    return model.train(), tokenizer


def load_quantized(source):
    """QLoRA's frozen base: 4-bit NF4 weights by bitsandbytes, which computes on CUDA GPUs only."""
    import torch
    if not torch.cuda.is_available():
        raise ApprentiError("QLoRA keeps the base model in 4 bits with bitsandbytes, which computes on CUDA GPUs "
                            "only, and this machine has none: leave out --qlora (LoRA trains the same adapters on a "
                            "16-bit base)")
    if source.adapters:
        raise ApprentiError("QLoRA starts from whole weights, and the model in use is LoRA adapters, which 4-bit "
                            "weights cannot take merged: leave out --qlora")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
        from peft import prepare_model_for_kbit_training
        four_bits = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(source.path, quantization_config=four_bits,
                                                     use_safetensors=True)
    except ImportError as error:
        raise ApprentiError(f"QLoRA needs bitsandbytes ({error}): pip install bitsandbytes") from None
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), tokenizer


def starting_point(settings: Settings):
    """What a training run starts from: the champion (its id, and the ModelSource that loads it), so that
    what earlier runs taught stays."""
    from inference.versions import Versions
    versions = Versions(settings)
    champion = versions.champion()
    return champion, versions.source(champion)


def lora_config(rank: int, **options):
    """LoRA on every linear layer: what trl's trainers take as `peft_config`, and `with_lora` applies."""
    from peft import LoraConfig
    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type=options.pop("task_type", "CAUSAL_LM"), **options)


def with_lora(model, rank: int):
    """The model with LoRA adapters; they stay in fp32 under a bf16 base (peft's autocast_adapter_dtype)."""
    from peft import get_peft_model
    return get_peft_model(model, lora_config(rank))


def token_blocks(tokenizer, texts: list[str], block_size: int) -> list[list[int]]:
    """Each text, ended by the end-of-text token, as one sample; a long one split into blocks."""
    blocks = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        blocks += [ids[start:start + block_size] for start in range(0, len(ids), block_size)]
    return blocks


def general_text_blocks(tokenizer, block_size: int) -> list[list[int]]:
    """The general text shipped with the project, in blocks: perplexity on it shows forgetting."""
    ids = tokenizer(GENERAL_TEXT.read_text(encoding="utf-8"))["input_ids"]
    return [ids[start:start + block_size] for start in range(0, len(ids), block_size)][:EVALUATION_SAMPLES]


def chat_samples(tokenizer, rows: list[dict], block_size: int) -> list[dict]:
    """Prompt/completion rows (chat turns) as token ids rendered as the model is asked, with the prompt's
    length: the loss is on the answer only. A sample longer than `block_size` keeps its prompt's end."""
    samples = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        whole = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                              return_dict=True)["input_ids"]
        cut = max(0, len(whole) - block_size)
        samples.append({"input_ids": list(whole[cut:]), "prompt_length": max(1, len(prompt) - cut)})
    return samples


def padded(blocks: list[list[int]], pad_id: int, prompt_lengths: list[int] | None = None) -> dict:
    """A batch: blocks padded to the longest, labels = inputs with the padding (and each block's prompt, when
    its length is given) left out of the loss, by position, not by token: the pad token is often the
    end-of-text token, which is learned."""
    import torch
    longest = max(map(len, blocks))
    input_ids = torch.full((len(blocks), longest), pad_id)
    attention = torch.zeros((len(blocks), longest), dtype=torch.long)
    for row, block in enumerate(blocks):
        input_ids[row, :len(block)] = torch.tensor(block)
        attention[row, :len(block)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)
    for row, length in enumerate(prompt_lengths or []):
        labels[row, :length] = -100
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def perplexity(model, blocks: list[list[int]], pad_id: int, batch_size: int = 4) -> float | None:
    """exp of the token-weighted mean loss over (at most EVALUATION_SAMPLES of) the blocks, None for none;
    in bf16 where the CPU computes it natively, as training and answers do."""
    import torch
    from inference.loading import device_and_dtype
    blocks = [block for block in blocks[:EVALUATION_SAMPLES] if len(block) > 1]
    if not blocks:
        return None
    device, dtype = device_and_dtype()
    was_training, total, count = model.training, 0.0, 0
    model.eval()
    with torch.inference_mode(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
        for start in range(0, len(blocks), batch_size):
            batch = {name: tensor.to(model.device) for name, tensor in padded(blocks[start:start + batch_size],
                                                                              pad_id).items()}
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * tokens
            count += tokens
    model.train(was_training)
    return math.exp(min(total / count, 50.0))


def as_dataset(samples: list[dict]):
    from datasets import Dataset
    return Dataset.from_list(samples)


def causal_lm_batches(pad_id: int):
    """The trainer's collator: `padded` batches of the samples' input ids, without their prompts' loss."""
    return lambda samples: padded([sample["input_ids"] for sample in samples], pad_id,
                                  [sample.get("prompt_length", 0) for sample in samples])


# ---------------------------------------------------------------- the trainer

def trainer_arguments(config_class, output_dir: Path, *, steps: int, batch_size: int, learning_rate: float,
                      seed: int, **options):
    """`TrainingArguments`, or a trl config, for this machine. trl's defaults assume a GPU (bf16 on, gradient
    checkpointing on): here bf16 is on only where the hardware computes it natively, and checkpointing is
    off (it trades time for memory that a CPU with this much RAM does not need). Runs are logged to MLflow
    when MLFLOW_TRACKING_URI is set (monitoring/tracking.py)."""
    import torch
    from inference.loading import device_and_dtype
    from monitoring.tracking import report_to
    device, dtype = device_and_dtype()
    return config_class(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size, learning_rate=learning_rate, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=seed, data_seed=seed,
        use_cpu=device == "cpu", bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", eval_strategy="no", report_to=report_to(),
        disable_tqdm=True, include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        remove_unused_columns=False, **options)


def progress_callback(report: Report):
    """A TrainerCallback that reports each step as a JSON event: step, loss, ETA and tokens/s."""
    from transformers import TrainerCallback

    class ProgressEvents(TrainerCallback):
        started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            raise_if_stopped()

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = next((logs[name] for name in LOSS_NAMES if name in (logs or {})), None)
            if loss is None:
                return
            elapsed = time.perf_counter() - self.started
            step, steps = max(state.global_step, 1), state.max_steps
            reward = next((float(logs[name]) for name in REWARD_NAMES if name in logs), None)
            report({"event": "step", "step": step, "steps": steps, "loss": float(loss), "elapsed": elapsed,
                    "eta": elapsed / step * (steps - step), "tokens_per_second": state.num_input_tokens_seen / elapsed,
                    **({"reward": reward} if reward is not None else {})})

    return ProgressEvents()


def quiet(trainer):
    """Our events say what happens: transformers' own printer of the logs (stdout) goes."""
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    return trainer


def scratch_dir():
    """Where the trainer may write (it writes nothing with save_strategy='no', but wants a folder)."""
    return tempfile.TemporaryDirectory(prefix="apprenti-trainer-")


# ---------------------------------------------------------------- saving the result

def save_model(model, tokenizer, folder: Path, whole_model: bool) -> None:
    """The trained weights as safetensors: LoRA saves its adapters alone (merged into bf16 base weights,
    small updates would round away), a full fine-tuning the whole model with its tokenizer."""
    raise_if_stopped()
    try:
        model.save_pretrained(folder, safe_serialization=True)
        if whole_model:
            tokenizer.save_pretrained(folder)
    except OSError as error:
        raise ApprentiError(f"cannot save the model in {folder.parent}: {error.strerror}; "
                            "the model in use is kept") from None


@contextmanager
def staged_version(settings: Settings, family: str = "chat"):
    """A new version's id and the hidden folder to write it in (inference/versions.py): gone after the
    block, whether it was published (renamed away) or not."""
    import shutil
    from inference.versions import Versions
    version_id, partial = Versions(settings, family).staging()
    try:
        yield version_id, partial
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def already_trained(settings: Settings, inputs: dict, family: str = "chat") -> bool:
    """Whether these inputs (base model, method, data, settings) were learned already: by the model in use or
    a version it builds on, or by a run from it that the gate refused. Then a new run would add nothing."""
    from inference.versions import Versions
    versions = Versions(settings, family)
    champion = versions.champion()
    lineage = {champion, *versions.ancestors(champion)}
    return any({name: version.manifest.get(name) for name in inputs} == inputs
               and (version.id in lineage or version.manifest.get("parent") == champion)
               for version in versions.all()[0])


# ---------------------------------------------------------------- the subprocess

@contextmanager
def training_lock(settings: Settings):
    """One training at a time per data dir. Whatever partial versions exist belong to runs that died."""
    from inference.versions import Versions
    with file_lock(settings.home / ".finetune.lock", wait=False,
                   busy="another fine-tuning is running on this data dir: wait for it to finish"):
        Versions(settings).discard_partials()
        yield


def stop_requested(signal_number, frame) -> None:
    STOP_REQUESTS.append(signal_number)
    raise_if_stopped()


def raise_if_stopped() -> None:
    """Python raises where a signal lands, which can be inside a finalizer that swallows the exception: the
    request is kept, and every training step (and the installation) raises it again until it is heard."""
    if STOP_REQUESTS:
        raise KeyboardInterrupt if STOP_REQUESTS[0] == signal.SIGINT else SystemExit(143)


def training_process_main(settings_from: Callable[[], Settings],
                          work: Callable[[Settings, Report], dict | None]) -> int:
    """The subprocess's side: hold the lock, run `work`, and turn every ending into one JSON event. Ctrl-C
    and SIGTERM stop it before the installation, whatever it is doing (SIGKILL too, without cleaning up)."""
    signal.signal(signal.SIGINT, stop_requested)
    signal.signal(signal.SIGTERM, stop_requested)

    def report(event: dict) -> None:
        print(json.dumps(event), flush=True)

    settings = None
    try:
        settings = settings_from()
        with training_lock(settings):
            record = work(settings, report)
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
        report({"event": "error", "message": log_crash(settings.log_file if settings else Path("apprenti.log"),
                                                       "training", error)})
        return 1


def run_training_process(command: list[str], settings: Settings, on_event: Report) -> dict | None:
    """Run a training script in a subprocess with these `settings`, passing its progress events to
    `on_event`; returns the new version's manifest, or None when there was nothing to do. Ctrl-C stops the
    subprocess and is re-raised."""
    process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parent.parent, env={**os.environ, **settings.environment()})
    outcome = {"event": "error", "message": "the training process ended without a result"}
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
        # In a terminal the subprocess got the same Ctrl-C; from a script it did not, so it is sent. Its
        # output is read to the end: a subprocess blocked on a full pipe would never see the signal.
        process.send_signal(signal.SIGINT)
        process.communicate()
        raise
    if outcome["event"] == "error":
        if process.returncode < 0:
            outcome["message"] = f"the training process was killed (signal {-process.returncode})"
        raise ApprentiError(f"training failed: {outcome['message']}; the model in use is kept")
    return outcome.get("record")
