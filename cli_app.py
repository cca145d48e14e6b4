"""Apprenti: a local assistant that answers from your knowledge base and learns from what you teach it.

Without a command, the menu. With one, the same actions for scripts:
  ask QUESTION        answer from the knowledge base, with its sources (--json, -k N, --no-rag)
  add TEXT            add knowledge (--id ID, --replace, --file PATH; TEXT '-' reads stdin)
  ingest PATH...      add files and folders (.txt .md .html .pdf .docx .jsonl); again: only what changed
  search QUERY        the ranked passages, without an answer (--json, -k N; QUERY '-': one query a line)
  learn TEXT          teach an entry: learning_data.txt and the knowledge base (--file PATH; '-' reads stdin)
  learned / forget ID the entries taught, with their ids / take one back
  finetune            teach the model itself the entries (questions about them answered closed-book)
  feedback            record a judgement of an answer (--question Q --answer A --good | --bad [--correction C])
  merge-feedback      build the preference datasets (data/dataset_rlhf.jsonl, data/dataset_kto.jsonl)
  ui                  serve the feedback page: compare two answers, fix past feedback (--port 8501)
  dashboard           serve the monitoring dashboard: versions, evaluations, feedback, latency (--port 8502)
  complete TEXT       the model's plain continuation of TEXT (what fine-tuning taught shows here)
  evaluate            score the model in use on a QA set, with a report (--qa PATH, --json)
  serve               the OpenAI-compatible API on 127.0.0.1:8000 (--host, --port, --api-key)
  status              models, knowledge base and learning data
  models ACTION       model versions: list, show ID, use ID [--force], rollback, diff A B, prune --keep N
  list / export       the knowledge base's documents, as a table / as JSONL (--chunks: every chunk)
  delete ID           remove a document from the knowledge base
  reembed             embed the knowledge base again after the embedding model changed (resumable)
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

# Each module of cli/ registers its commands; the imports below are what fills the table.
from cli import (alignment, answers, conversations, dashboard, evaluation, feedback, knowledge, learning,  # noqa: F401
                 models, serve, status)
from cli.menu import run_menu
from cli.registry import COMMANDS, add_commands
from common.config import Settings
from common.crash import log_crash
from common.errors import ApprentiError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli_app.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="base model, hub id or folder (env APPRENTI_BASE_MODEL; default TinyLlama)")
    parser.add_argument("--base", action="store_true", help="use the base model, not the fine-tuned one")
    parser.add_argument("--threshold", type=float, help="lowest relevance score of a passage (env "
                                                        "APPRENTI_RELEVANCE_THRESHOLD)")
    parser.add_argument("--home", help="data dir (env APPRENTI_HOME; default: this folder)")
    add_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C stops an answer, an ingest or a training and returns to the menu, even when a launcher (a shell
    # running this in the background, say) passed SIGINT on as ignored, which Python would keep.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    arguments = build_parser().parse_args(argv)
    if arguments.command in {"add", "learn"} and (arguments.text is None) == (arguments.file is None):
        print(f"error: {arguments.command} takes a TEXT or --file PATH (one of them)", file=sys.stderr)
        return 2
    if getattr(arguments, "k", None) is not None and arguments.k < 1:
        print("error: -k must be at least 1", file=sys.stderr)
        return 2
    settings = None
    try:
        settings = Settings.load(home=arguments.home, base_model=arguments.model,
                                 relevance_threshold=arguments.threshold,
                                 use_finetuned=False if arguments.base else None)
        run = COMMANDS[arguments.command].run if arguments.command else run_menu
        return run(settings, arguments)
    except ApprentiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): nothing more to say, and no one to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush is quiet
        return 1
    except Exception as error:  # a bug of ours: the whole story goes to the log, one line to the user
        log = settings.log_file if settings else Path("apprenti.log")
        print(f"error: {log_crash(log, 'cli', error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
