"""The feedback page: a chat over the knowledge base, each answer streamed with its sources under it and rated
good or bad (with the answer you wanted); two answers to compare on a page of their own; past feedback (from
the CLI, this page and the API) to browse, fix or delete.

    streamlit run app/feedback_ui.py    # or: python cli_app.py ui, or menu 7; binds to 127.0.0.1
    python cli_app.py ui --host 0.0.0.0 --key KEY    # other machines: the page asks for the key first

The conversations are those the CLI keeps (conversation/saved.py): the sidebar reopens one that menu 1 started,
and `ask --conversation ID` continues one started here. A follow-up that names nothing ("Where does it
live?") is searched with what the conversation says.

On the comparison page the two answers are the base and the fine-tuned model when there is a fine-tuned one,
else two samples of the same model; which is which is shown only after the choice, so that it cannot sway it.
Documents and answers are shown as text, never as Markdown: an image link in a document must not make the
browser fetch it. That is why answers are streamed into st.text, not through st.write_stream, which renders
Markdown.
"""
from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts only app/ on the path
from app.login import logged_in  # noqa: E402
from app.markdown import plain  # noqa: E402
from common.config import Settings  # noqa: E402
from common.errors import ApprentiError  # noqa: E402
from conversation.saved import Conversation, Conversations  # noqa: E402
from feedback.records import CHOICES, SOURCES, Feedback, append, delete, read  # noqa: E402
from inference.versions import BASE, Versions  # noqa: E402

SAMPLING_TEMPERATURE = 0.8  # two samples of one model must differ to be worth comparing
VERDICTS = {"A is better": "first", "B is better": "second", "Both are bad": "both_bad"}
RATINGS = {"Good": "good", "Bad": "bad"}


@st.cache_resource(show_spinner="Loading the models (once)...", max_entries=1)
def assistants(settings_json: str, champion: str) -> tuple:
    """The assistant that answers in the chat (the champion) and the two that answer a comparison, by label;
    loaded once per settings and champion: a new champion (a promotion, `models use`, a rollback) is loaded at
    the next question, without a restart."""
    from inference.versions import choose_chat_model
    from rag_module import Assistant
    settings = Settings(**json.loads(settings_json))
    source = choose_chat_model(settings)
    assistant = Assistant(settings, source=source)
    if source.version != BASE:
        base = Assistant(settings, source=Versions(settings).source(BASE))
        return assistant, {"base": base, "fine-tuned": assistant}
    return assistant, {"sample 1": assistant, "sample 2": assistant}


def current_assistants(settings: Settings) -> tuple:
    return assistants(json.dumps(dataclasses.asdict(settings), default=str, sort_keys=True),
                      Versions(settings).in_use())


def streamed(assistant, question: str, label: str = "", **options):
    """assistant.ask(question, **options), its answer shown as text while it is generated."""
    shown, pieces = st.empty(), []

    def show(piece: str) -> None:
        # Each update is a Streamlit call: pressing Stop raises there, which closes the token stream and so
        # cancels the generation.
        pieces.append(piece)
        shown.text(label + "".join(pieces))

    with st.spinner("Answering; Stop (top right) cancels..."):
        answer = assistant.ask(question, on_text=show, **options)
    shown.empty()
    return answer


# ------------------------------------------------------------------ the chat

