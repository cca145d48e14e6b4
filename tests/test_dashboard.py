"""The monitoring dashboard: the ratings and statistics it shows, the page through Streamlit's testing API on
fabricated data (versions, reports, feedback, answer log, knowledge base), and the page in headless Chromium."""
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from common.config import Settings
from conftest import ROOT, free_port, listening_addresses, wait_for_port
from feedback.records import Feedback, append
from monitoring import dashboard_data, ratings
from monitoring.answer_log import log_answer, read_answer_log

PAGE = str(ROOT / "app" / "dashboard_monitoring.py")
V1, V2, V3 = "v20261101-100000", "v20261102-100000", "v20261103-100000"
BASE_NAME = "SmolLM2-135M-Instruct (bundled)"


def model(version: str | None) -> str:
    """A model's display name, as answers record it."""
    return BASE_NAME if version is None else f"{BASE_NAME}, version {version}"


def vote(first: str, second: str, choice: str, day: str = "2026-11-05") -> Feedback:
    return Feedback(question="When does the ferry leave?", choice=choice, source="ui",
                    answers=[{"text": "At 7:15.", "model": first}, {"text": "At noon.", "model": second}],
                    timestamp=f"{day}T10:00:00")


def rating(version: str | None, choice: str, day: str = "2026-11-04") -> Feedback:
    return Feedback(question="Capital of France?", choice=choice, source="cli",
                    answers=[{"text": "Paris", "model": model(version)}], timestamp=f"{day}T09:00:00")


# ---------------------------------------------------------------- ratings

def test_the_model_that_wins_most_votes_ranks_first():
    a, b, c = model(V1), model(V3), model(None)
    entries = ([vote(a, b, "first")] * 4 + [vote(b, a, "first")] + [vote(a, c, "first")] * 3
               + [vote(c, b, "second")] * 2 + [vote(b, c, "second")] + [vote(a, b, "both_bad")])
    result = ratings.pairwise_ratings(entries)
    assert [r.model for r in result.ratings] == [a, b, c]
    first = result.ratings[0]
    assert (first.comparisons, first.wins, first.losses, first.both_bad) == (9, 7, 1, 1)
    assert first.win_rate == 7 / 8 and first.version == V1
    assert result.ratings[0].elo > result.ratings[1].elo > result.ratings[2].elo
    assert sum(r.strength for r in result.ratings) == pytest.approx(1.0)
    assert ratings.geometric_mean([10 ** ((r.elo - 1000) / 400) for r in result.ratings]) == pytest.approx(1.0)


def test_an_unbeaten_model_keeps_a_finite_rating():
    result = ratings.pairwise_ratings([vote(model(V3), model(V1), "first")] * 20)
    winner, loser = result.ratings
    assert winner.model == model(V3) and winner.win_rate == 1.0 and loser.win_rate == 0.0
    assert 0.5 < winner.strength < 1.0 and 1000 < winner.elo < 2000


def test_bradley_terry_without_prior_is_the_maximum_likelihood():
    strengths = ratings.bradley_terry(["a", "b"], Counter({("a", "b"): 3, ("b", "a"): 1}), prior=0.0)
    assert strengths["a"] / strengths["b"] == pytest.approx(3.0)  # P(a beats b) = 3/4, as observed


def test_ties_give_equal_ratings():
    a, b = model(V1), model(V3)
    even = ratings.pairwise_ratings([vote(a, b, "first"), vote(a, b, "second"), vote(b, a, "first"),
                                     vote(b, a, "second")])
    assert [r.strength for r in even.ratings] == pytest.approx([0.5, 0.5])
    assert [r.elo for r in even.ratings] == pytest.approx([1000, 1000])
    assert [r.win_rate for r in even.ratings] == [0.5, 0.5]
    both_bad = ratings.pairwise_ratings([vote(a, b, "both_bad")] * 3).ratings
    assert [(r.comparisons, r.wins, r.both_bad, r.win_rate) for r in both_bad] == [(3, 0, 3, None)] * 2
    assert [r.strength for r in both_bad] == pytest.approx([0.5, 0.5])


