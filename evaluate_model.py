"""Evaluation: the model in use (or the base model, --base) scored on a question-answering set, with a report.

    python evaluate_model.py [--version ID] [--qa PATH] [--json]      (the same as: python cli_app.py evaluate)

Metrics (null where there is nothing to measure them on):
  answer_contains                   answers to answerable questions that contain a reference (right, whatever
                                    their length); the gate judges answers by it
  answer_f1, exact_match, rouge_l   the answers to answerable questions against their references
  supported                         the share of an answer's words found in the passages it came from
  refusal_accuracy                  answerable questions answered and unanswerable ones refused (by retrieval
                                    or in the model's words), together
  answered_rightly, refused_rightly the two halves of it
  recall_at_k, mrr                  the knowledge base's search: over the set's passages for questions with a
                                    context, over the user's knowledge base for the others
  ppl_learning, ppl_general         perplexity on learning_data.txt (learned) and a general text (forgotten?)
  facts_recalled                    taught entries whose last words the model completes (as `complete`)
  preference_accuracy               test pairs of data/dataset_rlhf.jsonl where the chosen answer is likelier

The QA set is data/eval_qa.jsonl when it exists, else evaluation/qa_set.jsonl (shipped); its format is in
evaluation/qa_set.py. The version is the champion unless --version (or --base) says otherwise; the report goes
to reports/<version>/ in the data dir: report.json, report.md, comparison.png (against the champion, when its
report was made on the same inputs) and history.png (every evaluated version). After a training run the
promotion gate (evaluation/gate.py) makes these reports itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.config import Settings


def evaluate_and_report(settings: Settings, qa: str | None, as_json: bool, version: str | None = None) -> int:
    """What `evaluate` does: score a version (the champion by default) with a progress bar, write its report
    (beside the champion's, when one was made on the same inputs), print the metrics."""
    from cli.progress import StageProgress
    from evaluation.evaluate import evaluate
    from evaluation.gate import reusable_report
    from evaluation.reports import write_report
    from inference.versions import Versions
    versions = Versions(settings)
    champion = versions.in_use()
    version = version or champion
    progress = StageProgress()
    try:
        qa_path = Path(qa).expanduser() if qa else None
        report = evaluate(settings, qa_path, progress, source=versions.source(version))
    finally:
        progress.close()
    against = reusable_report(settings, champion, report["inputs"]) if version != champion else None
    folder = write_report(settings, version, report, against)
    for problem in report["skipped_lines"]:
        print(f"{report['qa_set']}: {problem}: skipped", file=sys.stderr)
    if as_json:
        print(json.dumps({"version": version, "metrics": report["metrics"]}))
        return 0
    print(f"Version {version} ({report['model']}) on {report['questions']} questions ({report['seconds']} s):")
    for name, value in report["metrics"].items():
        champion_value = f"   champion {champion}: {against['metrics'].get(name)}" if against else ""
        print(f"  {name:<20} {'n/a' if value is None else value}{champion_value}")
    print(f"Report: {folder / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The same as `cli_app.py evaluate`, whose error handling it shares."""
    from cli_app import main as cli_main
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data dir (default: APPRENTI_HOME, else the project folder)")
    parser.add_argument("--model", help="base model: hub id or folder (default: APPRENTI_BASE_MODEL, else TinyLlama)")
    parser.add_argument("--base", action="store_true", help="evaluate the base model, not the champion")
    parser.add_argument("--version", help="the version to evaluate (python cli_app.py models list)")
    parser.add_argument("--qa", help="a QA set (JSONL) instead of data/eval_qa.jsonl or the shipped one")
    parser.add_argument("--json", action="store_true", help='print one object: {"version", "metrics"}')
    arguments = parser.parse_args(argv)
    global_options = [*(["--home", arguments.home] if arguments.home else []),
                      *(["--model", arguments.model] if arguments.model else []), *(["--base"] if arguments.base else [])]
    return cli_main([*global_options, "evaluate", *(["--qa", arguments.qa] if arguments.qa else []),
                     *(["--version", arguments.version] if arguments.version else []),
                     *(["--json"] if arguments.json else [])])


if __name__ == "__main__":
    raise SystemExit(main())
