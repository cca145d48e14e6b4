"""Human feedback: a rating after an answer, judgements from scripts, the preference datasets, the page."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from app.login import PAGE_KEY_VARIABLE
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import PROJECT_ROOT, Settings
from common.errors import ApprentiError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def ask_rating(settings: Settings, question: str, answer, texts: dict, history=()) -> None:
    """One key to rate (or skip); a bad answer may get the answer the user wanted. `history`: the conversation's
    turns before the question."""
    from feedback.records import Feedback, append
    choice = texts["rate_keys"].get(input(texts["rate"]).strip().lower()[:1])
    if choice is None:
        return
    correction = input(texts["wanted"]).strip() if choice == "bad" else ""
    append(settings.feedback_file, Feedback(
        question=question, answers=[{"text": answer.answer, "model": answer.model}], choice=choice, source="cli",
        context=[{"id": source.id, "text": source.text} for source in answer.sources], correction=correction,
        history=list(history)))
    print(texts["thanks"])


def add_verdict(parser) -> None:
    verdict = parser.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--good", action="store_true")
    verdict.add_argument("--bad", action="store_true")


@command("feedback", "record a judgement of an answer",
         option("--question", required=True),
         option("--answer", required=True, help="the answer judged"),
         add_verdict,
         option("--correction", help="the answer wanted (with --bad)"),
         option("--comment"),
         option("--context-id", nargs="+", metavar="ID",
                help="the passages the answer came from: chunk ids (ID#n) or document ids (all their chunks)"),
         option("--answer-model", help="the model that gave the answer"))
def record_feedback(settings: Settings, arguments) -> int:
    """Record a judgement of an answer, as the menu does after one."""
    from feedback.records import Feedback, append
    from knowledge_base import KnowledgeBase
    context = []
    if arguments.context_id:
        context = [{"id": chunk_id, "text": text}
                   for chunk_id, text in KnowledgeBase.open(settings).passages(arguments.context_id)]
    entry = Feedback(question=arguments.question, answers=[{"text": arguments.answer, "model": arguments.answer_model}],
                     choice="good" if arguments.good else "bad", source="cli", context=context,
                     correction=arguments.correction or "", comment=arguments.comment or "")
    append(settings.feedback_file, entry)
    print(f"Feedback {entry.id} saved in {settings.feedback_file}.")
    return 0


@command("merge-feedback", "build data/dataset_rlhf.jsonl and data/dataset_kto.jsonl from the feedback")
def merge_feedback(settings: Settings, arguments) -> int:
    """Build the preference datasets from all the feedback (step 4 of the pipeline)."""
    from feedback.datasets import merge
    if not settings.feedback_file.exists():
        print(f"No feedback yet ({settings.feedback_file} does not exist): rate some answers first.")
        return 0
    report = merge(settings.feedback_file, settings.rlhf_dataset, settings.kto_dataset)
    for problem in report.broken_lines:
        print(f"{settings.feedback_file}: {problem}: skipped", file=sys.stderr)
    print(f"{report.entries} feedback entries -> {report.pairs} preference pairs ({report.train} train, "
          f"{report.test} test) in {settings.rlhf_dataset}; {report.kto} rows in {settings.kto_dataset}.")
    for reason, count in report.skipped.items():
        print(f"  skipped {count}: {reason}")
    return 0


def page_key(host: str, given: str | None) -> str | None:
    """The key the page will ask for: --key, else APPRENTI_PAGE_KEY, else none. On an address other machines
    reach one is required: the pages show private passages and edit feedback."""
    key = given or os.environ.get(PAGE_KEY_VARIABLE) or None
    if host not in LOCAL_HOSTS and not key:
        raise ApprentiError(f"--host {host} makes the page reachable from other machines, which could read your "
                            f"passages and edit your feedback: give --key KEY too (or set {PAGE_KEY_VARIABLE}), "
                            "which the page then asks for")
    if host not in LOCAL_HOSTS:
        print(f"warning: the page is reachable from other machines ({host}); it asks for the key, which travels "
              "unencrypted (plain HTTP): use it on a network you trust", file=sys.stderr)
    return key


def key_option(parser) -> None:
    parser.add_argument("--key", help="the key the page asks for before showing anything; required to bind any "
                                      "address but this machine's. APPRENTI_PAGE_KEY does the same without "
                                      "showing it in the process list")


def serve_page(page: str, settings: Settings, host: str, port: int, texts: dict, announce: str = "page",
               key: str | None = None) -> int:
    """Streamlit serving app/<page> until Ctrl-C, with every setting of this process (data dir, models,
    threshold...), so that the page answers as the CLI does; texts[announce] says where it is. A `key` reaches
    the page through its environment, never its command line, which any user of the machine can read."""
    command_line = [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app" / page),
                    "--server.address", host, "--server.port", str(port), "--server.headless", "true",
                    "--browser.gatherUsageStats", "false"]
    environment = {**os.environ, **settings.environment()}
    if key:
        environment[PAGE_KEY_VARIABLE] = key
    print(texts[announce].format(host=host, port=port), flush=True)
    server = subprocess.Popen(command_line, env=environment)

    def stop(signal_number, frame):  # a terminated Apprenti takes its page down with it
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def menu_ui(assistant, texts: dict) -> None:
    serve_page("feedback_ui.py", assistant.settings, "127.0.0.1", 8501, texts)


@command("ui", "serve the feedback page: chat with answers to rate, compare two answers, fix past feedback",
         option("--host", default="127.0.0.1", help="address to bind (default: this machine only)"),
         option("--port", type=int, default=8501),
         key_option)
def ui(settings: Settings, arguments) -> int:
    """Serve the feedback page until Ctrl-C: a chat over the knowledge base whose answers you rate, a comparison
    of two answers, and the feedback history (from the CLI, this page and the API)."""
    key = page_key(arguments.host, arguments.key)
    return serve_page("feedback_ui.py", settings, arguments.host, arguments.port, TEXTS["en"], key=key)