def test_no_votes_no_ratings():
    assert ratings.pairwise_ratings([]).ratings == []
    only_ratings = ratings.pairwise_ratings([rating(V1, "good"), rating(None, "bad")])
    assert only_ratings.ratings == [] and only_ratings.same_model_votes == 0
    same_model = ratings.pairwise_ratings([vote(model(V1), model(V1), "first")] * 2)
    assert same_model.ratings == [] and same_model.same_model_votes == 2


# ---------------------------------------------------------------- the rest of the dashboard's data

def test_feedback_counts_per_day_and_good_rates():
    entries = [rating(V1, "good"), rating(V1, "good"), rating(V1, "bad"), rating(None, "bad", "2026-11-05"),
               vote(model(V1), model(V3), "second", "2026-11-05")]
    assert dashboard_data.feedback_per_day(entries) == [
        {"day": "2026-11-04", "good": 2, "bad": 1, "first": 0, "second": 0, "both_bad": 0},
        {"day": "2026-11-05", "good": 0, "bad": 1, "first": 0, "second": 1, "both_bad": 0}]
    assert dashboard_data.good_bad_rates(entries) == [
        {"model": BASE_NAME, "version": None, "good": 0, "bad": 1, "good rate": 0.0},
        {"model": model(V1), "version": V1, "good": 2, "bad": 1, "good rate": 2 / 3}]


def answer_line(time: str, version: str, seconds: float, refused: bool = False, sources: int = 2) -> str:
    return json.dumps({"time": time, "version": version, "seconds": seconds,
                       "first_token_seconds": None if refused else seconds / 4, "refused": refused,
                       "sources": 0 if refused else sources})


def test_answer_latency_percentiles_and_refusal_rate_per_version(tmp_path):
    log = tmp_path / "answers.jsonl"
    log.write_text("\n".join([answer_line("2026-11-05T10:00:00", V3, seconds) for seconds in (1.0, 2.0, 3.0, 4.0)]
                             + [answer_line("2026-11-05T11:00:00", V3, 0.01, refused=True),
                                answer_line("2026-11-04T11:00:00", "base", 10.0),
                                '{"time": "2026-11-05T12:00:00", "version": "v3", "seconds": "fast", '
                                '"refused": false, "sources": 1}',
                                '{"time": "2026-11-05T12:0']) + "\n")
    records, problems = read_answer_log(log)
    rows = dashboard_data.answer_rows(records)
    assert len(rows) == 6
    assert problems[0] == "line 7: 'seconds' is not a number of seconds" and problems[1].startswith("line 8: not JSON")
    by_version = {row["version"]: row for row in dashboard_data.answer_statistics(rows, ("version",))}
    assert by_version[V3]["answers"] == 5 and by_version[V3]["refusal rate"] == 0.2
    assert by_version[V3]["p50 seconds"] == 2.5  # the refusal's 0.01 s is not a latency of the model
    assert by_version[V3]["p95 seconds"] == pytest.approx(3.85)
    assert by_version[V3]["first token p50 seconds"] == pytest.approx(0.625)
    assert by_version["base"]["p50 seconds"] == 10.0 and by_version["base"]["refusal rate"] == 0.0
    assert [(row["day"], row["version"]) for row in dashboard_data.answer_statistics(rows, ("day", "version"))] == [
        ("2026-11-04", "base"), ("2026-11-05", V3)]
    assert read_answer_log(tmp_path / "none.jsonl") == ([], [])
    assert dashboard_data.percentile([], 50) is None and dashboard_data.percentile([7.0], 95) == 7.0


def test_what_log_answer_writes_read_answer_log_reads_whole(tmp_path):
    log = tmp_path / "answers.jsonl"
    log_answer(log, version=V3, seconds=1.23456, first_token_seconds=None, refused=True, sources=0)
    log_answer(log, version=V3, seconds=2.0, first_token_seconds=0.5, refused=False, sources=3,
               question="When does the ferry leave?", answer="At 7:15.")
    records, problems = read_answer_log(log)
    assert problems == []
    assert [(r["seconds"], r["refused"], r.get("question")) for r in records] == [
        (1.235, True, None), (2.0, False, "When does the ferry leave?")]


