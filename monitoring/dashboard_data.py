"""What the monitoring dashboard shows, shaped from the files Apprenti writes: the versions and their training
runs, the evaluation reports, the feedback, the answer log and the knowledge base's metadata. No Streamlit
and no model here: app/dashboard_monitoring.py renders (monitoring/ratings.py rates the models from the votes).

Every reader returns (rows, problems): a broken line or file is named in `problems` and left out, and the
rest is shown.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from common.config import Settings
from feedback.records import CHOICES, Feedback
from inference.versions import Version, Versions
from monitoring.answer_log import is_number
from monitoring.ratings import model_of, rate, version_of

# ------------------------------------------------------------------ versions and training runs

@dataclass
class VersionsOnDisk:
    versions: list[Version]  # the base first, then by creation
    champion: str
    history: list[dict]  # the promotion log, oldest first
    problems: list[str]  # unreadable versions


def read_versions(settings: Settings) -> VersionsOnDisk:
    """What models/ holds, read without resolving or loading any model."""
    versions = Versions(settings)
    found, problems = versions.all()
    return VersionsOnDisk(found, versions.champion(), versions.history(), problems)


def lineage(versions: list[Version], version_id: str) -> list[str]:
    """`version_id` and its ancestors, oldest first (base, ..., version_id), by the manifests' parents."""
    parents = {version.id: version.manifest.get("parent") for version in versions}
    chain = [version_id]
    while parents.get(chain[-1]) and parents[chain[-1]] not in chain:  # a loop in hand-edited manifests stops
        chain.append(parents[chain[-1]])
    return chain[::-1]


def gate_summary(manifest: dict) -> str:
    """The promotion gate's judgement of a version in a few words: how many metrics held, which failed."""
    gate = manifest.get("gate")
    if not isinstance(gate, dict):
        return ""
    if gate.get("skipped"):
        return f"skipped: {gate['skipped']}"
    findings = [finding for finding in gate.get("findings") or [] if isinstance(finding, dict)]
    if not findings:
        return "no metric to compare"
    failed = [finding for finding in findings if not finding.get("passed")]
    text = f"{len(findings) - len(failed)} of {len(findings)} metrics held"
    if failed:
        text += "; worse: " + ", ".join(f"{f.get('metric')} {number_text(f.get('champion'))} -> "
                                        f"{number_text(f.get('candidate'))}" for f in failed)
    return text


def version_rows(on_disk: VersionsOnDisk) -> list[dict]:
    """The versions table: what `models list` says of each, with the gate's judgement."""
    return [{**version.summary(on_disk.champion), "weights": version.manifest.get("weights"),
             "gate": gate_summary(version.manifest)} for version in on_disk.versions]


def promotion_rows(history: list[dict]) -> list[dict]:
    """The promotion log, newest first, with what else an event records (a reason...) as one text."""
    fixed = ("time", "action", "version", "previous")
    return [{**{name: event.get(name) for name in fixed},
             "details": ", ".join(f"{name}={json.dumps(value)}" for name, value in event.items() if name not in fixed)}
            for event in reversed(history) if isinstance(event, dict)]


def training_runs(versions: list[Version]) -> tuple[list[dict], list[dict], list[str]]:
    """(one row per trained version, the loss curves' points {"version","step","loss"}, problems)."""
    runs, points, problems = [], [], []
    for version in versions:
        training = version.manifest.get("training")
        if version.folder is None or training is None:
            continue
        if not isinstance(training, dict):
            problems.append(f"version {version.id}: 'training' is not a JSON object")
            continue
        history = training.get("loss_history") or []
        if not isinstance(history, list):
            problems.append(f"version {version.id}: its loss history is not a list")
            history = []
        good = [point for point in history
                if isinstance(point, dict) and is_number(point.get("step")) and is_number(point.get("loss"))]
        if len(good) < len(history):
            problems.append(f"version {version.id}: {len(history) - len(good)} point(s) of its loss history are "
                            "not {\"step\": number, \"loss\": number}")
        points += [{"version": version.id, "step": point["step"], "loss": point["loss"]} for point in good]
        runs.append({"version": version.id, "method": version.manifest.get("method"),
                     "weights": version.manifest.get("weights"), "steps": number_or_none(training.get("steps")),
                     "seconds": number_or_none(training.get("seconds")),
                     "first loss": good[0]["loss"] if good else None,
                     "final loss": number_or_none(training.get("final_loss", good[-1]["loss"] if good else None)),
                     "verdict": version.verdict})
    return runs, points, problems


# ------------------------------------------------------------------ evaluation reports

