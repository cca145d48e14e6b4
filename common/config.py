"""Settings shared by every Apprenti entry point, and the data dir layout.

Precedence: the defaults below, then environment variables (machine-specific things), then command-line
flags, which the CLI passes to `Settings.load(...)` as overrides.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ApprentiError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The lowest fused retrieval score (knowledge_base.KnowledgeBase.search) that counts as an answer. Measured by
# `python bench/threshold.py` on bench/relevance_fixture.json (22 answerable, 20 unanswerable questions,
# English and French): 0.36 answers or refuses 95% of them rightly (0.54, the best on dense scores alone, 83%).
DEFAULT_RELEVANCE_THRESHOLD = 0.36
# What runs the model for answers, chosen by bench/inference.py (README, "Fast answers"): int8 answers as well
# as transformers and ~4x faster; int4 is faster still, but its answers to the QA set got worse.
BACKENDS = ("onnx-int8", "onnx-int4", "transformers")
DEFAULT_BACKEND = "onnx-int8"


@dataclass
class Settings:
    home: Path = field(default=PROJECT_ROOT, metadata={"env": "APPRENTI_HOME", "help": "data dir"})
    base_model: str = field(default=DEFAULT_BASE_MODEL,
                            metadata={"env": "APPRENTI_BASE_MODEL", "help": "hub id or local folder"})
    embedding_model: str = field(default=DEFAULT_EMBEDDING_MODEL,
                                 metadata={"env": "APPRENTI_EMBEDDING_MODEL", "help": "hub id or local folder"})
    chroma_url: str = field(default="", metadata={"env": "APPRENTI_CHROMA_URL",
                                                  "help": "a Chroma server (http://host:port) instead of chroma_db_store/"})
    relevance_threshold: float = field(default=DEFAULT_RELEVANCE_THRESHOLD,
                                       metadata={"env": "APPRENTI_RELEVANCE_THRESHOLD",
                                                 "help": "lowest retrieval score that counts as relevant"})
    top_k: int = field(default=4, metadata={"env": "APPRENTI_TOP_K", "help": "passages retrieved per question"})
    max_new_tokens: int = field(default=256, metadata={"env": "APPRENTI_MAX_NEW_TOKENS",
                                                       "help": "longest answer, in tokens"})
    use_finetuned: bool = field(default=True, metadata={"env": "APPRENTI_USE_FINETUNED",
                                                        "help": "answer with the champion (tinyllama_finetuned/)"})
    backend: str = field(default=DEFAULT_BACKEND, metadata={"env": "APPRENTI_BACKEND",
                                                        "help": "what runs the model for answers: ONNX Runtime "
                                                                "GenAI (onnx-int8, onnx-int4) or transformers"})
    gate: bool = field(default=True, metadata={"env": "APPRENTI_GATE",
                                               "help": "evaluate a new model and use it only if it does not regress"})
    log_answer_text: bool = field(default=False, metadata={"env": "APPRENTI_LOG_ANSWER_TEXT",
                                                           "help": "keep questions and answers in the answer log"})

    def __post_init__(self):
        self.home = Path(self.home).expanduser().resolve()
        self.relevance_threshold = float(self.relevance_threshold)
        problems = []
        if not -1.0 <= self.relevance_threshold <= 1.0:
            problems.append(f"relevance_threshold={self.relevance_threshold}: use a score between -1 and 1")
        if self.top_k < 1:
            problems.append(f"top_k={self.top_k}: retrieve at least 1 passage")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens}: allow at least 1 token")
        if self.backend not in BACKENDS:
            problems.append(f"backend={self.backend}: use one of {', '.join(BACKENDS)}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def load(cls, **overrides) -> "Settings":
        """Defaults, then environment variables, then the given overrides (None means 'not given')."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        values = {}
        for f in dataclasses.fields(cls):
            variable = f.metadata["env"]
            if os.environ.get(variable):
                values[f.name] = from_environment(variable, os.environ[variable], f.type)
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
        try:
            return cls(**values)
        except ValueError as error:
            raise ApprentiError(f"bad setting: {error}") from None

    def environment(self) -> dict[str, str]:
        """These settings as environment variables: a child process (a page, a trainer) loads the same."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # The data dir layout, named once here.
    @property
    def learning_data(self) -> Path:
        return self.home / "learning_data.txt"

    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma_db_store"

    @property
    def finetuned_dir(self) -> Path:
        return self.home / "tinyllama_finetuned"

    @property
    def models_dir(self) -> Path:
        """Model versions (inference/versions.py) and the bundled GGUF converted for fast loading."""
        return self.home / "models"

    @property
    def reward_models_dir(self) -> Path:
        """The reward models' versions and the link to the one in use (the pipeline sketch's reward_model/)."""
        return self.models_dir / "reward_model"

    @property
    def sft_train(self) -> Path:
        return self.data_dir / "train.jsonl"

    @property
    def sft_test(self) -> Path:
        return self.data_dir / "test.jsonl"

    @property
    def data_dir(self) -> Path:
        """Feedback and the datasets made from it (the pipeline sketch's data/)."""
        return self.home / "data"

    @property
    def feedback_file(self) -> Path:
        return self.data_dir / "feedback.jsonl"

    @property
    def rlhf_dataset(self) -> Path:
        return self.data_dir / "dataset_rlhf.jsonl"

    @property
    def rlhf_test_split(self) -> Path:
        """The held-out pairs that merge-feedback writes beside the preference dataset."""
        return self.rlhf_dataset.with_name(f"{self.rlhf_dataset.stem}_test.jsonl")

    @property
    def kto_dataset(self) -> Path:
        return self.data_dir / "dataset_kto.jsonl"

    @property
    def conversations_dir(self) -> Path:
        """The conversations kept to be continued (conversation/saved.py): one JSON file each."""
        return self.data_dir / "conversations"

    @property
    def answer_log(self) -> Path:
        return self.data_dir / "answers.jsonl"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def log_file(self) -> Path:
        return self.home / "apprenti.log"


def from_environment(variable: str, value: str, kind: str):
    try:
        if kind == "bool":
            if value.lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise ValueError
            return value.lower() in {"1", "true", "yes", "on"}
        return {"int": int, "float": float}.get(kind, str)(value)
    except ValueError:
        raise ApprentiError(f"bad setting: {variable}={value!r} is not a {kind}") from None