# ---------------------------------------------------------------- fabricated data

def write_version(home, version_id, parent, verdict, losses=None, gate=None, created=None):
    folder = home / "models" / "versions" / version_id
    folder.mkdir(parents=True)
    manifest = {"id": version_id, "parent": parent, "base_model": BASE_NAME, "method": "pretraining",
                "weights": "lora", "config": {"epochs": 1}, "data": {"entries": 3},
                "training": {"loss_history": [{"step": step, "loss": loss}
                                              for step, loss in enumerate(losses or [], 1)],
                             "seconds": 12.5, "steps": len(losses or []),
                             "final_loss": (losses or [None])[-1]},
                "metrics": {"answer_f1": 0.5}, "gate": gate or {"verdict": verdict, "findings": []},
                "verdict": verdict, "created": created or f"2026-11-{version_id[7:9]}T10:00:00"}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def write_report(home, version_id, metrics, evaluated_at):
    folder = home / "reports" / version_id
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"model": model(version_id), "version": version_id,
                                                    "metrics": metrics, "evaluated_at": evaluated_at,
                                                    "questions": 12}))


class FakeEmbeddings:
    """Deterministic vectors: the knowledge base is filled without loading a model."""

    def embed_documents(self, texts):
        return [self.embed_query(text) for text in texts]

    def embed_query(self, text):
        digest = hashlib.sha256(text.encode()).digest()
        return [byte / 255 for byte in digest[:8]]


def fabricate(home) -> None:
    """Three versions (v2 refused by the gate, v3 the champion, child of v1), their reports, feedback with
    A/B votes (v3 beats v1 three times out of four), an answer log and a knowledge base in two languages."""
    write_version(home, V1, "base", "promoted", losses=[3.2, 2.5, 1.9])
    write_version(home, V2, V1, "refused", losses=[2.0, 1.7],
                  gate={"verdict": "refused", "findings": [
                      {"metric": "answer_f1", "champion": 0.5, "candidate": 0.3, "worsening": 0.2, "allowed": 0.05,
                       "passed": False},
                      {"metric": "supported", "champion": 0.8, "candidate": 0.8, "worsening": 0.0, "allowed": 0.1,
                       "passed": True}]})
    write_version(home, V3, V1, "promoted", losses=[1.9, 1.2, 0.8, 0.6])
    os.symlink(os.path.join("models", "versions", V3), home / "tinyllama_finetuned")
    (home / "models" / "promotions.jsonl").write_text("\n".join(json.dumps(event) for event in [
        {"time": "2026-11-01T10:01:00", "action": "promoted", "version": V1, "previous": "base"},
        {"time": "2026-11-02T10:01:00", "action": "refused", "version": V2, "failed": "answer_f1"},
        {"time": "2026-11-03T10:01:00", "action": "promoted", "version": V3, "previous": V1}]) + "\n")
    write_report(home, "base", {"answer_f1": 0.4, "ppl_general": 30.0, "recall_at_k": None}, "2026-11-01T09:00:00")
    write_report(home, V1, {"answer_f1": 0.5, "ppl_general": 31.0}, "2026-11-01T10:00:30")
    write_report(home, V3, {"answer_f1": 0.62, "ppl_general": 32.5}, "2026-11-03T10:00:30")
    feedback = Settings.load().feedback_file
    for entry in ([vote(model(V3), model(V1), "first") for _ in range(2)] + [vote(model(V1), model(V3), "second"),
                  vote(model(V1), model(V3), "first"), vote(model(V1), model(V3), "both_bad"),
                  vote(model(V3), model(V3), "first")]
                  + [rating(V3, "good"), rating(V3, "good"), rating(V3, "bad"), rating(V1, "bad")]):
        append(feedback, entry)
    (home / "data" / "answers.jsonl").write_text("\n".join(
        [answer_line("2026-11-04T10:00:00", V1, seconds) for seconds in (5.0, 6.0)]
        + [answer_line("2026-11-05T10:00:00", V3, seconds) for seconds in (1.0, 2.0, 3.0, 4.0)]
        + [answer_line("2026-11-05T11:00:00", V3, 0.01, refused=True)]) + "\n")
    from knowledge_base import KnowledgeBase
    kb = KnowledgeBase(home / "chroma_db_store", FakeEmbeddings())
    kb.add("The ferry on Lake Quillmoor leaves at 7:15 every morning.", "ferry")
    kb.add("Le bac du lac Quillmoor part à 7 h 15 tous les matins, sauf le dimanche et les jours fériés.", "bac")
    kb.add("The Apprenti project's mascot is a blue heron called Pim.", "mascot")


