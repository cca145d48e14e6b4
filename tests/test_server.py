"""The OpenAI-compatible API, through the clients people use: the `openai` package and LangChain."""
import json
import os
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from common.config import DEFAULT_BACKEND
from conftest import ROOT, free_port, run_cli, wait_for_port

MASCOT = "The Apprenti project's mascot is a blue heron called Pim."
QUESTION = "What is the mascot of the Apprenti project?"


def start_server(home, *flags, env=None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "cli_app.py"), "serve", "--port", str(port), *flags],
                              cwd=ROOT, env={**os.environ, "APPRENTI_HOME": str(home), **(env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_port(port)
    return server, port


@pytest.fixture(scope="module")
def api(tmp_path_factory, bundled_models, embeddings):
    """One server for the module, on the real bundled model, with one fact in its knowledge base."""
    from knowledge_base import KnowledgeBase
    home = tmp_path_factory.mktemp("api-home")
    (home / "models").mkdir()
    for converted in bundled_models.iterdir():
        (home / "models" / converted.name).symlink_to(converted, target_is_directory=True)
    KnowledgeBase(home / "chroma_db_store", embeddings).add(MASCOT, "mascot")  # written before the server reads
    env = {"APPRENTI_HOME": str(home), "APPRENTI_BACKEND": DEFAULT_BACKEND, "APPRENTI_MAX_NEW_TOKENS": "48"}
    server, port = start_server(home, env=env)
    yield {"home": home, "url": f"http://127.0.0.1:{port}/v1", "server": server}
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def client(api):
    return openai.OpenAI(base_url=api["url"], api_key="unused", max_retries=0, timeout=120)


def test_a_question_is_answered_with_its_sources_whole_and_streamed(api, client):
    assert [model.id for model in client.models.list()] == ["apprenti", "base"]
    completion = client.chat.completions.create(model="apprenti", messages=[{"role": "user", "content": QUESTION}])
    assert "Pim" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"  # a one-sentence answer, well within its 48 tokens
    assert completion.model_extra["refused"] is False
    assert completion.model_extra["sources"][0]["id"] == "mascot#0"

    chunks = list(client.chat.completions.create(model="apprenti", stream=True,
                                                 messages=[{"role": "user", "content": QUESTION}]))
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces).strip() == completion.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == completion.choices[0].finish_reason
    assert chunks[-1].model_extra["sources"][0]["id"] == "mascot#0"


def test_a_question_nothing_answers_is_refused(client):
    completion = client.chat.completions.create(
        model="apprenti", messages=[{"role": "user", "content": "Who won the football World Cup in 1998?"}])
    assert completion.choices[0].message.content.startswith("I don't know")
    assert completion.model_extra == {"sources": [], "refused": True}


def test_stop_max_tokens_temperature_and_the_base_model(client):
    ask = dict(model="apprenti", messages=[{"role": "user", "content": QUESTION}])
    short = client.chat.completions.create(max_tokens=3, **ask)
    assert short.choices[0].finish_reason == "length" and len(short.choices[0].message.content.split()) <= 3
    stopped = client.chat.completions.create(stop=["heron"], **ask)
    assert "heron" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    assert client.chat.completions.create(temperature=0.8, **ask).choices[0].message.content
    plain = client.chat.completions.create(model="base", messages=[{"role": "user", "content":
                                                                     "Who wrote Romeo and Juliet?"}],
                                           extra_body={"rag": False})
    assert "Shakespeare" in plain.choices[0].message.content and plain.model_extra["sources"] == []


def test_langchain_chat_openai_talks_to_it(api):
    from langchain_openai import ChatOpenAI
    chat = ChatOpenAI(base_url=api["url"], api_key="unused", model="apprenti", max_retries=0)
    assert "Pim" in chat.invoke(QUESTION).content
    assert len([piece for piece in chat.stream(QUESTION) if piece.content]) > 3


def test_embeddings_are_the_knowledge_base_s(client, embeddings):
    vectors = client.embeddings.create(model="apprenti", input=[MASCOT, "Green tea"]).data  # base64 on the wire
    expected = embeddings.embed_documents([MASCOT])[0]
    assert len(vectors) == 2 and len(vectors[0].embedding) == len(expected) == 384
    assert max(abs(a - b) for a, b in zip(vectors[0].embedding, expected)) < 1e-4
    as_floats = httpx.post(f"{client.base_url}embeddings", json={"input": "Green tea", "encoding_format": "float"})
    assert as_floats.json()["data"][0]["embedding"] == pytest.approx(vectors[1].embedding, abs=1e-6)


def test_feedback_is_recorded_as_the_cli_records_it(api, client):
    sent = httpx.post(f"{client.base_url}feedback", json={
        "question": QUESTION, "answer": "A heron.", "rating": "bad", "correction": "Pim, a blue heron.",
        "sources": ["mascot#0"], "model": "apprenti"})
    assert sent.status_code == 200, sent.text
    lines = (api["home"] / "data" / "feedback.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["id"] == sent.json()["id"] and record["source"] == "api" and record["choice"] == "bad"
    assert record["context"] == [{"id": "mascot#0", "text": MASCOT}]
    refused = httpx.post(f"{client.base_url}feedback", json={"question": QUESTION, "answer": "x", "rating": "good",
                                                             "correction": "y"})
    assert refused.status_code == 400 and "a good answer needs no correction" in refused.json()["error"]["message"]


def test_bad_requests_get_the_api_s_errors_and_the_server_stays_up(api, client):
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="apprenti", messages=[])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="apprenti", messages=[{"role": "user", "content": "Hi"}],
                                       temperature="hot")
    with pytest.raises(openai.NotFoundError, match="no model 'gpt-4o'"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    huge = httpx.post(f"{client.base_url}chat/completions", content=b"x" * 10_000_000,
                      headers={"content-type": "application/json"}, timeout=60)
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    broken = httpx.post(f"{client.base_url}chat/completions", content=b'{"messages": [',
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "error" in broken.json()
    assert api["server"].poll() is None and client.models.list().data


def test_clients_at_once_are_queued_and_all_answered(client):
    answers, failures = [], []

    def ask():
        try:
            answers.append(client.chat.completions.create(
                model="apprenti", max_tokens=16, messages=[{"role": "user", "content": QUESTION}]))
        except Exception as error:
            failures.append(error)
    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(answers) == 6
    assert len({answer.choices[0].message.content for answer in answers}) == 1  # greedy: the same answer


def test_another_address_needs_an_api_key_checked_on_every_request(home):
    refused = run_cli("serve", "--host", "0.0.0.0", timeout=60)
    assert refused.returncode != 0 and "--api-key" in refused.stderr and "Traceback" not in refused.stderr
    server, port = start_server(home, "--host", "0.0.0.0", "--api-key", "s3cret")  # models listed, not loaded
    try:
        url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        assert openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0).models.list().data[0].id == "apprenti"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "reachable from other machines" in server.stderr.read()


def test_a_port_in_use_is_one_clear_message(home):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = run_cli("serve", "--port", str(taken.getsockname()[1]), timeout=60)
    assert busy.returncode == 1 and "cannot serve on 127.0.0.1" in busy.stderr and "Traceback" not in busy.stderr
    assert "OpenAI-compatible API" not in busy.stdout  # no address announced that does not answer
