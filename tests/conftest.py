"""Every test runs offline in its own data dir. Tiny models built from a config serve the plumbing; the
bundled model, converted once per session, serves the tests that prove the product works."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"


@pytest.fixture(scope="session")
def embedding_exports(tmp_path_factory) -> Path:
    """The bundled embedding model exported for fast queries once for the session (store/embeddings.py)."""
    from common.config import Settings
    from store.embeddings import embeddings_for
    home = tmp_path_factory.mktemp("embeddings")
    embeddings_for(Settings.load(home=home))
    return home / "models" / "onnx-embeddings"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch, embedding_exports) -> Path:
    """The data dir of one test; the user's store and learning data are never touched. It shares the
    session's export of the embedding model."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "onnx-embeddings").symlink_to(embedding_exports, target_is_directory=True)
    monkeypatch.setenv("APPRENTI_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LANG", "C.UTF-8")
    # A new model is used without the promotion gate's evaluation, which would judge tiny random models on
    # noise; the gate's own tests (test_gate.py) turn it on.
    monkeypatch.setenv("APPRENTI_GATE", "false")
    # Tiny models answer through transformers (the plumbing); the real model through the default, fast
    # backend (see real_model).
    monkeypatch.setenv("APPRENTI_BACKEND", "transformers")
    # A tiny model reads 128 tokens: short answers leave room for a prompt with its passages, which always
    # keeps its most relevant one (the real model answers at the default length, see real_model).
    monkeypatch.setenv("APPRENTI_MAX_NEW_TOKENS", "16")
    for variable in ("APPRENTI_BASE_MODEL", "APPRENTI_EMBEDDING_MODEL", "APPRENTI_RELEVANCE_THRESHOLD",
                     "APPRENTI_PAGE_KEY", "APPRENTI_API_KEY",
                     "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture(scope="session")
def embeddings(embedding_exports):
    """The bundled embedding model, loaded once for the whole session."""
    from common.config import Settings
    from store.embeddings import embeddings_for
    return embeddings_for(Settings.load(home=embedding_exports.parent.parent))


@pytest.fixture
def kb(home, embeddings):
    """The test's own knowledge base."""
    from knowledge_base import KnowledgeBase
    return KnowledgeBase(home / "chroma_db_store", embeddings)


@pytest.fixture(scope="session")
def bundled_models(tmp_path_factory) -> Path:
    """The bundled chat model converted once for the whole session: to safetensors, and for fast answers."""
    from common.config import Settings
    from inference.locate import BUNDLED_CHAT_MODEL, ModelSource, bundled_chat_model
    from inference.onnx_model import converted
    home = tmp_path_factory.mktemp("bundled")
    settings = Settings.load(home=home)
    converted(settings, ModelSource(BUNDLED_CHAT_MODEL, bundled_chat_model(settings.models_dir)))
    (settings.models_dir / "replay").mkdir()  # the model's answers that fine-tuning replays, made once too
    return settings.models_dir


@pytest.fixture
def real_model(home, bundled_models, monkeypatch) -> Path:
    """The test's data dir, set up to use the real bundled model without converting it again."""
    monkeypatch.delenv("APPRENTI_BACKEND")  # the default: answers as a user gets them
    monkeypatch.delenv("APPRENTI_MAX_NEW_TOKENS")
    # the test's own versions go in its models/; the converted models are shared
    for converted in bundled_models.iterdir():
        (home / "models" / converted.name).symlink_to(converted, target_is_directory=True)
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


@pytest.fixture(scope="session")
def tiny_replay(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-replay")


@pytest.fixture
def tiny_model(tiny_model_dir, tiny_replay, home, monkeypatch) -> Path:
    """The tiny model as the base model; the general answers fine-tuning replays are made once for the session
    (a test of their making removes the link)."""
    monkeypatch.setenv("APPRENTI_BASE_MODEL", str(tiny_model_dir))
    (home / "models").mkdir(exist_ok=True)
    (home / "models" / "replay").symlink_to(tiny_replay, target_is_directory=True)
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


@pytest.fixture
def started_pages(monkeypatch) -> list:
    """The (command, environment) of each page server the CLI starts, without starting any."""
    from cli import feedback as cli_feedback
    started = []

    class Server:
        def __init__(self, command, env):
            started.append((command, env))

        def wait(self):
            return 0

    monkeypatch.setattr(cli_feedback.subprocess, "Popen", Server)
    return started


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    addresses.add(address)
    return addresses


# ---------------------------------------------------------------- a real browser, for the pages

@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed here when missing."""
    if not (shutil.which("chromedriver") and shutil.which("chromium")):
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(chromium):
    """Headless Chromium driven through selenium, closed after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromium[1]), options=options)
    yield driver
    driver.quit()


def short_qa_set(home: Path) -> None:
    """Two questions of the shipped set, one to answer and one to refuse, their passages cut to 40 words (a
    tiny model reads 128 tokens), as the user's own set: what the gate's tests on tiny models judge on."""
    import json
    lines = (ROOT / "evaluation" / "qa_set.jsonl").read_text().splitlines()  # answerable first, then not
    rows = [json.loads(line) for line in (lines[0], lines[-1])]
    (home / "data").mkdir(exist_ok=True)
    (home / "data" / "eval_qa.jsonl").write_text("".join(
        json.dumps({**row, "context": " ".join(row["context"].split()[:40])} if "context" in row else row) + "\n"
        for row in rows))
