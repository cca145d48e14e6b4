"""Fast answers on CPU: a model converted once to ONNX with int8 (or int4) weights by ONNX Runtime GenAI's model
builder, and run by ONNX Runtime through inference/batching.py, which decodes concurrent requests together
(the tokens of each are those ONNX Runtime GenAI's own generator gives it alone: tests/test_batching.py).

Measured by `bench/inference.py` (README, "Fast answers"): int8 decodes 4.7x faster than transformers' bf16
on the bundled model and answers the QA set as well; a fact taught by fine-tuning survives the conversion.
Each model gets its converted form once, cached beside it (a version in its own folder, so it goes where the
version goes):

    models/versions/<id>/onnx-int8/    a version: its adapters merged into the weights first, in fp32
    models/onnx-int8/<base model>/     a base model (the hub's cache is not ours to write in)

A model the converter refuses is remembered beside where its converted form would be (<form>.failed.json),
so that later loads fall back at once; a new onnxruntime-genai or a changed model tries again.

transformers stays the training path, and the fallback where this runtime cannot be installed or a model
cannot be converted (APPRENTI_BACKEND=transformers chooses it outright). Answering here imports neither
torch nor transformers: the prompts come from inference/tokenizer.py's FolderTokenizer.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from common.files import file_lock, write_whole
from common.messages import notice
from inference.decoding import CLOSED_BOOK, Decoding, adjust
from inference.locate import ModelSource
from inference.tokenizer import FolderTokenizer, Prompts

CONVERSION = "converted.json"
# The files that make a model what it is: one of them changed, a refused conversion is tried again.
MODEL_FILES = ("*.safetensors", "config.json", "adapter_config.json")


class Unconvertible(ApprentiError):
    """The converter refused the model: remembered, so that the next load does not ask it again."""


def converted_folder(settings: Settings, source: ModelSource) -> Path:
    """Where `source`'s converted form is kept: in the version's own folder, or under models/ for a base.
    The backend's name (onnx-int8, onnx-int4) names the form."""
    if source.version != "base":
        return (source.adapters[-1] if source.adapters else source.path) / settings.backend
    return settings.models_dir / settings.backend / re.sub(r"[^\w.-]+", "-", source.name).strip("-")


def converted(settings: Settings, source: ModelSource) -> Path:
    """`source` in its converted form, made now if it is not made yet (one process at a time makes it). A
    model the converter refused is refused again at once, with the same error, until the runtime or the model
    changes."""
    target = converted_folder(settings, source)
    if (target / "genai_config.json").is_file():
        return target
    refusal = target.with_name(f"{target.name}.failed.json")
    attempt = {"onnxruntime_genai": runtime_version(), "source": identity(source)}
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if not (target / "genai_config.json").is_file():  # else another process made it while we waited
            remembered = read_record(refusal)
            if remembered.get("error") and {key: remembered.get(key) for key in attempt} == attempt:
                raise ApprentiError(remembered["error"])
            try:
                convert(source, target, precision=settings.backend.removeprefix("onnx-"))
            except Unconvertible as error:
                write_whole(refusal, json.dumps({"error": str(error), **attempt}, indent=1).encode())
                raise
            refusal.unlink(missing_ok=True)
    return target


def runtime_version() -> str:
    import onnxruntime_genai
    return onnxruntime_genai.__version__


def identity(source: ModelSource) -> dict:
    """What a conversion is made from: the model's name and version, and its files' sizes and times."""
    files = sorted(file for folder in (source.path, *source.adapters) for pattern in MODEL_FILES
                   for file in folder.glob(pattern))
    return {"name": source.name, "version": source.version,
            "files": {str(file): [file.stat().st_size, file.stat().st_mtime_ns] for file in files}}


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def convert(source: ModelSource, target: Path, precision: str) -> None:
    """Merge the adapters (in fp32: their small updates would round away in bf16), then quantise the weights
    to `precision` (int8, int4) with ONNX Runtime GenAI's model builder, into a hidden folder renamed to
    `target` once whole."""
    notice(f"preparing {source.name} for fast answers, once (about 10 s for the bundled model)")
    try:
        build(source, target, precision)
    except OSError as error:  # a full disk, a folder we may not write in
        raise ApprentiError(f"cannot convert {source.name} for fast answers: {error.strerror or error}") from None


