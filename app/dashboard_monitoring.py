"""The monitoring dashboard: the model versions and their lineage, evaluation history, training runs, feedback
(with a Bradley-Terry rating of the models from the A/B votes), the knowledge base and the answers' latency.

    streamlit run app/dashboard_monitoring.py    # or: python cli_app.py dashboard, or menu 8; binds to 127.0.0.1
    python cli_app.py dashboard --host 0.0.0.0 --key KEY    # other machines: the page asks for the key first

It only reads, and loads no model: the figures come from the files Apprenti writes (models/versions/*/
manifest.json, models/promotions.jsonl, reports/*/report.json, data/feedback.jsonl, data/answers.jsonl) and
from the knowledge base's metadata. monitoring/dashboard_data.py shapes them and monitoring/ratings.py rates
the models; this page renders. A section whose files are damaged says so in one warning and shows the rest;
texts are shown as text, never as Markdown.
"""
from __future__ import annotations

import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts only app/ on the path
from app.login import logged_in  # noqa: E402
from app.markdown import plain  # noqa: E402
from common.config import Settings  # noqa: E402
from common.crash import log_crash  # noqa: E402
from common.errors import ApprentiError  # noqa: E402
from feedback.records import read as read_feedback  # noqa: E402
from monitoring import dashboard_data, ratings  # noqa: E402
from monitoring.answer_log import read_answer_log  # noqa: E402

PROBLEMS_SHOWN = 5
PERCENT = st.column_config.NumberColumn(format="percent")


def warn(source: str, problems: list[str]) -> None:
    """One warning for a source's problems, the details below it as text (they quote file contents)."""
    if not problems:
        return
    st.warning(f"{source}: {len(problems)} problem(s); what could be read is shown.")
    for problem in problems[:PROBLEMS_SHOWN]:
        st.text(problem)
    if len(problems) > PROBLEMS_SHOWN:
        st.text(f"and {len(problems) - PROBLEMS_SHOWN} more")


def table(rows: list[dict], percent: tuple[str, ...] = (), **formats) -> None:
    columns = {name: PERCENT for name in percent} | {name: st.column_config.NumberColumn(format=format)
                                                     for name, format in formats.items()}
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=columns)


def percent_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def seconds_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def line_chart(frame: pd.DataFrame, x, y, **encodings) -> None:
    st.altair_chart(alt.Chart(frame).mark_line(point=True).encode(x=x, y=y, tooltip=list(frame.columns), **encodings),
                    width="stretch")


def bar_chart(frame: pd.DataFrame, x, y, **encodings) -> None:
    st.altair_chart(alt.Chart(frame).mark_bar().encode(x=x, y=y, tooltip=list(frame.columns), **encodings),
                    width="stretch")



# ------------------------------------------------------------------ sections

def versions_section(settings: Settings) -> None:
    on_disk = dashboard_data.read_versions(settings)
    warn("Versions", on_disk.problems)
    if len(on_disk.versions) == 1 and not on_disk.history:
        st.text(f"No version yet: answers come from the base model ({settings.base_model}). "
                "A fine-tuning (menu 4) makes the first one.")
        return
    st.text(f"Champion (answers use it): {on_disk.champion} · lineage: "
            + " → ".join(dashboard_data.lineage(on_disk.versions, on_disk.champion)))
    table(dashboard_data.version_rows(on_disk))
    st.subheader("Promotion log")
    if on_disk.history:
        table(dashboard_data.promotion_rows(on_disk.history))
    else:
        st.text("No promotion, refusal or rollback yet.")


def evaluation_section(settings: Settings) -> None:
    order = [version.id for version in dashboard_data.read_versions(settings).versions]
    rows, problems = dashboard_data.read_reports(settings.reports_dir, order)
    warn("Evaluation reports", problems)
    if not rows:
        st.text("No evaluation yet: 'python cli_app.py evaluate' makes one (the gate evaluates each new version).")
        return
    table(rows)
    frame = pd.DataFrame(rows)
    versions = list(dict.fromkeys(frame["version"]))
    columns = st.columns(2)
    for number, metric in enumerate(dashboard_data.metric_names(rows)):
        with columns[number % 2]:
            st.text(metric)
            measured = frame[frame[metric].notna()][["version", metric, "evaluated_at"]]
            line_chart(measured, alt.X("version:N", sort=versions, title="version"),
                       alt.Y(field=metric, type="quantitative", title=metric, scale=alt.Scale(zero=False)))


def training_section(settings: Settings) -> None:
    runs, points, problems = dashboard_data.training_runs(dashboard_data.read_versions(settings).versions)
    warn("Training runs", problems)
    if not runs:
        st.text("No training run yet: a fine-tuning (menu 4) makes a version and records its loss.")
        return
    table(runs)
    if points:
        line_chart(pd.DataFrame(points), alt.X("step:Q"), alt.Y("loss:Q"), color="version:N")


