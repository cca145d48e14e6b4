"""Evaluation of a model version on a question-answering set (evaluate_model.py holds the work)."""
from __future__ import annotations

from cli.registry import command, option
from common.config import Settings


@command("evaluate", "score a model version on a QA set (answers, refusals, retrieval, perplexity), with a report",
         option("--version", metavar="ID", help="the version to score (default: the champion, the one in use)"),
         option("--qa", metavar="PATH", help="a QA set (JSONL) instead of data/eval_qa.jsonl or the shipped one"),
         option("--json", action="store_true", help='print one object: {"version", "metrics"}'))
def evaluate(settings: Settings, arguments) -> int:
    from evaluate_model import evaluate_and_report
    return evaluate_and_report(settings, arguments.qa, arguments.json, arguments.version)