def chat_page(settings: Settings) -> None:
    saved = Conversations(settings.conversations_dir)
    conversations_sidebar(saved)
    opened = st.session_state.get("conversation")
    conversation = saved.get(opened) if opened else Conversation()
    st.header(plain(conversation.title) if conversation.turns else "New conversation")
    for index, turn in enumerate(conversation.turns):
        with st.chat_message(turn["role"]):
            st.text(turn["content"])
            if turn["role"] == "assistant":
                sources = answer_sources(settings, conversation, index)
                show_sources(sources, turn)
                rating_form(settings, conversation, index, sources)
    question = st.chat_input("Ask about your documents")
    if question is None:
        return
    if not question.strip():
        st.warning("Type a question first.")
        return
    with st.chat_message("user"):
        st.text(question)
    with st.chat_message("assistant"):
        champion, _ = current_assistants(settings)
        answer = streamed(champion, question, history=conversation.history())
    conversation.add(question.strip(), answer)
    saved.save(conversation)
    st.session_state["conversation"] = conversation.id
    answered_here()[(conversation.id, len(conversation.turns) - 1)] = [
        {"id": source.id, "text": source.text, "about": f"{source.score:.2f}, {source.source}"}
        for source in answer.sources]
    st.rerun()  # the answer is shown again with its sources and its rating, as the earlier ones are


def conversations_sidebar(saved: Conversations) -> None:
    """Start a new conversation, reopen or delete one: those of the CLI too."""
    if st.sidebar.button("New conversation", key="new-conversation"):
        st.session_state.pop("conversation", None)
    found, problems = saved.all()
    for problem in problems:
        st.sidebar.warning(plain(f"skipped: {problem}"))
    if found:
        st.sidebar.subheader("Conversations")
    for conversation in found:
        opened = st.session_state.get("conversation") == conversation.id
        title, remove = st.sidebar.columns([5, 1], vertical_alignment="center")
        if title.button(plain(conversation.title), key=f"open-{conversation.id}", type="primary" if opened else "secondary",
                        help=f"{len(conversation.turns) // 2} question(s), the last at {conversation.updated}"):
            st.session_state["conversation"] = conversation.id
            st.rerun()  # the list above shows the opened one too
        if remove.button("✕", key=f"delete-conversation-{conversation.id}", help="Delete this conversation"):
            saved.delete(conversation.id)
            if opened:
                st.session_state.pop("conversation")
            st.rerun()


def answered_here() -> dict:
    """The passages of the answers given in this browser session, by (conversation id, turn index): the
    conversation itself keeps only their ids."""
    return st.session_state.setdefault("answered", {})


def answer_sources(settings: Settings, conversation: Conversation, index: int) -> list[dict]:
    """The passages the answer at turns[index] was made from, {"id", "text", "about"}: as retrieved when it was
    given here, else read back from the knowledge base by id ("text" None for a document deleted since)."""
    key = (conversation.id, index)
    if key not in answered_here():
        champion, _ = current_assistants(settings)
        answered_here()[key] = [stored_passage(champion.knowledge_base, chunk_id)
                                for chunk_id in conversation.turns[index].get("sources", [])]
    return answered_here()[key]


def stored_passage(knowledge_base, chunk_id: str) -> dict:
    try:
        [(_, text)] = knowledge_base.passages([chunk_id])
    except ApprentiError:  # its document was deleted or replaced since the answer
        return {"id": chunk_id, "text": None, "about": "no longer in the knowledge base"}
    return {"id": chunk_id, "text": text, "about": ""}


def show_sources(sources: list[dict], turn: dict) -> None:
    if not sources:
        if turn.get("refused"):
            st.caption("No passage reaches the relevance threshold: the assistant did not ask the model.")
        return
    label = "Sources: " + ", ".join(f"{source['id']} ({source['about']})" if source["about"] else source["id"]
                                    for source in sources)
    with st.expander(plain(label)):
        for source in sources:
            st.text(f"[{source['id']}]")
            st.text(source["text"] if source["text"] is not None else "(no longer in the knowledge base)")