def dataframe_with(page, column: str):
    return next(frame.value for frame in page.dataframe if column in frame.value.columns)


def texts(page) -> list[str]:
    return [text.value for text in page.text]


def metric(page, label: str) -> str:
    return next(element.value for element in page.metric if element.label == label)


# ---------------------------------------------------------------- the page

def test_the_page_shows_versions_evaluations_training_feedback_knowledge_and_answers(home):
    fabricate(home)
    page = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not page.exception, page.exception
    assert not page.warning and not page.error, [e.value for e in [*page.warning, *page.error]]
    assert [header.value for header in page.header] == list(
        ["Versions", "Evaluation history", "Training runs", "Feedback", "Knowledge base", "Answers"])
    # versions, lineage, gate
    assert f"Champion (answers use it): {V3} · lineage: base → {V1} → {V3}" in texts(page)
    versions = dataframe_with(page, "champion").set_index("id")
    assert list(versions.index) == ["base", V1, V2, V3]
    assert versions.loc[V3, "champion"] and not versions.loc[V1, "champion"]
    assert (versions.loc[V3, "parent"], versions.loc[V2, "verdict"]) == (V1, "refused")
    assert versions.loc[V2, "gate"] == "1 of 2 metrics held; worse: answer_f1 0.5 -> 0.3"
    assert list(dataframe_with(page, "action")["version"]) == [V3, V2, V1]  # the promotion log, newest first
    # evaluation history: one chart per measured metric, in the versions' order
    evaluations = dataframe_with(page, "answer_f1")
    assert list(evaluations["version"]) == ["base", V1, V3] and list(evaluations["answer_f1"]) == [0.4, 0.5, 0.62]
    assert {"answer_f1", "ppl_general"} <= set(texts(page)) and "recall_at_k" not in texts(page)
    # training runs
    runs = dataframe_with(page, "final loss").set_index("version")
    assert runs.loc[V3, "final loss"] == 0.6 and runs.loc[V3, "first loss"] == 1.9 and runs.loc[V1, "steps"] == 3
    # charts: 2 metrics, the loss curves, feedback per day, latency and refusals per day
    assert len(page.get("vega_lite_chart")) == 6
    # feedback
    assert metric(page, "Feedback entries") == "10" and metric(page, "Rated good") == "2 of 4 (50%)"
    pairwise = dataframe_with(page, "elo")
    assert list(pairwise["version"]) == [V3, V1]
    assert list(pairwise["win rate"]) == [0.75, 0.25] and list(pairwise["comparisons"]) == [5, 5]
    assert pairwise["elo"][0] > 1000 > pairwise["elo"][1]
    assert "1 vote(s) compared two samples of one model: they rate no model." in texts(page)
    good_rates = dataframe_with(page, "good rate").set_index("version")
    assert good_rates.loc[V3, "good rate"] == pytest.approx(2 / 3)
    # knowledge base
    assert (metric(page, "Documents"), metric(page, "Chunks"), metric(page, "Languages")) == ("3", "3", "2")
    languages = dataframe_with(page, "language").set_index("language")
    assert languages.loc["en", "documents"] == 2 and languages.loc["fr", "documents"] == 1
    assert sorted(dataframe_with(page, "document")["document"]) == ["bac", "ferry", "mascot"]
    # answers
    assert metric(page, "Answers") == "7" and metric(page, "Refusal rate") == "14%"
    assert metric(page, "Latency p50") == "3.50 s"  # of 1, 2, 3, 4, 5, 6 s: the refusal is no latency
    per_version = dataframe_with(page, "p95 seconds").set_index("version")
    assert per_version.loc[V3, "p50 seconds"] == 2.5 and per_version.loc[V3, "refusal rate"] == 0.2
    assert per_version.loc[V1, "p50 seconds"] == 5.5