def feedback_section(settings: Settings) -> None:
    entries, problems = read_feedback(settings.feedback_file)
    warn(settings.feedback_file.name, problems)
    if not entries:
        st.text("No feedback yet: rate an answer after asking (menu 1), or compare two on the feedback page (menu 7).")
        return
    rated = [entry for entry in entries if entry.choice in ("good", "bad")]
    good = sum(entry.choice == "good" for entry in rated)
    pairwise = ratings.pairwise_ratings(entries)
    columns = st.columns(3)
    columns[0].metric("Feedback entries", len(entries))
    columns[1].metric("Rated good", f"{good} of {len(rated)} ({percent_text(ratings.rate(good, len(rated)))})")
    columns[2].metric("A/B votes", len(entries) - len(rated))
    st.text("Feedback per day")
    days = pd.DataFrame(dashboard_data.feedback_per_day(entries)).melt("day", var_name="choice", value_name="entries")
    bar_chart(days[days["entries"] > 0], alt.X("day:O"), alt.Y("entries:Q"), color="choice:N")
    st.subheader("Good and bad, per model")
    good_bad = dashboard_data.good_bad_rates(entries)
    if good_bad:
        table(good_bad, percent=("good rate",))
    else:
        st.text("No single answer rated yet.")
    st.subheader("A/B votes: win rates and Bradley-Terry rating")
    if pairwise.ratings:
        st.text("Win rate: wins among the votes that chose one of the two answers. Strength: the Bradley-Terry "
                "share of each model (P(A beats B) = A / (A + B)), fitted to all the votes; elo: the same on "
                "Elo's scale, 1000 at the average.")
        table([rating.row() for rating in pairwise.ratings], percent=("win rate", "strength"), elo="%.0f")
    else:
        st.text("No vote between two different models yet.")
    if pairwise.same_model_votes:
        st.text(f"{pairwise.same_model_votes} vote(s) compared two samples of one model: they rate no model.")


def knowledge_section(settings: Settings) -> None:
    if not settings.chroma_url and not settings.chroma_dir.is_dir():
        st.text("The knowledge base is empty: add documents (menu 2 or 6).")
        return
    from knowledge_base import KnowledgeBase  # Chroma: loaded only for this section
    from store.catalog import read_documents
    chunks = list(KnowledgeBase(settings.chroma_dir, None, settings.chroma_url).chunks(include=("metadatas",)))
    if not chunks:
        st.text("The knowledge base is empty: add documents (menu 2 or 6).")
        return
    documents = read_documents(chunks)
    languages = dashboard_data.languages([metadata for _, _, metadata in chunks])
    columns = st.columns(3)
    columns[0].metric("Documents", len(documents))
    columns[1].metric("Chunks", len(chunks))
    columns[2].metric("Languages", len(languages))
    table(languages)
    table([{"document": record.doc_id, "source": record.source, "chunks": record.chunks,
            "complete": record.complete, "ingested at": record.ingested_at}
           for record in sorted(documents.values(), key=lambda record: record.doc_id)])


def answers_section(settings: Settings) -> None:
    records, problems = read_answer_log(settings.answer_log)
    warn(settings.answer_log.name, problems)
    rows = dashboard_data.answer_rows(records)
    if not rows:
        st.text("No answer logged yet: each question asked (menu 1, ask, the feedback page) adds one.")
        return
    overall = dashboard_data.answer_statistics(rows, ())[0]
    columns = st.columns(4)
    columns[0].metric("Answers", overall["answers"])
    columns[1].metric("Refusal rate", percent_text(overall["refusal rate"]))
    columns[2].metric("Latency p50", seconds_text(overall["p50 seconds"]))
    columns[3].metric("Latency p95", seconds_text(overall["p95 seconds"]))
    st.text("Latency is that of the answers given: a refusal asks no model.")
    table(dashboard_data.answer_statistics(rows, ("version",)), percent=("refusal rate",))
    per_day = pd.DataFrame(dashboard_data.answer_statistics(rows, ("day", "version")))
    latency = per_day.melt(["day", "version"], ["p50 seconds", "p95 seconds"], var_name="statistic",
                           value_name="seconds").dropna()
    columns = st.columns(2)
    with columns[0]:
        st.text("Latency per day (p50, p95)")
        if not latency.empty:
            line_chart(latency, alt.X("day:O"), alt.Y("seconds:Q"), color="version:N",
                  strokeDash="statistic:N")
    with columns[1]:
        st.text("Refusal rate per day")
        line_chart(per_day[["day", "version", "refusal rate", "answers"]], alt.X("day:O"),
                   alt.Y("refusal rate:Q", axis=alt.Axis(format="%")), color="version:N")


SECTIONS = {"Versions": versions_section, "Evaluation history": evaluation_section,
            "Training runs": training_section, "Feedback": feedback_section, "Knowledge base": knowledge_section,
            "Answers": answers_section}


def main() -> None:
    st.set_page_config(page_title="Apprenti monitoring", layout="wide")
    if not logged_in():
        return
    st.title("Apprenti monitoring")
    try:
        settings = Settings.load()
    except ApprentiError as error:
        st.error(plain(str(error)))
        return
    st.text(f"Data dir: {settings.home}")
    for title, section in SECTIONS.items():
        st.header(title)
        try:
            section(settings)
        except ApprentiError as error:
            st.warning(plain(str(error)))
        except Exception as error:  # a bug of ours in one section: the others still show, the details go to the log
            st.error(plain(f"{title}: {log_crash(settings.log_file, 'dashboard', error)}"))


main()
