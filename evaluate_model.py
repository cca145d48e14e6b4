"""Evaluation: the model in use (or the base model, --base) scored on a question-answering set, with a report.

    python evaluate_model.py [--qa PATH] [--json] [--base]      (the same as: python cli_app.py evaluate)

Metrics (null where there is nothing to measure them on):
  answer_f1, exact_match, rouge_l   the answers to answerable questions against their references
  supported                         the share of an answer's words found in the passages it came from
  refusal_accuracy                  answerable questions answered and unanswerable ones refused, together
  answered_rightly, refused_rightly the two halves of it
  recall_at_k, mrr                  the knowledge base's search over the set's passages
  ppl_learning, ppl_general         perplexity on learning_data.txt (learned) and a general text (forgotten?)
  facts_recalled                    taught entries whose last words the model completes (as `complete`)
  preference_accuracy               test pairs of data/dataset_rlhf.jsonl where the chosen answer is likelier

The QA set is data/eval_qa.jsonl when it exists, else evaluation/qa_set.jsonl (shipped); its format is in
evaluation/qa_set.py. The report goes to reports/<model>/report.json and report.md in the data dir.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.config import Settings
from common.files import write_whole


def model_label(settings: Settings) -> str:
    """What the report folder is named after: the base model, or the fine-tuned model by its date."""
    from inference.installed import installed_record
    record = installed_record(settings.finetuned_dir) if settings.use_finetuned else None
    return "base" if record is None else "finetuned-" + record["finished_at"].replace(":", "").replace("-", "")


def write_report(settings: Settings, label: str, report: dict) -> Path:
    """report.json (everything, each answer too) and report.md (the metrics and the weakest answers)."""
    folder = settings.home / "reports" / label
    write_whole(folder / "report.json", json.dumps(report, indent=2, ensure_ascii=False).encode())
    lines = [f"# Evaluation of {report['model']}", "",
             f"{report['questions']} questions from `{report['qa_set']}`, {report['evaluated_at']}, "
             f"{report['seconds']} s.", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {'n/a' if value is None else value} |" for name, value in report["metrics"].items()]
    weakest = sorted((row for row in report["answers"] if row["answerable"] and "answer_f1" in row),
                     key=lambda row: row["answer_f1"])[:5]
    if weakest:
        lines += ["", "## Weakest answers", ""]
        lines += [f"- {row['question']} → {row['answer'][:200]!r} (F1 {row['answer_f1']:.2f})" for row in weakest]
    for problem in report["skipped_lines"]:
        lines.append(f"- skipped {problem}")
    write_whole(folder / "report.md", ("\n".join(lines) + "\n").encode())
    return folder


def evaluate_and_report(settings: Settings, qa: str | None, as_json: bool) -> int:
    """What `evaluate` does: score with a progress bar, write the report, print the metrics."""
    from cli.progress import StageProgress
    from evaluation.evaluate import evaluate
    progress = StageProgress()
    try:
        report = evaluate(settings, Path(qa).expanduser() if qa else None, progress)
    finally:
        progress.close()
    label = model_label(settings)
    folder = write_report(settings, label, report)
    for problem in report["skipped_lines"]:
        print(f"{report['qa_set']}: {problem}: skipped", file=sys.stderr)
    if as_json:
        print(json.dumps({"version": label, "metrics": report["metrics"]}))
        return 0
    print(f"{report['model']} on {report['questions']} questions ({report['seconds']} s):")
    for name, value in report["metrics"].items():
        print(f"  {name:<20} {'n/a' if value is None else value}")
    print(f"Report: {folder / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The same as `cli_app.py evaluate`, whose error handling it shares."""
    from cli_app import main as cli_main
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="data dir (default: APPRENTI_HOME, else the project folder)")
    parser.add_argument("--model", help="base model: hub id or folder (default: APPRENTI_BASE_MODEL, else TinyLlama)")
    parser.add_argument("--base", action="store_true", help="evaluate the base model, not the fine-tuned one")
    parser.add_argument("--qa", help="a QA set (JSONL) instead of data/eval_qa.jsonl or the shipped one")
    parser.add_argument("--json", action="store_true", help='print one object: {"version", "metrics"}')
    arguments = parser.parse_args(argv)
    global_options = [*(["--home", arguments.home] if arguments.home else []),
                      *(["--model", arguments.model] if arguments.model else []), *(["--base"] if arguments.base else [])]
    return cli_main([*global_options, "evaluate", *(["--qa", arguments.qa] if arguments.qa else []),
                     *(["--json"] if arguments.json else [])])


if __name__ == "__main__":
    raise SystemExit(main())