def test_an_empty_data_dir_says_nothing_yet_and_writes_nothing(home):
    page = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not page.exception and not page.warning and not page.error
    shown = " ".join(texts(page))
    for nothing in ["No version yet", "No evaluation yet", "No training run yet", "No feedback yet",
                    "The knowledge base is empty", "No answer logged yet"]:
        assert nothing in shown, nothing
    # the dashboard only reads: the data dir holds only the link to the session's embedding export (conftest)
    assert [path.relative_to(home) for path in home.rglob("*") if "onnx-embeddings" not in str(path)] == [
        Path("models")]


def test_broken_files_give_one_warning_each_and_the_rest_is_shown(home):
    fabricate(home)
    settings = Settings.load()
    with open(settings.feedback_file, "a") as feedback:
        feedback.write('{"question": "cut by a cr\n')
    with open(settings.answer_log, "a") as log:
        log.write("not json at all\n" + '{"time": "yesterday", "version": "base", "seconds": 1, "refused": false, '
                  '"sources": 1, "first_token_seconds": null}\n')
    (settings.models_dir / "versions" / "v20261104-100000").mkdir()
    (settings.models_dir / "versions" / "v20261104-100000" / "manifest.json").write_text("{")
    (settings.reports_dir / V1 / "report.json").write_text('{"metrics": ')
    page = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not page.exception and not page.error, page.exception
    warnings = [warning.value for warning in page.warning]
    assert warnings == ["Versions: 1 problem(s); what could be read is shown.",
                        "Evaluation reports: 1 problem(s); what could be read is shown.",
                        "feedback.jsonl: 1 problem(s); what could be read is shown.",
                        "answers.jsonl: 2 problem(s); what could be read is shown."], warnings
    shown = texts(page)
    assert "line 9: 'time' is not an ISO time" in shown and any(t.startswith("line 8: not JSON") for t in shown)
    assert any(t.startswith("line 11: not JSON") for t in shown)  # the feedback's
    assert any("reports/" + V1 + "/report.json: not JSON" in t for t in shown)
    assert metric(page, "Answers") == "7" and list(dataframe_with(page, "elo")["win rate"]) == [0.75, 0.25]


def test_a_bug_in_one_section_is_one_error_and_the_others_still_show(home, monkeypatch):
    fabricate(home)

    def broken(entries):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ratings, "pairwise_ratings", broken)
    page = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not page.exception
    assert [error.value for error in page.error] == [
        escaped(f"Feedback: unexpected RuntimeError: a bug (details in {home / 'apprenti.log'})")]
    assert metric(page, "Answers") == "7"  # the section after it
    assert "RuntimeError: a bug" in (home / "apprenti.log").read_text()


def test_with_a_key_the_dashboard_shows_nothing_but_the_login_until_it_is_typed(home, monkeypatch):
    monkeypatch.setenv("APPRENTI_PAGE_KEY", "s3cret")
    fabricate(home)
    page = AppTest.from_file(PAGE, default_timeout=120).run()
    assert [text_input.label for text_input in page.text_input] == ["Key"]
    assert not page.header and not page.dataframe and not page.metric and not page.text
    page.text_input[0].input("wrong")
    next(button for button in page.button if button.label == "Log in").click().run()
    assert page.error[0].value == "Wrong key." and not page.header and not page.dataframe
    page.text_input[0].input("s3cret")
    next(button for button in page.button if button.label == "Log in").click().run()
    assert not page.exception and "Versions" in [header.value for header in page.header]
    assert metric(page, "Answers") == "7"


def escaped(text: str) -> str:
    """`text` as the page escapes it for Markdown."""
    import re
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$:])", r"\\\1", text)


