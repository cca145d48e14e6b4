"""Evaluation reports: reports/<version>/report.json (everything, each answer too), report.md (the metrics
and the weakest answers) and two plots: the version against the champion, and every version's history."""
from __future__ import annotations

import json
from pathlib import Path

from common.config import Settings
from common.files import write_whole

RATES = ("answer_contains", "answer_f1", "exact_match", "rouge_l", "supported", "refusal_accuracy", "recall_at_k",
         "mrr", "facts_recalled", "preference_accuracy")  # metrics between 0 and 1, plotted on one axis
PERPLEXITIES = ("ppl_learning", "ppl_general")


def write_report(settings: Settings, version_id: str, report: dict, against: dict | None = None) -> Path:
    """Write the report of `version_id`; `against` is the champion's report, for the comparison."""
    folder = settings.reports_dir / version_id
    report = {**report, "version": version_id}
    write_whole(folder / "report.json", json.dumps(report, indent=2, ensure_ascii=False).encode())
    write_whole(folder / "report.md", markdown(report, against).encode())
    if against is not None and against.get("version") != version_id:
        plot_comparison(report, against, folder / "comparison.png")
    plot_history(settings, folder / "history.png")
    return folder


def read_report(settings: Settings, version_id: str) -> dict | None:
    try:
        return json.loads((settings.reports_dir / version_id / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def markdown(report: dict, against: dict | None) -> str:
    compared = against is not None and against.get("version") != report["version"]
    lines = [f"# Evaluation of version {report['version']} ({report['model']})", "",
             f"{report['questions']} questions from `{report['qa_set']}`, {report['evaluated_at']}, "
             f"{report['seconds']} s.", ""]
    if compared:
        lines += [f"| metric | {report['version']} | champion {against['version']} |", "| --- | --- | --- |"]
        lines += [f"| {name} | {shown(value)} | {shown(against['metrics'].get(name))} |"
                  for name, value in report["metrics"].items()]
    else:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {shown(value)} |" for name, value in report["metrics"].items()]
    weakest = sorted((row for row in report["answers"] if row["answerable"] and "answer_f1" in row),
                     key=lambda row: (row.get("answer_contains", 0.0), row["answer_f1"]))[:5]
    if weakest:
        lines += ["", "## Weakest answers", ""]
        lines += [f"- {row['question']} → {row['answer'][:200]!r} ({'has' if row.get('answer_contains') else 'lacks'} "
                  f"the answer, F1 {row['answer_f1']:.2f})" for row in weakest]
    lines += [f"- skipped {problem}" for problem in report["skipped_lines"]]
    return "\n".join(lines) + "\n"


def shown(value) -> str:
    return "n/a" if value is None else f"{value:g}"


def plot_comparison(report: dict, against: dict, path: Path) -> None:
    """Bars of each metric, the version beside the champion: rates on one axis, perplexities on another."""
    pyplot = matplotlib_pyplot()
    figure, (rates, perplexities) = pyplot.subplots(1, 2, figsize=(12, 4), width_ratios=[3, 1])
    for axis, names in ((rates, RATES), (perplexities, PERPLEXITIES)):
        names = [name for name in names if report["metrics"].get(name) is not None
                 or against["metrics"].get(name) is not None]
        positions = range(len(names))
        for offset, (label, metrics) in ((-0.2, (f"version {report['version']}", report["metrics"])),
                                         (0.2, (f"champion {against['version']}", against["metrics"]))):
            axis.bar([p + offset for p in positions], [metrics.get(name) or 0 for name in names], 0.4, label=label)
        axis.set_xticks(list(positions), names, rotation=45, ha="right")
    rates.set_ylim(0, 1)
    rates.legend()
    perplexities.set_yscale("log")
    figure.tight_layout()
    save(figure, path)


def plot_history(settings: Settings, path: Path) -> None:
    """Each metric across every evaluated version, oldest first."""
    from inference.versions import Versions
    versions, _ = Versions(settings).all()
    reports = [(version.id, read_report(settings, version.id)) for version in versions]
    reports = [(version_id, report["metrics"]) for version_id, report in reports if report]
    if not reports:
        return
    pyplot = matplotlib_pyplot()
    names = [name for name in (*RATES, *PERPLEXITIES) if any(metrics.get(name) is not None for _, metrics in reports)]
    columns = 4
    figure, axes = pyplot.subplots(-(-len(names) // columns), columns, figsize=(14, 3 * -(-len(names) // columns)),
                                   squeeze=False)
    labels = [version_id for version_id, _ in reports]
    for axis, name in zip(axes.flat, names):
        axis.plot(labels, [metrics.get(name) for _, metrics in reports], marker="o")
        axis.set_title(name)
        axis.tick_params(axis="x", labelrotation=45, labelsize=7)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    figure.tight_layout()
    save(figure, path)


def matplotlib_pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display here
    from matplotlib import pyplot
    return pyplot


def save(figure, path: Path) -> None:
    """Written beside and renamed into place, as every other file of the data dir."""
    import io
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    matplotlib_pyplot().close(figure)
    write_whole(path, buffer.getvalue())
