"""The embedding model on ONNX Runtime: the vectors sentence-transformers makes, without importing it or torch.

A cold `ask` spent ~8 s importing sentence-transformers (and torch, sklearn under it) to embed one question.
The model is exported to ONNX once, with its attention fused by ONNX Runtime's BERT optimizer, and read with
`tokenizers`: the same vectors (cosine 0.9999999 on 250 chunks, `tests/test_embeddings.py`) in a process that
starts in a fraction of the time, and as fast for ingest. The export is kept under models/:

    models/onnx-embeddings/<model>/    model.onnx, tokenizer.json, embedding.json (pooling, length, origin)

A model that cannot be exported, or where onnxruntime is missing, is run by sentence-transformers, with a
one-line notice.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from common.files import file_lock
from common.messages import notice

EXPORT = "embedding.json"
FAILED = "export-failed.json"
BATCH = 32  # texts run together; sorted by length first, so that a batch pads little
# Texts whose vectors identify a model (knowledge_base.py records them with the store), in both languages.
PROBES = ("The cat sleeps on the warm windowsill.", "Comment installer un paquet Debian ?", "42")
SAME_VECTORS = 0.999  # the lowest cosine between two runs of one model's probes (measured: 0.9999999)


class OnnxEmbeddings:
    """embed_documents / embed_query as LangChain's Embeddings have them, on the exported model."""

    def __init__(self, folder: Path):
        import onnxruntime
        from tokenizers import Tokenizer
        self.folder = folder
        described = json.loads((folder / EXPORT).read_text())
        self.name, self.pooling, self.max_tokens = described["name"], described["pooling"], described["max_tokens"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json may carry a fixed padding and a shorter truncation than sentence-transformers uses
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        # sized by the cores this process may use, not by the machine's
        options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        self.inputs = {item.name for item in self.session.get_inputs()}

    def token_counts(self, texts: list[str]) -> list[int]:
        """How many tokens each text has, before truncation (the API refuses what would be cut)."""
        self.tokenizer.no_truncation()
        try:
            return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts)]
        finally:
            self.tokenizer.enable_truncation(self.max_tokens)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        vectors: list = [None] * len(texts)
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            for index, vector in zip(batch, self._embed([texts[index] for index in batch])):
                vectors[index] = vector.tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self._embed([text])[0].tolist()

    def _embed(self, texts: list[str]):
        import numpy as np
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {name: value for name, value in feed.items() if name in self.inputs})[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[..., None].astype(hidden.dtype)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class SentenceTransformerEmbeddings:
    """The same interface on sentence-transformers: the slow path, where the export cannot be had."""

    def __init__(self, source):
        from sentence_transformers import SentenceTransformer
        from inference.loading import quiet_transformers
        with quiet_transformers():
            self.model = SentenceTransformer(str(source.path), device="cpu")
        self.name, self.max_tokens = source.name, self.model.max_seq_length

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True, batch_size=BATCH).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.model.tokenizer(texts, verbose=False)["input_ids"]]


def embeddings_for(settings: Settings):
    """The embedding model the settings name: exported and run on ONNX Runtime, or sentence-transformers
    where that cannot be. An export made before is used without asking the hub."""
    from inference.locate import BUNDLED_EMBEDDINGS, cached
    # Without the hub's library or a network probe: the exported folder is named after the model it came from.
    name = settings.embedding_model if cached(settings.embedding_model) else BUNDLED_EMBEDDINGS
    folder = exported_folder(settings, name)
    if (folder / EXPORT).is_file():
        return OnnxEmbeddings(folder)
    from inference.locate import resolve_embedding_model
    source = resolve_embedding_model(settings)
    try:
        return OnnxEmbeddings(exported(settings, source))
    except ApprentiError as error:
        notice(f"{error}: embedding with sentence-transformers")
    return SentenceTransformerEmbeddings(source)


def exported_folder(settings: Settings, name: str) -> Path:
    return settings.models_dir / "onnx-embeddings" / re.sub(r"[^\w.-]+", "-", name).strip("-")


def exported(settings: Settings, source) -> Path:
    """`source` (inference.locate.ModelSource) exported to ONNX, made now if it is not made yet (one process at a
    time). A model that could not be exported is not tried again until onnxruntime or the model changes."""
    import importlib.util
    if importlib.util.find_spec("onnxruntime") is None:
        raise ApprentiError("onnxruntime is not installed ('make run' installs it)")
    target = exported_folder(settings, source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / EXPORT).is_file():  # another process made it while we waited
            return target
        attempt = {"model": str(source.path), "weights": weights_identity(source.path), "onnxruntime": ort_version()}
        failed = target.parent / f"{target.name}.{FAILED}"
        try:
            earlier = json.loads(failed.read_text())
        except (OSError, ValueError):
            earlier = {}
        if earlier.get("attempt") == attempt:
            raise ApprentiError(earlier["error"])
        notice(f"preparing {source.name} for fast queries, once (about 10 s)")
        try:
            export(source, target)
        except ApprentiError as error:
            failed.write_text(json.dumps({"attempt": attempt, "error": str(error)}))
            raise
        except OSError as error:  # a full disk, a folder we may not write in: worth trying again later
            raise ApprentiError(f"cannot export {source.name} for fast queries: {error.strerror or error}") from None
        failed.unlink(missing_ok=True)
    return target


