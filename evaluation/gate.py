"""The promotion gate: a new model is used only if it does not regress against the champion.

After a training run the candidate is evaluated (evaluation/evaluate.py), the champion too (or its report
is reused when made on the same inputs), and each metric is judged: the candidate may be worse by at most
max(absolute, relative x the champion's value), as MLflow's MetricThreshold does with min_absolute_change
and min_relative_change. The defaults were chosen by measurement (README, "The promotion gate").
"""
from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from common.config import Settings
from common.errors import ApprentiError
from common.messages import notice
from training.run import TrainingRun


@dataclass(frozen=True)
class Threshold:
    metric: str
    greater_is_better: bool
    absolute: float  # the largest worsening allowed, in the metric's units...
    relative: float = 0.0  # ...or as a share of the champion's value, whichever is larger

    def allowed(self, champion: float) -> float:
        return max(self.absolute, self.relative * abs(champion))


# Answers are judged by whether they are still right (they carry a reference), never by how many of their
# words are copied: answer F1 and "supported" fall when a user teaches a taste ("Good question! ..."), whose
# words are in no reference and no passage, and the gate would refuse what the user asked for.
DEFAULT_THRESHOLDS = (
    # One answer in twenty: the shipped set's 24 answerable questions may lose one right answer to the
    # changed wording of a run that learns (greedy answers flip when the weights move), never two.
    Threshold("answer_contains", True, absolute=0.05),
    Threshold("refusal_accuracy", True, absolute=0.05),
    # Closed-book: a taught fact forgotten is a regression; a general answer that gives a taught fact instead
    # (the fact took over ordinary questions) is one too. General questions answered right may lose three in
    # twenty: runs of the bundled model that moved its weights as far as teaching two facts does, but taught
    # none (a lower learning rate, a smaller rank), lost one to three of the 20 in answers that changed shape,
    # not in taught facts (README, "Teaching facts"); a run that forgets how to speak loses most.
    Threshold("facts_answered", True, absolute=0.0),
    Threshold("general_free_of_facts", True, absolute=0.0),
    Threshold("general_answered", True, absolute=0.15),
    Threshold("ppl_general", False, absolute=0.0, relative=0.5),
    Threshold("preference_accuracy", True, absolute=0.10),
)


def judge(candidate: dict, champion: dict, thresholds=None) -> tuple[bool, list[dict]]:
    """(passed, one finding per metric measured on both): the change, what was allowed, and whether it held."""
    findings = []
    for threshold in thresholds or DEFAULT_THRESHOLDS:
        new, old = candidate.get(threshold.metric), champion.get(threshold.metric)
        if new is None or old is None:
            continue
        worsening = (old - new) if threshold.greater_is_better else (new - old)
        allowed = threshold.allowed(old)
        findings.append({"metric": threshold.metric, "champion": old, "candidate": new,
                         "worsening": round(worsening, 4), "allowed": round(allowed, 4),
                         "passed": worsening <= allowed + 1e-9})
    return all(finding["passed"] for finding in findings), findings


def explain(findings: list[dict]) -> str:
    """The failed metrics, one clause each: what changed and how much worse it was than allowed."""
    return "; ".join(f"{f['metric']} {f['champion']:g} -> {f['candidate']:g} (worse by {f['worsening']:g}, "
                     f"{f['allowed']:g} allowed)" for f in findings if not f["passed"])


def publish_through_gate(settings: Settings, version_id: str, partial: Path, manifest: dict,
                         report: Callable[[dict], None]) -> dict:
    """Judge the candidate written in `partial`, publish it as version `version_id` with the verdict, and
    make it the champion if it passed. Returns its manifest, with "metrics" and "gate"."""
    from evaluation.evaluate import evaluate
    from evaluation.reports import write_report
    from inference.chat_model import fast_form
    from inference.versions import BASE, Versions
    from monitoring.tracking import log_evaluation
    from training.core import raise_if_stopped
    versions = Versions(settings)
    # The model answers use now: a champion trained from another base model is not it (see choose_chat_model).
    champion = versions.champion()
    if versions.get(champion).manifest.get("base_model") != manifest["base_model"]:
        champion = BASE
    source = versions.source_of(version_id, partial, manifest)
    fast_form(settings, source)  # made once, with the version: the gate judges the model as it will answer
    if settings.gate:
        candidate = evaluate(settings, source=source,
                             progress=lambda event: report({"event": "evaluate", "model": "candidate", **event}))
        gc.collect()  # the candidate's weights go before the champion's come
        against = reusable_report(settings, champion, candidate["inputs"])
        if against is None:
            against = evaluate(settings, source=versions.source(champion),
                               progress=lambda event: report({"event": "evaluate", "model": "champion", **event}))
            write_report(settings, champion, against)
        passed, findings = judge(candidate["metrics"], against["metrics"])
        verdict = "promoted" if passed else "refused"
        gate = {"verdict": verdict, "champion": champion, "failed": explain(findings), "findings": findings,
                "thresholds": [asdict(threshold) for threshold in DEFAULT_THRESHOLDS], "qa_set": candidate["qa_set"]}
        metrics = candidate["metrics"]
    else:
        verdict, metrics, candidate = "promoted", {}, None
        gate = {"verdict": "promoted", "skipped": "APPRENTI_GATE=false"}
    raise_if_stopped()
    version = versions.publish(version_id, partial, {**manifest, "metrics": metrics, "gate": gate, "verdict": verdict})
    if verdict == "promoted":
        versions.set_champion(version_id, "promoted", failed="")
    else:
        versions.record("refused", version_id, champion=champion, failed=gate["failed"])
    if candidate:  # the verdict stands whatever happens to its report
        try:
            write_report(settings, version_id, candidate, against)
        except ApprentiError as error:
            notice(f"the evaluation report of version {version_id} was not written: {error}")
        log_evaluation(version_id, candidate, verdict, gate["failed"])
    return version.manifest


def reusable_report(settings: Settings, version_id: str, inputs: dict) -> dict | None:
    """The version's last evaluation report, if it was made on the same `inputs` (set, data, knowledge base,
    settings)."""
    from evaluation.reports import read_report
    saved = read_report(settings, version_id)
    return saved if saved and saved.get("inputs") == inputs else None


class GatedRun(TrainingRun):
    """A training run of a chat model, whose candidate the promotion gate judges before it is used."""

    def publish(self, version_id: str, partial: Path, manifest: dict) -> dict:
        return publish_through_gate(self.settings, version_id, partial, manifest, self.report)
