"""A bounded load test of the OpenAI-compatible API on loopback: completion tokens/s, requests/s and p50/p95
latency for 1, 4, 8 and 16 clients at once (the bundled model, the default backend, which decodes concurrent
requests together), asking grounded questions (short answers: retrieval and the prompt weigh as much as the
decoding), then asking for plain continuations (which run to their budget more often); then what clients that hang up cost the next one: six
256-token streams dropped after a second, and one short request timed.

    .venv/bin/python bench/serve_load.py [--requests 32] [--max-tokens 96]     (make bench runs it)
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import free_port, wait_for_port  # noqa: E402

FACTS = ["The Apprenti project's mascot is a blue heron called Pim.",
         "The ferry on Lake Quillmoor leaves at 7:15 every morning.",
         "Green tea is brewed at 80 degrees Celsius."]
STORIES = ["Once upon a time, in a village by a quiet lake, there lived an old ferryman who",
           "The history of tea begins in ancient China, where",
           "Herons are patient hunters. When they stand in shallow water,"]
QUESTIONS = ["What is the mascot of the Apprenti project? Tell me about it.",
             "When does the ferry on Lake Quillmoor leave, and how often?",
             "At what temperature is green tea brewed, and why?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per level of concurrency")
    parser.add_argument("--max-tokens", type=int, default=96)
    arguments = parser.parse_args()
    import openai
    from inference.locate import bundled_chat_model
    model = bundled_chat_model(ROOT / "models")
    with tempfile.TemporaryDirectory(prefix="apprenti-load-") as home:
        env = {**os.environ, "APPRENTI_HOME": home, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
        (Path(home) / "models").mkdir()
        (Path(home) / "models" / model.name).symlink_to(model)
        for number, fact in enumerate(FACTS):
            subprocess.run([sys.executable, str(ROOT / "cli_app.py"), "add", "--id", f"fact{number}", fact],
                           env=env, check=True, capture_output=True)
        port = free_port()
        server = subprocess.Popen([sys.executable, str(ROOT / "cli_app.py"), "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=600,
                                   max_retries=0)

            def ask(number: int) -> tuple[float, int]:
                """A grounded question: seconds the request took, and the completion tokens it got."""
                started = time.perf_counter()
                reply = client.chat.completions.create(model="apprenti", max_tokens=arguments.max_tokens, messages=[
                    {"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}])
                return time.perf_counter() - started, reply.usage.completion_tokens

            def continue_text(number: int) -> tuple[float, int]:
                """A plain continuation (/v1/completions), which runs to its token budget more often."""
                started = time.perf_counter()
                reply = client.completions.create(model="apprenti", max_tokens=arguments.max_tokens,
                                                  prompt=STORIES[number % len(STORIES)])
                return time.perf_counter() - started, reply.usage.completion_tokens
            ask(0)  # the model loads on the first question
            for name, request in (("grounded chat questions", ask), ("plain continuations", continue_text)):
                load_table(name, request, arguments.requests, arguments.max_tokens)
            idle = ask(0)[0]
            hang_up(port, streams=6, tokens=256)
            print(f"a short request: {idle:.2f} s on an idle server, {ask(0)[0]:.2f} s right after six 256-token "
                  "streams dropped after 1 s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


def load_table(name: str, request, requests: int, max_tokens: int) -> None:
    """`requests` requests sent by 1, 4, 8 then 16 clients at once: a table row each."""
    print(f"\n{name}: {requests} requests a level, {max_tokens} tokens at most each\n"
          "| clients | completion tok/s | x one client | requests/s | p50 s | p95 s | lost |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    one = None
    for clients in (1, 4, 8, 16):
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(lambda number: attempt(request, number), range(requests)))
        seconds = time.perf_counter() - started
        answered = [result for result in done if result is not None]
        latencies = sorted(latency for latency, _ in answered)
        rate = sum(tokens for _, tokens in answered) / seconds
        one = one or rate
        print(f"| {clients} | {rate:.1f} | {rate / one:.2f} | {len(answered) / seconds:.2f} | "
              f"{statistics.median(latencies):.2f} | {latencies[max(0, round(0.95 * len(latencies)) - 1)]:.2f} | "
              f"{len(done) - len(answered)} |", flush=True)


def attempt(ask, number: int):
    """The request's (seconds, tokens), or None for a request that failed (counted as lost)."""
    try:
        return ask(number)
    except Exception as error:  # any failure of a request is a lost request, and the bench goes on
        print(f"request {number} failed: {error}", file=sys.stderr)
        return None


def hang_up(port: int, streams: int, tokens: int) -> None:
    """`streams` clients ask for a long streamed answer each, at once, and go away a second later."""
    body = json.dumps({"model": "apprenti", "rag": False, "max_tokens": tokens, "temperature": 0.8, "stream": True,
                       "messages": [{"role": "user", "content": "Tell me a very long story about a heron."}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(streams)]
    for client in clients:
        client.sendall(request)
    time.sleep(1.0)
    for client in clients:
        client.close()


if __name__ == "__main__":
    main()
