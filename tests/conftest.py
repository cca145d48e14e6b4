"""Every test runs offline in its own data dir. Tiny models built from a config serve the plumbing; the
bundled model, converted once per session, serves the tests that prove the product works."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """The data dir of one test; the user's store and learning data are never touched."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("APPRENTI_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LANG", "C.UTF-8")
    for variable in ("APPRENTI_BASE_MODEL", "APPRENTI_EMBEDDING_MODEL", "APPRENTI_RELEVANCE_THRESHOLD",
                     "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture(scope="session")
def embeddings():
    """The bundled embedding model, loaded once for the whole session."""
    from common.config import Settings
    from store.vector_store import embeddings_for
    return embeddings_for(Settings.load())


@pytest.fixture
def kb(home, embeddings):
    """The test's own knowledge base."""
    from knowledge_base import KnowledgeBase
    return KnowledgeBase(home / "chroma_db_store", embeddings)


@pytest.fixture(scope="session")
def bundled_models(tmp_path_factory) -> Path:
    """The bundled chat model converted to safetensors once for the whole session."""
    from inference.locate import bundled_chat_model
    models_dir = tmp_path_factory.mktemp("models")
    bundled_chat_model(models_dir)
    return models_dir


@pytest.fixture
def real_model(home, bundled_models) -> Path:
    """The test's data dir, set up to use the real bundled model without converting it again."""
    (home / "models").symlink_to(bundled_models, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_models) -> Path:
    """A 2-layer, 16-wide Llama with the bundled tokenizer and a 128-token window: seconds to train."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(bundled_models / "SmolLM2-135M-Instruct")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model(tiny_model_dir, monkeypatch) -> Path:
    monkeypatch.setenv("APPRENTI_BASE_MODEL", str(tiny_model_dir))
    return tiny_model_dir


def run_cli(*arguments: str, input: str | None = None, env: dict | None = None, timeout: float = 300):
    """cli_app.py in a subprocess, as a user's shell would run it."""
    import subprocess
    return subprocess.run([sys.executable, str(ROOT / "cli_app.py"), *arguments], input=input, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, seconds: float = 60) -> None:
    """Until a server listens on the loopback port (or the time is up: the test then fails on its own)."""
    import socket
    import time
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)


def at_once(target, calls: list[tuple]) -> None:
    """target(*arguments) for each arguments in `calls`, each in its own process, all at the same time."""
    import multiprocessing
    workers = [multiprocessing.Process(target=target, args=arguments) for arguments in calls]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