def test_the_page_loads_no_model(home):
    """torch, transformers or an embedding model would take seconds and memory: the dashboard only reads."""
    fabricate(home)
    script = ("import sys\nfrom streamlit.testing.v1 import AppTest\n"
              f"page = AppTest.from_file({PAGE!r}, default_timeout=120).run()\n"
              "assert not page.exception and len(page.dataframe) > 5, page.exception\n"
              "heavy = {'torch', 'transformers', 'sentence_transformers', 'langchain_huggingface'}\n"
              "print(sorted(heavy & set(sys.modules)))")
    # A base model neither cached nor reachable: resolving it would convert the bundled one.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "APPRENTI_BASE_MODEL": "example/not-cached"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- the command and the menu

def test_the_dashboard_command_serves_the_page_with_every_setting(home, started_pages, capsys):
    from cli_app import main
    assert main(["--threshold", "0.9", "dashboard"]) == 0
    command, env = started_pages[0]
    assert command[4].endswith("app/dashboard_monitoring.py")
    assert command[-8:] == ["--server.address", "127.0.0.1", "--server.port", "8502", "--server.headless", "true",
                            "--browser.gatherUsageStats", "false"]
    assert env["APPRENTI_HOME"] == str(home) and env["APPRENTI_RELEVANCE_THRESHOLD"] == "0.9"
    assert "The monitoring dashboard is at http://127.0.0.1:8502" in capsys.readouterr().out


def test_the_dashboard_on_another_address_needs_a_key_which_reaches_the_page_by_its_environment(
        home, started_pages, monkeypatch, capsys):
    from cli_app import main
    monkeypatch.delenv("APPRENTI_PAGE_KEY", raising=False)
    assert main(["dashboard", "--host", "0.0.0.0"]) == 1 and not started_pages
    assert "--key KEY" in capsys.readouterr().err
    assert main(["dashboard", "--host", "0.0.0.0", "--key", "s3cret"]) == 0
    command, env = started_pages[0]
    assert command[4].endswith("app/dashboard_monitoring.py") and command[6] == "0.0.0.0"
    assert env["APPRENTI_PAGE_KEY"] == "s3cret" and not any("s3cret" in part for part in command)


def test_menu_entry_8_opens_the_dashboard_in_both_languages():
    from cli.dashboard import menu_dashboard
    from cli.menu import MENU_ACTIONS, QUIT
    from cli.texts import TEXTS
    assert MENU_ACTIONS["8"] is menu_dashboard
    numbers = sorted(int(key) for key in [*MENU_ACTIONS, "1", QUIT])  # 1 asks, in the menu's conversation
    assert numbers == list(range(1, len(numbers) + 1))  # the menu prints its labels numbered in order
    for language in ("en", "fr"):
        assert len(TEXTS[language]["menu"]) == len(numbers) and f"1-{len(numbers)}" in TEXTS[language]["choice"]
    assert "dashboard" in TEXTS["en"]["menu"][7] and "tableau de bord" in TEXTS["fr"]["menu"][7]


# ---------------------------------------------------------------- in a real browser

def test_in_headless_chromium_the_dashboard_shows_every_section(home, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait
    fabricate(home)
    port = free_port()
    server = subprocess.Popen([sys.executable, "cli_app.py", "dashboard", "--port", str(port)], cwd=ROOT,
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    screenshot = tmp_path / "dashboard.png"
    try:
        wait_for_port(port)
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
        browser.get(f"http://127.0.0.1:{port}")
        wait = WebDriverWait(browser, 120)
        try:
            wait.until(ready.presence_of_element_located((By.XPATH, "//h1[contains(., 'Apprenti monitoring')]")))
            wait.until(ready.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Latency p50')]")))
            champion = wait.until(ready.presence_of_element_located(
                (By.XPATH, "//*[contains(text(), 'Champion (answers use it)')]")))
            wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "[data-testid='stVegaLiteChart'] canvas, "
                                                                           "[data-testid='stVegaLiteChart'] svg"))
        finally:
            browser.save_screenshot(str(screenshot))
        assert V3 in champion.text
        assert browser.title == "Apprenti monitoring"
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
    finally:
        server.terminate()  # cli_app.py stops the Streamlit server it started
        output = server.communicate(timeout=60)[0]
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    assert f"http://127.0.0.1:{port}" in output and "Traceback" not in output
