"""A bounded load test of the OpenAI-compatible API on loopback: requests/s and p50/p95 latency for 1, 4 and
16 clients at once, each asking grounded questions (the bundled model, the default backend); then what clients
that hang up cost the next one: six 256-token streams dropped after a second, and one short request timed.

    .venv/bin/python bench/serve_load.py [--requests 32] [--max-tokens 32]     (make bench runs it)
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
sys.path.insert(0, str(ROOT / "tests"))
from conftest import free_port, wait_for_port  # noqa: E402

FACTS = ["The Apprenti project's mascot is a blue heron called Pim.",
         "The ferry on Lake Quillmoor leaves at 7:15 every morning.",
         "Green tea is brewed at 80 degrees Celsius."]
QUESTIONS = ["What is the mascot of the Apprenti project?", "When does the ferry on Lake Quillmoor leave?",
             "At what temperature is green tea brewed?", "Who won the football World Cup in 1998?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help="requests per level of concurrency")
    parser.add_argument("--max-tokens", type=int, default=32)
    arguments = parser.parse_args()
    import openai
    with tempfile.TemporaryDirectory(prefix="apprenti-load-") as home:
        env = {**os.environ, "APPRENTI_HOME": home, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
        (Path(home) / "models").mkdir()
        (Path(home) / "models" / "SmolLM2-135M-Instruct").symlink_to(ROOT / "models" / "SmolLM2-135M-Instruct")
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

            def ask(number: int) -> float:
                started = time.perf_counter()
                client.chat.completions.create(model="apprenti", max_tokens=arguments.max_tokens, messages=[
                    {"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}])
                return time.perf_counter() - started
            ask(0)  # the model loads on the first question
            for clients in (1, 4, 16):
                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    latencies = sorted(pool.map(ask, range(arguments.requests)))
                seconds = time.perf_counter() - started
                print(f"{clients:>2} clients: {arguments.requests / seconds:6.2f} requests/s   "
                      f"p50 {statistics.median(latencies):6.2f} s   "
                      f"p95 {latencies[max(0, round(0.95 * len(latencies)) - 1)]:6.2f} s   "
                      f"({arguments.requests} requests, {arguments.max_tokens} tokens at most, none lost)",
                      flush=True)
            idle = ask(0)
            hang_up(port, streams=6, tokens=256)
            print(f"a short request: {idle:.2f} s on an idle server, {ask(0):.2f} s right after six 256-token "
                  "streams dropped after 1 s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


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