def read_reports(reports_dir: Path, order: list[str]) -> tuple[list[dict], list[str]]:
    """One row per reports/<version>/report.json: {"version","model","evaluated_at","questions", metric: value}
    with the metrics that are numbers (None for one not measured); in the order of `order` (the versions by
    creation), reports of versions no longer there last, by date."""
    rows, problems = [], []
    for path in sorted(reports_dir.glob("*/report.json")) if reports_dir.is_dir() else []:
        name = f"{reports_dir.name}/{path.parent.name}/{path.name}"
        try:
            report = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as error:
            problems.append(f"{name}: cannot read it ({error.strerror})")
            continue
        except ValueError as error:
            problems.append(f"{name}: not JSON ({error})")
            continue
        if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
            problems.append(f"{name}: no \"metrics\" object")
            continue
        metrics = {metric: value for metric, value in report["metrics"].items() if value is None or is_number(value)}
        rows.append({"version": str(report.get("version") or path.parent.name), "model": report.get("model"),
                     "evaluated_at": report.get("evaluated_at"), "questions": report.get("questions"), **metrics})
    position = {version_id: number for number, version_id in enumerate(order)}
    rows.sort(key=lambda row: (position.get(row["version"], len(order)), str(row["evaluated_at"] or "")))
    return rows, problems


def metric_names(rows: list[dict]) -> list[str]:
    """The metrics that at least one report measured, in the order they first appear."""
    fixed = {"version", "model", "evaluated_at", "questions"}
    names = {}
    for row in rows:
        names |= {name: None for name, value in row.items() if name not in fixed and value is not None}
    return list(names)


# ------------------------------------------------------------------ feedback

def feedback_per_day(entries: list[Feedback]) -> list[dict]:
    """{"day", one count per choice} for each day with feedback, oldest first."""
    days: dict[str, Counter] = defaultdict(Counter)
    for entry in entries:
        days[entry.timestamp[:10]][entry.choice] += 1
    return [{"day": day, **{choice: days[day][choice] for choice in CHOICES}} for day in sorted(days)]


def good_bad_rates(entries: list[Feedback]) -> list[dict]:
    """Per model, the single answers rated good or bad: {"model","version","good","bad","good rate"}."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for entry in entries:
        if entry.choice in ("good", "bad"):
            counts[model_of(entry.answers[0])][entry.choice] += 1
    return [{"model": model, "version": version_of(model), "good": count["good"], "bad": count["bad"],
             "good rate": rate(count["good"], count["good"] + count["bad"])} for model, count in sorted(counts.items())]


# ------------------------------------------------------------------ the answer log

def answer_rows(records: list[dict]) -> list[dict]:
    """The answer log's records (answer_log.read_answer_log checked them) with their day, and only the fields
    the statistics use."""
    return [{"time": record["time"], "day": record["time"][:10], "version": record["version"],
             "seconds": float(record["seconds"]), "first_token_seconds": record.get("first_token_seconds"),
             "refused": record["refused"], "sources": record["sources"]} for record in records]


def answer_statistics(rows: list[dict], by: tuple[str, ...]) -> list[dict]:
    """Per group of `by` (e.g. ("version",) or ("day", "version")): answers, refusal rate, mean sources, and
    the latency (p50, p95, first token p50) of the answers given: a refusal asks no model, so its few
    milliseconds would hide the model's speed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in by)].append(row)
    statistics = []
    for key, group in sorted(groups.items()):
        answered = [row for row in group if not row["refused"]]
        seconds = [row["seconds"] for row in answered]
        first_tokens = [row["first_token_seconds"] for row in answered if row["first_token_seconds"] is not None]
        statistics.append({**dict(zip(by, key)), "answers": len(group),
                           "refusal rate": rate(len(group) - len(answered), len(group)),
                           "p50 seconds": percentile(seconds, 50), "p95 seconds": percentile(seconds, 95),
                           "first token p50 seconds": percentile(first_tokens, 50),
                           "mean sources": sum(row["sources"] for row in group) / len(group)})
    return statistics


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile, linearly interpolated between the closest ranks (numpy's default); None of none."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ------------------------------------------------------------------ the knowledge base

def languages(metadatas: list[dict]) -> list[dict]:
    """{"language","documents","chunks"} from the chunks' metadata (store/documents.py detects a document's
    language once, so its chunks agree), the most chunks first."""
    chunks: Counter = Counter()
    documents: dict[str, set] = defaultdict(set)
    for metadata in metadatas:
        language = metadata.get("language") or "unknown"
        chunks[language] += 1
        documents[language].add(metadata.get("doc_id"))
    return [{"language": language, "documents": len(documents[language]), "chunks": count}
            for language, count in sorted(chunks.items(), key=lambda item: (-item[1], item[0]))]


# ------------------------------------------------------------------ helpers

def number_or_none(value) -> float | None:
    return value if is_number(value) else None


def number_text(value) -> str:
    return f"{value:g}" if is_number(value) else str(value)
