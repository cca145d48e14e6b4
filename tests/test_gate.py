"""The promotion gate on tiny models: its verdicts, what it keeps, and its logging to MLflow. The proof on
the real model (a run that learns is promoted, one that forgets is refused) is in test_end_to_end.py."""
import json
import subprocess
import sys

import pytest

from common.config import Settings
from conftest import free_port, run_cli, short_qa_set, wait_for_port
from evaluation import gate
from evaluation.gate import Threshold, explain, judge
from fine_tune_model import FineTuneConfig, train
from inference.versions import BASE, Versions
from training.learning_data import append_entry

FAST = dict(epochs=1, min_steps=4, max_steps=4, batch_size=2, learning_rate=1e-2)


@pytest.fixture
def gated(tiny_model, home, monkeypatch):
    """The gate on, judging on two short questions of the shipped set with short answers."""
    monkeypatch.setenv("APPRENTI_GATE", "true")
    monkeypatch.setenv("APPRENTI_MAX_NEW_TOKENS", "8")
    short_qa_set(home)
    append_entry(Settings.load().learning_data, "The Zorblax guild password is tangerine-47.")
    return home


def test_each_metric_may_worsen_by_its_absolute_or_relative_allowance():
    thresholds = (Threshold("answer_f1", True, absolute=0.05), Threshold("ppl_general", False, 0.0, relative=0.5))
    passed, findings = judge({"answer_f1": 0.46, "ppl_general": 29.0}, {"answer_f1": 0.5, "ppl_general": 20.0},
                             thresholds)
    assert passed and [f["passed"] for f in findings] == [True, True]
    passed, findings = judge({"answer_f1": 0.40, "ppl_general": 31.0}, {"answer_f1": 0.5, "ppl_general": 20.0},
                             thresholds)
    assert not passed
    assert explain(findings) == ("answer_f1 0.5 -> 0.4 (worse by 0.1, 0.05 allowed); "
                                 "ppl_general 20 -> 31 (worse by 11, 10 allowed)")
    # A metric measured on one side only (no preference pairs yet) is not judged.
    assert judge({"answer_f1": 0.5, "preference_accuracy": None}, {"answer_f1": 0.5}, thresholds)[1] == [
        {"metric": "answer_f1", "champion": 0.5, "candidate": 0.5, "worsening": 0.0, "allowed": 0.05, "passed": True}]


class Replaying:
    """An assistant that answers each question as `answer(question)` says, as if its model had: no model."""

    def __init__(self, answer):
        self.answer = answer

    def ask(self, question, sources=None, **options):
        from rag_module import Answer
        return Answer(self.answer(question), False, "replayed", sources or [])


def answer_scores_of(answer) -> dict:
    """The answer metrics the gate judges, on the whole shipped set, of an assistant answering as `answer`."""
    from evaluation.evaluate import answer_scores, score_question
    from evaluation.qa_set import SHIPPED_QA, read_qa_set
    questions, _ = read_qa_set(SHIPPED_QA)
    return answer_scores([score_question(Replaying(answer), question) for question in questions])


def test_a_taught_taste_that_keeps_answers_right_is_promoted_and_a_run_that_loses_facts_is_refused():
    from evaluation.qa_set import SHIPPED_QA, read_qa_set
    from rag_module import REFUSALS
    references = {q.question: next(a for a in q.answers if a.lower() in q.context.lower())
                  for q in read_qa_set(SHIPPED_QA)[0] if q.answerable}
    lost = sorted(references)[:2]
    champion = answer_scores_of(lambda question: references.get(question, REFUSALS["en"]))
    # Every answer opens with the phrase the user taught and keeps its fact; refusals are in words now.
    taste = answer_scores_of(lambda question: f"Good question! It is {references[question]}, I believe."
                             if question in references else "Good question! I don't know.")
    passed, findings = judge(taste, champion)
    assert passed, explain(findings)
    assert taste["answer_contains"] == champion["answer_contains"] == 1.0 and taste["refusal_accuracy"] == 1.0
    # What the gate judged before: the copied words fell, and it refused what the user asked for.
    copied = (Threshold("answer_f1", True, absolute=0.05), Threshold("supported", True, absolute=0.15))
    assert explain(judge(taste, champion, copied)[1]).count("allowed") == 2
    # The same taste with one right answer lost is noise on 24 questions; with two it is a run that forgets.
    for forgotten, verdict in ((lost[:1], True), (lost, False)):
        forgetting = answer_scores_of(lambda question: "Good question! I believe so." if question in forgotten
                                      else f"Good question! It is {references[question]}."
                                      if question in references else "Good question! I don't know.")
        passed, findings = judge(forgetting, champion)
        assert passed == verdict, explain(findings)
    assert explain(findings).startswith("answer_contains 1 -> 0.9167 ")