def ort_version() -> str:
    import importlib.metadata
    return importlib.metadata.version("onnxruntime")


def weights_identity(folder: Path) -> list:
    return sorted([path.name, path.stat().st_size, int(path.stat().st_mtime)] for path in folder.glob("*.safetensors"))


def export(source, target: Path) -> None:
    """Export the transformer to ONNX, fuse its attention where ONNX Runtime knows the architecture, and check
    that it makes the vectors sentence-transformers makes, into a hidden folder renamed to `target` once whole."""
    import inspect
    import warnings
    import torch
    from transformers import AutoConfig, AutoModel
    from inference.loading import quiet_transformers
    path, started = Path(source.path), time.perf_counter()
    pooling = read_pooling(path)
    max_tokens = read_json(path / "sentence_bert_config.json").get("max_seq_length", 512)
    with tempfile.TemporaryDirectory(prefix="apprenti-export-", dir=target.parent) as scratch:
        built = Path(scratch) / "built"
        built.mkdir()
        with quiet_transformers():
            config = AutoConfig.from_pretrained(path)
            # eager attention: the exported graph is the one ONNX Runtime's optimizer recognises and fuses
            model = AutoModel.from_pretrained(path, attn_implementation="eager", use_safetensors=True).eval()
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in inspect.signature(model.forward).parameters:
            names.append("token_type_ids")

        class LastHiddenState(torch.nn.Module):
            def __init__(self, transformer):
                super().__init__()
                self.transformer = transformer

            def forward(self, *inputs):
                return self.transformer(**dict(zip(names, inputs))).last_hidden_state

        example = tuple(torch.tensor([[101, 2054, 2003, 102]]) if name == "input_ids" else torch.tensor([[1, 1, 1, 1]])
                        if name == "attention_mask" else torch.zeros(1, 4, dtype=torch.long) for name in names)
        raw = Path(scratch) / "raw.onnx"
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                torch.onnx.export(LastHiddenState(model), example, str(raw), input_names=names,
                                  output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                                  dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]})
        except Exception as error:  # the exporter raises many types for an architecture it cannot trace
            raise ApprentiError(f"cannot export {source.name} to ONNX ({type(error).__name__}: {error})") from None
        optimise(raw, built / "model.onnx", config)
        shutil.copy2(path / "tokenizer.json", built / "tokenizer.json")
        (built / EXPORT).write_text(json.dumps({"name": source.name, "from": str(path), "pooling": pooling,
                                                "max_tokens": max_tokens,
                                                "seconds": round(time.perf_counter() - started, 1)}))
        check_same_vectors(source, built)
        os.rename(built, target)


def optimise(raw: Path, target: Path, config) -> None:
    """Fused attention and layer norms for the BERT family (MiniLM among them); other models as exported."""
    if config.model_type not in {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet"}:
        shutil.copy2(raw, target)
        return
    from onnxruntime.transformers.optimizer import optimize_model
    optimised = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                               hidden_size=config.hidden_size)
    optimised.save_model_to_file(str(target))


def check_same_vectors(source, built: Path) -> None:
    """The export must give the vectors sentence-transformers gives, or it is not used."""
    import numpy as np
    reference = np.array(SentenceTransformerEmbeddings(source).embed_documents(list(PROBES)))
    similarity = (np.array(OnnxEmbeddings(built).embed_documents(list(PROBES))) * reference).sum(axis=1).min()
    if similarity < SAME_VECTORS:
        raise ApprentiError(f"the ONNX export of {source.name} gives other vectors (cosine {similarity:.4f})")


def read_pooling(path: Path) -> str:
    """Mean or CLS pooling, and nothing after it but normalisation: the models this fast path reproduces."""
    modules = [module.get("type", "").rsplit(".", 1)[-1] for module in read_json(path / "modules.json") or []]
    if set(modules) - {"Transformer", "Pooling", "Normalize"}:
        raise ApprentiError(f"{path} has modules the fast path does not run ({', '.join(modules)})")
    pooling = read_json(path / "1_Pooling" / "config.json")
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    if pooling.get("pooling_mode_mean_tokens", True) and not any(
            value for key, value in pooling.items() if key.startswith("pooling_mode_")
            and key not in {"pooling_mode_mean_tokens", "pooling_mode_cls_token"}):
        return "mean"
    raise ApprentiError(f"the pooling of {path} is neither mean nor CLS: no fast path for it")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def fingerprint(probe_vectors: list[list[float]]) -> list[float]:
    """A few components of the PROBES' vectors: enough to tell two models apart, small enough to keep in the
    store's metadata."""
    return [round(value, 5) for vector in probe_vectors for value in vector[:16]]


def same_model(recorded: list[float], current: list[float]) -> bool:
    """Two fingerprints of one model agree to rounding (ONNX and torch: 2.6e-7 apart at most)."""
    return len(recorded) == len(current) and max(abs(a - b) for a, b in zip(recorded, current)) < 2e-3
