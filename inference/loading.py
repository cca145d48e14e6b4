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
