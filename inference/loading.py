"""Loading a causal language model on this machine's best device and dtype, from safetensors only."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from common.errors import ApprentiError


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


def context_window(model) -> int:
    """The most tokens `model` reads at once (prompt and answer together)."""
    return int(getattr(model.config, "max_position_embeddings", 2048))


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


def load_causal_lm(path: Path, device: str | None = None, dtype=None, adapters: tuple[Path, ...] = (),
                   merge_all: bool = False):
    """The model at `path` with its LoRA `adapters`. The last adapter stays apart from the base weights, in
    fp32 (merged into bf16 weights, its small updates would round away), unless `merge_all`; the earlier
    ones are merged into the weights, which are then kept in fp32 for the same reason."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if device is None:
        device, dtype = device_and_dtype()
    if len(adapters) > 1 or (adapters and merge_all):
        dtype = torch.float32
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
            model = with_adapters(model, adapters, merge_all)
    except (OSError, ValueError) as error:
        raise ApprentiError(f"cannot load the model in {adapters[-1] if adapters else path}: {error}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def with_adapters(model, adapters: tuple[Path, ...], merge_all: bool = False):
    """`model` with each LoRA adapter applied in turn: merged into its weights, but for the last one unless
    `merge_all` (peft's autocast_adapter_dtype keeps that one in fp32)."""
    from peft import PeftModel
    for number, adapter in enumerate(adapters, 1):
        model = PeftModel.from_pretrained(model, adapter, autocast_adapter_dtype=True)
        if merge_all or number < len(adapters):
            model = model.merge_and_unload()
    return model