def rating_form(settings: Settings, conversation: Conversation, index: int, sources: list[dict]) -> None:
    """Good or bad, with the answer wanted: one feedback record, as the CLI writes after an answer."""
    key = f"{conversation.id}-{index}"
    rated = st.session_state.setdefault("rated", {})
    if key in rated:
        st.caption(plain(rated[key]))
        return
    with st.expander("Rate this answer"), st.form(f"rate-{key}"):
        rating = st.radio("Rating", list(RATINGS), index=None, horizontal=True, key=f"rating-{key}")
        correction = st.text_area("The answer you wanted (for a bad one, optional)", key=f"correction-{key}")
        comment = st.text_area("Comment (optional)", key=f"comment-{key}")
        submitted = st.form_submit_button("Send")
    if not submitted:
        return
    if rating is None:
        st.warning("Choose good or bad first.")
        return
    turn = conversation.turns[index]
    try:
        entry = Feedback(question=conversation.turns[index - 1]["content"], choice=RATINGS[rating], source="ui",
                         answers=[{"text": turn["content"], "model": turn.get("model")}],
                         context=[{"id": s["id"], "text": s["text"]} for s in sources if s["text"] is not None],
                         correction=correction.strip(), comment=comment.strip(),
                         history=conversation.history()[:index - 1])
    except ApprentiError as error:  # a good answer with a correction, an overlong text
        st.error(plain(str(error)))
        return
    append(settings.feedback_file, entry)
    rated[key] = f"Rated {RATINGS[rating]}: feedback {entry.id}."
    st.rerun()


# ------------------------------------------------------------------ the comparison

def candidates(settings: Settings, question: str) -> dict:
    """Retrieve once, then two answers in a random order; a refusal needs no comparison."""
    _, models = current_assistants(settings)
    first = next(iter(models.values()))
    sources = first.retrieve(question)
    if not sources:
        return {"question": question, "sources": [], "answers": []}
    labels = list(models)
    random.shuffle(labels)
    answers = []
    for position, label in zip("AB", labels):
        temperature = SAMPLING_TEMPERATURE if label.startswith("sample") else 0.0
        answer = streamed(models[label], question, f"Answer {position}: ", sources=sources, temperature=temperature)
        answers.append({"text": answer.answer, "model": answer.model, "label": label})
    return {"question": question, "sources": sources, "answers": answers}


def compare_page(settings: Settings) -> None:
    st.header("Compare two answers")
    with st.form("ask"):
        question = st.text_input("Question")
        asked = st.form_submit_button("Ask")
    if asked:
        st.session_state.pop("saved", None)
        if not question.strip():
            st.warning("Type a question first.")
            return
        st.session_state["round"] = candidates(settings, question.strip())
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


# ------------------------------------------------------------------ the history

def history_page(settings: Settings) -> None:
    st.header("Feedback history")
    entries, problems = read(settings.feedback_file)
    for problem in problems:
        st.warning(plain(f"{settings.feedback_file.name}, {problem}: skipped"))
    sources = st.multiselect("Source", list(SOURCES), default=list(SOURCES))
    choices = st.multiselect("Choice", list(CHOICES), default=list(CHOICES))
    text = st.text_input("Containing").strip().lower()
    shown = [entry for entry in reversed(entries) if entry.source in sources and entry.choice in choices
             and (not text or text in entry.question.lower() or text in entry.comment.lower())]
    st.caption(f"{len(shown)} of {len(entries)} entries")
    for entry in shown:
        with st.expander(plain(f"{entry.timestamp} · {entry.source} · {entry.choice} · {entry.question[:80]}")):
            for position, answer in zip("AB", entry.answers):
                st.text(f"{position} ({answer.get('model')}): {answer['text']}")
            for turn in entry.history:  # the conversation the question followed
                st.text(f"{turn['role']}: {turn['content']}")
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
                        st.error(plain(str(error)))
                    else:
                        st.rerun()
            if st.button("Delete", key=f"delete-{entry.id}"):
                delete(settings.feedback_file, entry)
                st.rerun()


PAGES = {"Chat": chat_page, "Compare two answers": compare_page, "History": history_page}


def main() -> None:
    st.set_page_config(page_title="Apprenti feedback", layout="wide")
    if not logged_in():
        return
    try:
        settings = Settings.load()
        page = st.sidebar.radio("Page", list(PAGES))
        PAGES[page](settings)
    except ApprentiError as error:
        st.error(plain(str(error)))


main()