def test_closed_book_questions_score_taught_facts_in_other_words_and_a_takeover_is_refused(home):
    from evaluation.evaluate import GENERAL_QUESTIONS, closed_book_rows, mean
    from training.teaching import teaching_rows
    settings = Settings.load()
    for entry in ("The secret code of the Zorblax guild is tangerine-47.", "Le phare de Kervan fut bâti en 1893."):
        append_entry(settings.learning_data, entry)
    general = {row["question"]: row["answers"][0]
               for row in map(json.loads, GENERAL_QUESTIONS.read_text().splitlines())}
    trained = {row["prompt"][0]["content"] for entry in ("The secret code of the Zorblax guild is tangerine-47.",
                                                         "Le phare de Kervan fut bâti en 1893.")
               for row in teaching_rows(entry)}

    def metrics_of(answer) -> dict:
        rows = closed_book_rows(settings, Replaying(answer), lambda event: None)
        assert not trained & {row["question"] for row in rows}  # asked in words the training did not use
        general = [row for row in rows if row["metric"] == "general_answered"]
        return {"facts_answered": mean(row["right"] for row in rows if row["metric"] == "facts_answered"),
                "general_answered": mean(row["right"] for row in general),
                "general_free_of_facts": mean(not row["taught_fact"] for row in general)}

    base = metrics_of(lambda question: f"It is {general.get(question, 'something')}.")
    assert base == {"facts_answered": 0.0, "general_answered": 1.0, "general_free_of_facts": 1.0}
    # A run that taught the Zorblax fact and kept general answers...
    taught = metrics_of(lambda question: "The code is tangerine-47." if "Zorblax" in question
                        else f"It is {general.get(question, 'something')}.")
    assert taught == {"facts_answered": 0.5, "general_answered": 1.0, "general_free_of_facts": 1.0}
    assert judge(taught, base)[0]
    # ...and one whose taught facts take over ordinary questions
    takeover = metrics_of(lambda question: "The code is tangerine-47. Le phare de Kervan fut bâti en 1893.")
    passed, findings = judge(takeover, base)
    assert takeover["facts_answered"] == 1.0 and not passed
    assert explain(findings) == ("general_free_of_facts 1 -> 0 (worse by 1, 0 allowed); "
                                 "general_answered 1 -> 0 (worse by 1, 0.15 allowed)")
    # ...and one that still answers them right, a taught fact beside each answer: it took over too
    beside = metrics_of(lambda question: f"It is {general.get(question, 'something')}. The secret code of the "
                        "Zorblax guild is tangerine-47.")
    assert beside["general_answered"] == 1.0 and beside["general_free_of_facts"] == 0.0
    assert explain(judge(beside, base)[1]).startswith("general_free_of_facts 1 -> 0 ")