def build(source: ModelSource, target: Path, precision: str) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="apprenti-convert-", dir=target.parent) as scratch:
        scratch = Path(scratch)
        weights = source.path
        if source.adapters:
            from inference.loading import load_causal_lm, quiet_transformers
            model, tokenizer = load_causal_lm(source.path, "cpu", None, source.adapters, merge_all=True)
            weights = scratch / "merged"
            with quiet_transformers():
                model.save_pretrained(weights)
                tokenizer.save_pretrained(weights)
            del model
        built = scratch / "built"
        done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(weights),
                               "-o", str(built), "-p", precision, "-e", "cpu", "-c", str(scratch / "cache")],
                              capture_output=True, text=True)
        if done.returncode != 0 or not (built / "genai_config.json").is_file():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise Unconvertible(f"cannot convert {source.name} for fast answers: {last}")
        # The tokenizer as transformers saved it: prompts are made with the same chat template on both paths.
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            if (weights / name).is_file():
                shutil.copy2(weights / name, built / name)
        (built / CONVERSION).write_text(json.dumps({"from": source.name, "version": source.version,
                                                    "precision": precision,
                                                    "seconds": round(time.perf_counter() - started, 1)}))
        os.rename(built, target)


def threads() -> int:
    # ONNX Runtime would otherwise size its pool by the machine, not by the cores this process may use.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxChatModel(Prompts):
    """The same interface as inference.transformers_model.ChatModel, answering from the converted form."""

    backend = "onnx"

    @staticmethod
    def conversion(folder: Path) -> dict:
        """What convert() recorded: the model's name, version and precision, the seconds it took."""
        return read_record(folder / CONVERSION)

    def __init__(self, source: ModelSource, folder: Path):
        from inference.batching import BatchDecoder
        started = time.perf_counter()
        self.source, self.name, self.version = source, source.name, source.version
        try:
            # One decoder for every answer of this process: the API's concurrent requests decode together.
            self.batch = BatchDecoder(folder, threads=threads())
            self.tokenizer = self.prompts = FolderTokenizer(folder)
            self.context_window = self.batch.geometry.context
        except Exception as error:  # the runtime's own errors have no common class but Exception
            raise ApprentiError(f"cannot load the converted model in {folder}: {error}") from None
        self.device, self.dtype = "cpu", self.conversion(folder).get("precision", "onnx")
        self.load_seconds = time.perf_counter() - started

    def stream(self, input_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
               decoding: Decoding | None = None):
        """Yield the continuation of `input_ids` piece by piece: greedy, or sampled when `temperature` > 0,
        as `decoding` says (by default CLOSED_BOOK: no passages to copy). The tokens are made beside other
        requests' (inference/batching.py); a consumer that stops (Ctrl-C, a client gone) takes its request out
        at the next step. Raises QueueFull when as many requests wait as the queue holds."""
        decoding = decoding or CLOSED_BOOK
        # the runtime's own penalty would count the prompt's tokens too
        hook = functools.partial(adjust, decoding=decoding) if decoding.adjusts else None
        answer, said = [], ""
        with self.batch.submit(input_ids, max_new_tokens, temperature, decoding.top_p, hook) as tokens:
            for token in tokens:
                answer.append(token)
                text = self.prompts.decode(answer, skip_special_tokens=True)
                # the whole answer decoded again: a character cut between two tokens waits for its end
                if text.startswith(said) and len(text) > len(said) and not text.endswith("\ufffd"):
                    yield text[len(said):]
                    said = text

    def close(self) -> None:
        """Take no more requests; the decoder's worker ends once the answers it is making are made."""
        self.batch.close(drain=True)
