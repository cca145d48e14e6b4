"""The feedback page: ask a question, compare two answers, say which is better (or that both are bad), write
the answer you wanted; browse past feedback, fix or delete an entry.

    streamlit run app/feedback_ui.py    # or: python cli_app.py ui, or menu 7; binds to 127.0.0.1

The two answers are the base and the fine-tuned model when there is a fine-tuned one, else two samples of
the same model; which is which is shown only after the choice, so that it cannot sway it. Documents and
answers are shown as text, never as Markdown: an image link in a document must not make the browser fetch it.
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts only app/ on the path
from app.markdown import plain  # noqa: E402
from common.config import Settings  # noqa: E402
from common.errors import ApprentiError  # noqa: E402
from feedback.records import CHOICES, Feedback, append, delete, read  # noqa: E402
from inference.versions import BASE, Versions  # noqa: E402

SAMPLING_TEMPERATURE = 0.8  # two samples of one model must differ to be worth comparing
VERDICTS = {"A is better": "first", "B is better": "second", "Both are bad": "both_bad"}


@st.cache_resource(show_spinner="Loading the models (once)...", max_entries=1)
def assistants(settings_json: str, champion: str) -> dict:
    """The assistants that give the two answers, loaded once per settings and champion: a new champion
    (a promotion, `models use`, a rollback) is loaded at the next question, without a restart."""
    from inference.versions import choose_chat_model
    from rag_module import Assistant
    settings = Settings(**json.loads(settings_json))
    source = choose_chat_model(settings)
    assistant = Assistant(settings, source=source)
    if source.version != BASE:
        base = Assistant(settings, source=Versions(settings).source(BASE))
        return {"base": base, "fine-tuned": assistant}
    return {"sample 1": assistant, "sample 2": assistant}


def current_assistants(settings: Settings) -> dict:
    return assistants(json.dumps(dataclasses.asdict(settings), default=str, sort_keys=True),
                      Versions(settings).in_use())


def candidates(settings: Settings, question: str) -> dict:
    """Retrieve once, then two answers in a random order; a refusal needs no comparison."""
    models = current_assistants(settings)
    first = next(iter(models.values()))
    sources = first.retrieve(question)
    if not sources:
        return {"question": question, "sources": [], "answers": []}
    labels = list(models)
    random.shuffle(labels)
    answers = []
    for position, label in zip("AB", labels):
        assistant = models[label]
        temperature = SAMPLING_TEMPERATURE if label.startswith("sample") else 0.0
        shown, pieces = st.empty(), []

        def show(piece: str) -> None:
            # Each update is a Streamlit call: pressing Stop raises there, which closes the token stream
            # and so cancels the generation.
            pieces.append(piece)
            shown.text(f"Answer {position}: " + "".join(pieces))

        with st.spinner(f"Answer {position}..."):
            answer = assistant.ask(question, sources=sources, temperature=temperature, on_text=show)
        shown.empty()
        answers.append({"text": answer.answer, "model": answer.model, "label": label})
    return {"question": question, "sources": sources, "answers": answers}



def ask_page(settings: Settings) -> None:
    st.header("Ask and compare")
    with st.form("ask"):
        question = st.text_input("Question")
        asked = st.form_submit_button("Ask")
    if asked:
        st.session_state.pop("saved", None)
        if not question.strip():
            st.warning("Type a question first.")
            return
        st.caption("Generating; press Stop (top right) to cancel.")
        try:
            st.session_state["round"] = candidates(settings, question.strip())
        except ApprentiError as error:
            st.error(str(error))
            return
    current = st.session_state.get("round")
    if not current:
        return
    st.subheader("Retrieved passages")
    if not current["sources"]:
        st.info("Nothing in the knowledge base reaches the relevance threshold: the assistant says it does "
                "not know, and there is nothing to compare.")
        return
    for source in current["sources"]:
        st.text(f"[{source.id}] score {source.score:.2f} — {source.source}")
        st.text(source.text)
    columns = st.columns(2)
    for column, position, answer in zip(columns, "AB", current["answers"]):
        column.markdown(f"**Answer {position}**")
        column.text(answer["text"])
    saved = st.session_state.get("saved")
    if saved:
        st.success(plain(f"Saved as {saved}. " + " · ".join(f"{p} was {a['label']} ({a['model']})"
                         for p, a in zip("AB", current["answers"]))))
        return
    with st.form("judge"):
        verdict = st.radio("Which answer is better?", list(VERDICTS), index=None)
        correction = st.text_area("The answer you wanted (optional)")
        comment = st.text_area("Comment (optional)")
        submitted = st.form_submit_button("Submit")
    if submitted:
        if verdict is None:
            st.warning("Choose A, B or both bad first.")
            return
        entry = Feedback(question=current["question"], choice=VERDICTS[verdict], source="ui",
                         answers=[{"text": a["text"], "model": a["model"]} for a in current["answers"]],
                         context=[{"id": s.id, "text": s.text} for s in current["sources"]],
                         correction=correction.strip(), comment=comment.strip())
        append(settings.feedback_file, entry)
        st.session_state["saved"] = entry.id
        st.rerun()


def history_page(settings: Settings) -> None:
    st.header("Feedback history")
    entries, problems = read(settings.feedback_file)
    for problem in problems:
        st.warning(f"{settings.feedback_file.name}, {problem}: skipped")
    sources = st.multiselect("Source", ["cli", "ui"], default=["cli", "ui"])
    choices = st.multiselect("Choice", list(CHOICES), default=list(CHOICES))
    text = st.text_input("Containing").strip().lower()
    shown = [entry for entry in reversed(entries) if entry.source in sources and entry.choice in choices
             and (not text or text in entry.question.lower() or text in entry.comment.lower())]
    st.caption(f"{len(shown)} of {len(entries)} entries")
    for entry in shown:
        with st.expander(plain(f"{entry.timestamp} · {entry.source} · {entry.choice} · {entry.question[:80]}")):
            for position, answer in zip("AB", entry.answers):
                st.text(f"{position} ({answer.get('model')}): {answer['text']}")
            st.text("Context: " + (", ".join(c["id"] for c in entry.context) or "none"))
            with st.form(f"edit-{entry.id}"):
                allowed = ["good", "bad"] if len(entry.answers) == 1 else ["first", "second", "both_bad"]
                choice = st.selectbox("Choice", allowed, index=allowed.index(entry.choice))
                correction = st.text_area("Correction", entry.correction)
                comment = st.text_area("Comment", entry.comment)
                if st.form_submit_button("Save changes"):
                    try:
                        append(settings.feedback_file, Feedback(**{**entry.__dict__, "choice": choice,
                                                                   "correction": correction.strip(),
                                                                   "comment": comment.strip()}))
                    except ApprentiError as error:
                        st.error(str(error))
                    else:
                        st.rerun()
            if st.button("Delete", key=f"delete-{entry.id}"):
                delete(settings.feedback_file, entry)
                st.rerun()


def main() -> None:
    st.set_page_config(page_title="Apprenti feedback", layout="wide")
    try:
        settings = Settings.load()
    except ApprentiError as error:
        st.error(str(error))
        return
    pages = {"Ask and compare": ask_page, "History": history_page}
    page = st.sidebar.radio("Page", list(pages))
    try:
        pages[page](settings)
    except ApprentiError as error:
        st.error(str(error))


main()