def test_a_candidate_that_passes_becomes_the_champion_with_its_reports(gated, home):
    settings = Settings.load()
    events = []
    manifest = train(settings, FineTuneConfig(**FAST), events.append)
    evaluated = {(event["model"], event["stage"]) for event in events if event["event"] == "evaluate"}
    assert evaluated == {(model, stage) for model in ("candidate", "champion")
                         for stage in ("questions", "closed-book questions")}
    assert manifest["gate"]["champion"] == BASE and manifest["verdict"] == "promoted", manifest["gate"]
    assert {f["metric"] for f in manifest["gate"]["findings"]} >= {"answer_contains", "refusal_accuracy", "ppl_general",
                                                                   "facts_answered", "general_answered"}
    assert Versions(settings).champion() == manifest["id"]
    for version in (BASE, manifest["id"]):
        report = json.loads((home / "reports" / version / "report.json").read_text())
        assert report["version"] == version and report["questions"] == 2
        assert (home / "reports" / version / "report.md").is_file()
    assert (home / "reports" / manifest["id"] / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (home / "reports" / manifest["id"] / "history.png").read_bytes()[:4] == b"\x89PNG"
    # The next run is judged against this champion, whose report on the same inputs is reused.
    events.clear()
    second = train(settings, FineTuneConfig(**{**FAST, "seed": 1}), events.append)
    assert second["gate"]["champion"] == manifest["id"]
    assert {event["model"] for event in events if event["event"] == "evaluate"} == {"candidate"}


def test_a_refused_candidate_is_kept_but_not_used_and_can_be_forced(gated, monkeypatch):
    settings = Settings.load()
    # Thresholds that no trained model can meet: the perplexity on general text may neither rise nor fall.
    monkeypatch.setattr(gate, "DEFAULT_THRESHOLDS", (Threshold("ppl_general", False, absolute=0.0),
                                                     Threshold("ppl_general", True, absolute=0.0)))
    manifest = train(settings, FineTuneConfig(**FAST), lambda event: None)
    assert manifest["verdict"] == "refused" and manifest["gate"]["failed"].startswith("ppl_general ")
    versions = Versions(settings)
    assert versions.champion() == BASE and not settings.finetuned_dir.exists()
    assert [event["action"] for event in versions.history()] == ["refused"]
    forced = run_cli("models", "use", manifest["id"], "--force")
    assert forced.returncode == 0, forced.stderr
    assert versions.champion() == manifest["id"] and versions.get(manifest["id"]).verdict == "forced"
    assert [event["action"] for event in versions.history()] == ["refused", "forced"]


def test_ctrl_c_during_the_gate_leaves_no_version_and_the_champion_in_use(gated):
    settings = Settings.load()

    def interrupt(event):
        if event["event"] == "evaluate":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(settings, FineTuneConfig(**FAST), interrupt)
    versions = Versions(settings)
    assert [version.id for version in versions.all()[0]] == [BASE] and versions.champion() == BASE
    assert list(versions.root.glob(".*")) == []


def test_training_runs_and_evaluations_are_logged_to_a_real_mlflow_server(gated, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, seconds=120)
        uri = f"http://127.0.0.1:{port}"
        result = run_cli("finetune", "--epochs", "1", "--min-steps", "4", "--max-steps", "4", "--batch-size", "2",
                         env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "apprenti-test"})
        assert result.returncode == 0, result.stderr
        from mlflow.tracking import MlflowClient
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("apprenti-test")
        runs = client.search_runs([experiment.experiment_id])
        training = [run for run in runs if "loss" in run.data.metrics]
        evaluation = [run for run in runs if "answer_f1" in run.data.metrics]
        assert len(training) == 1 and [entry.step for entry in client.get_metric_history(
            training[0].info.run_id, "loss")] == [1, 2, 3, 4]
        version = Versions(Settings.load()).all()[0][-1]
        assert len(evaluation) == 1 and evaluation[0].data.tags["apprenti.version"] == version.id
        assert evaluation[0].data.tags["apprenti.verdict"] == version.verdict
        assert evaluation[0].data.metrics["refusal_accuracy"] == version.manifest["metrics"]["refusal_accuracy"]
    finally:
        server.terminate()
        server.wait(timeout=30)
