"""The feedback page (a chat whose answers are rated, a comparison of two answers, the feedback history, the
login), through Streamlit's testing API and in a real headless Chromium."""
import os
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from common.config import Settings
from conftest import ROOT, free_port, listening_addresses, wait_for_port
from conversation.saved import Conversations
from feedback.records import Feedback, append, read

PAGE = str(ROOT / "app" / "feedback_ui.py")
FERRY = "The ferry on Lake Quillmoor leaves at 7:15 every morning."
HERON = "Pim the heron lives in the reeds by the old mill on the Wexmoor river."
HERON_CONTEXT = [{"id": "heron#0", "text": HERON}]


def add_knowledge(home, text=FERRY, doc_id="ferry"):
    from knowledge_base import KnowledgeBase
    from store.embeddings import embeddings_for
    KnowledgeBase(home / "chroma_db_store", embeddings_for(Settings.load())).add(text, doc_id)


def open_page(name: str | None = None, timeout: float = 180) -> AppTest:
    page = AppTest.from_file(PAGE, default_timeout=timeout).run()
    if name:
        page.sidebar.radio[0].set_value(name).run()
    assert not page.exception, page.exception
    return page


def chat(page, question):
    page.chat_input[0].set_value(question).run()
    assert not page.exception, page.exception
    return page


def sources_under(page, answer: int) -> str:
    """The label of the sources under the `answer`-th answer (0 first), as the page shows it."""
    message = [message for message in page.chat_message if message.name == "assistant"][answer]
    return next(expander.label for expander in message.expander if expander.label.startswith("Sources"))


def unescaped(label: str) -> str:
    return label.replace("\\", "")


def saved_conversations() -> list:
    found, problems = Conversations(Settings.load().conversations_dir).all()
    assert problems == []
    return found


def button(page_or_block, label):
    return next(button for button in page_or_block.button if button.label == label)


# ---------------------------------------------------------------- the chat

def test_a_follow_up_naming_nothing_is_answered_from_the_conversations_document(tiny_model, home):
    add_knowledge(home)
    add_knowledge(home, HERON, "heron")
    page = chat(open_page(), "Who is Pim the heron?")
    assert [message.name for message in page.chat_message] == ["user", "assistant"]
    assert unescaped(sources_under(page, 0)).startswith("Sources: heron#0 (")
    assert HERON in [text.value for text in page.text]  # the passage, under its answer
    chat(page, "Where does he live?")  # alone, it reaches no passage: the assistant would refuse
    assert [message.name for message in page.chat_message] == ["user", "assistant"] * 2
    assert "heron#0" in unescaped(sources_under(page, 1)) and "ferry" not in sources_under(page, 1)
    [conversation] = saved_conversations()  # kept after each answer, where the CLI finds it
    assert [turn["content"] for turn in conversation.turns[::2]] == ["Who is Pim the heron?", "Where does he live?"]
    assert conversation.turns[3]["sources"] == ["heron#0"] and not conversation.turns[3]["refused"]
    assert page.session_state["conversation"] == conversation.id
    assert any(b.label == "Who is Pim the heron?" for b in page.sidebar.button)


def test_an_answer_is_rated_good_or_bad_with_its_context(tiny_model, home):
    add_knowledge(home, HERON, "heron")
    page = chat(open_page(), "Who is Pim the heron?")
    conversation_id = page.session_state["conversation"]
    page.radio(key=f"rating-{conversation_id}-1").set_value("Good")
    page.text_area(key=f"correction-{conversation_id}-1").input("He is a heron.")
    button(page, "Send").click().run()
    assert "a good answer needs no correction" in page.error[0].value and not read(Settings.load().feedback_file)[0]
    page.radio(key=f"rating-{conversation_id}-1").set_value("Bad")
    page.text_area(key=f"comment-{conversation_id}-1").input("too vague")
    button(page, "Send").click().run()
    assert not page.exception and not page.error
    [entry], _ = read(Settings.load().feedback_file)
    answer = saved_conversations()[0].turns[1]
    assert (entry.question, entry.choice, entry.source, entry.correction, entry.comment) == (
        "Who is Pim the heron?", "bad", "ui", "He is a heron.", "too vague")
    assert entry.answers == [{"text": answer["content"], "model": str(tiny_model)}]
    assert entry.context == HERON_CONTEXT and entry.history == []
    assert any(f"Rated bad: feedback {entry.id}" in unescaped(caption.value) for caption in page.caption)
    assert not any(b.label == "Send" for b in page.button)  # rated once
    page = chat(page, "Where does he live?")  # a follow-up's rating keeps the conversation it followed
    page.radio(key=f"rating-{conversation_id}-3").set_value("Good")
    button(page, "Send").click().run()
    follow_up = read(Settings.load().feedback_file)[0][-1]
    assert follow_up.question == "Where does he live?" and follow_up.history == [
        {"role": "user", "content": "Who is Pim the heron?"}, {"role": "assistant", "content": answer["content"]}]


def kept_by_the_cli(settings, question: str, answer_text: str, source_ids: list[str]) -> str:
    """A conversation as menu 1 or `ask --conversation new` keeps it; returns its id."""
    from conversation.saved import Conversation
    from rag_module import Answer
    from store.hybrid_search import Passage
    conversation = Conversation()
    conversation.add(question, Answer(answer_text, False, "the cli's model",
                                      [Passage(i, i.split("#")[0], 0.5, "", "typed") for i in source_ids]))
    Conversations(settings.conversations_dir).save(conversation)
    return conversation.id


def test_a_conversation_the_cli_kept_is_reopened_continued_and_deleted(tiny_model, home):
    add_knowledge(home, HERON, "heron")
    settings = Settings.load()
    kept = kept_by_the_cli(settings, "Who is Pim the heron?", "A heron by the mill.", ["heron#0", "gone#0"])
    page = open_page()
    assert [h.value for h in page.header] == ["New conversation"] and not page.chat_message
    button(page.sidebar, "Who is Pim the heron?").click().run()
    assert [text.value for text in page.chat_message[1].text][0] == "A heron by the mill."
    assert unescaped(sources_under(page, 0)) == "Sources: heron#0, gone#0 (no longer in the knowledge base)"
    assert HERON in [text.value for text in page.text]  # read back from the knowledge base
    chat(page, "Where does he live?")
    [conversation] = saved_conversations()
    assert conversation.id == kept and len(conversation.turns) == 4
    assert conversation.turns[3]["sources"] == ["heron#0"]
    button(page.sidebar, "New conversation").click().run()
    assert [h.value for h in page.header] == ["New conversation"] and not page.chat_message
    next(b for b in page.sidebar.button if b.key == f"delete-conversation-{kept}").click().run()
    assert not page.exception and saved_conversations() == []
    assert not any(b.key and b.key.startswith("open-") for b in page.sidebar.button)


def test_a_question_nothing_answers_is_refused_in_the_chat(tiny_model, home):
    add_knowledge(home)
    page = chat(open_page(), "Who painted the Mona Lisa?")
    assert "nothing in the knowledge base answers this" in page.chat_message[1].text[0].value
    assert any("No passage reaches the relevance threshold" in caption.value for caption in page.caption)
    assert not [e for e in page.expander if e.label.startswith("Sources")]


# ---------------------------------------------------------------- the comparison

def compare(page, question):
    page.text_input[0].input(question)
    button(page, "Ask").click().run()
    assert not page.exception, page.exception
    return page


def test_ask_compare_choose_and_submit(tiny_model, home):
    add_knowledge(home)
    page = compare(open_page("Compare two answers"), "When does the ferry leave?")
    assert any("[ferry#0]" in text.value for text in page.text)
    assert [m.value for m in page.markdown if m.value.startswith("**Answer")] == ["**Answer A**", "**Answer B**"]
    verdict = next(radio for radio in page.radio if radio.label == "Which answer is better?")
    verdict.set_value("B is better")
    page.text_area[0].input("At 7:15.")
    page.text_area[1].input("B names the time")
    button(page, "Submit").click().run()
    assert not page.exception
    assert "Saved as" in page.success[0].value and "sample" in page.success[0].value  # revealed after
    entries, problems = read(Settings.load().feedback_file)
    assert problems == [] and len(entries) == 1
    entry = entries[0]
    assert (entry.question, entry.choice, entry.source) == ("When does the ferry leave?", "second", "ui")
    assert entry.correction == "At 7:15." and entry.comment == "B names the time"
    assert entry.context == [{"id": "ferry#0", "text": FERRY}]
    assert len(entry.answers) == 2 and all(answer["model"] == str(tiny_model) for answer in entry.answers)


def test_a_question_nothing_answers_has_nothing_to_compare(tiny_model, home):
    add_knowledge(home)
    page = compare(open_page("Compare two answers"), "Who painted the Mona Lisa?")
    assert "nothing to compare" in page.info[0].value and not read(Settings.load().feedback_file)[0]


def test_two_questions_in_a_row(tiny_model, home):
    """Streamlit runs each rerun on a new thread: the cached assistant's keyword index must follow."""
    add_knowledge(home)
    page = compare(open_page("Compare two answers"), "When does the ferry leave?")
    assert page.session_state["round"]["question"] == "When does the ferry leave?"
    compare(page, "At what time does the Lake Quillmoor ferry leave?")
    assert page.session_state["round"]["question"] == "At what time does the Lake Quillmoor ferry leave?"
    assert len(page.session_state["round"]["answers"]) == 2


def test_a_newly_fine_tuned_model_is_used_without_a_restart(tiny_model, home):
    from fine_tune_model import FineTuneConfig, train
    from training.learning_data import append_entry
    add_knowledge(home)
    page = compare(open_page("Compare two answers"), "When does the ferry leave?")
    assert {answer["label"] for answer in page.session_state["round"]["answers"]} == {"sample 1", "sample 2"}
    settings = Settings.load()
    append_entry(settings.learning_data, "The ferry is painted green.")
    version = train(settings, FineTuneConfig(epochs=1, min_steps=2, batch_size=2), lambda event: None)["id"]
    compare(page, "When does the ferry leave?")
    answers = page.session_state["round"]["answers"]
    assert {answer["label"] for answer in answers} == {"base", "fine-tuned"}
    assert any(f"version {version}" in answer["model"] for answer in answers)
    page.sidebar.radio[0].set_value("Chat").run()
    chat(page, "When does the ferry leave?")  # the chat answers with the champion
    assert f"version {version}" in saved_conversations()[0].turns[1]["model"]


MARKDOWN_TRAP = "The ferry leaves at 7:15. ![pixel](http://127.0.0.1:9/pixel.png) **bold** <b>tag</b>"


def rendered_as_markdown(page) -> list[str]:
    return [element.value for element in [*page.markdown, *page.caption, *page.success, *page.info]] + [
        element.label for element in [*page.expander, *page.button]]


def test_documents_and_answers_are_shown_as_text_never_as_markdown(tiny_model, home):
    add_knowledge(home, MARKDOWN_TRAP, "trap")
    page = chat(open_page(), "When does the ferry leave?")
    assert MARKDOWN_TRAP in [text.value for text in page.text]  # the document, as it is, under the answer
    assert not any("](http" in value or "**bold**" in value for value in rendered_as_markdown(page))
    assert saved_conversations()[0].turns[1]["content"] in [text.value for text in page.text]
    page.sidebar.radio[0].set_value("Compare two answers").run()
    compare(page, "When does the ferry leave?")
    assert MARKDOWN_TRAP in [text.value for text in page.text]
    assert not any("](http" in value or "**bold**" in value for value in rendered_as_markdown(page))
    answers = page.session_state["round"]["answers"]
    assert all(any(answer["text"] in text.value for text in page.text) for answer in answers)


# ---------------------------------------------------------------- the history

def test_history_filters_fixes_and_deletes(home):
    path = Settings.load().feedback_file
    for question, choice, source in [("Capital of France?", "good", "cli"), ("Capital of Spain?", "bad", "cli")]:
        append(path, Feedback(question=question, answers=[{"text": "Paris", "model": "m"}], choice=choice,
                              source=source))
    page = open_page("History", timeout=60)
    assert page.caption[0].value == "2 of 2 entries"
    page.text_input[0].input("spain").run()
    assert page.caption[0].value == "1 of 2 entries"
    page.text_area[1].input("Wrong capital")  # the comment of the entry shown
    button(page, "Save changes").click().run()
    entries, _ = read(path)
    assert next(e for e in entries if e.question == "Capital of Spain?").comment == "Wrong capital"
    button(page, "Delete").click().run()
    assert [e.question for e in read(path)[0]] == ["Capital of France?"]
    assert len(path.read_text().splitlines()) == 4  # changes are appended, nothing rewritten


def test_feedback_sent_through_the_api_is_in_the_history(home):
    path = Settings.load().feedback_file
    for question, source in [("From the menu?", "cli"), ("From a client?", "api"), ("From the page?", "ui")]:
        append(path, Feedback(question=question, answers=[{"text": "yes", "model": "m"}], choice="good",
                              source=source))
    page = open_page("History", timeout=60)
    assert page.caption[0].value == "3 of 3 entries" and "api" in page.multiselect[0].value
    page.multiselect[0].set_value(["api"]).run()
    assert page.caption[0].value == "1 of 3 entries"
    assert [unescaped(e.label).split(" · ")[1:] for e in page.expander] == [["api", "good", "From a client?"]]


# ---------------------------------------------------------------- the login

def test_with_a_key_nothing_but_the_login_shows_until_it_is_typed(home, monkeypatch):
    monkeypatch.setenv("APPRENTI_PAGE_KEY", "s3cret key")
    append(Settings.load().feedback_file, Feedback(question="Private?", answers=[{"text": "yes", "model": "m"}],
                                                   choice="good", source="cli"))
    page = AppTest.from_file(PAGE, default_timeout=60).run()
    from streamlit.proto.TextInput_pb2 import TextInput
    assert [(t.label, t.proto.type) for t in page.text_input] == [("Key", TextInput.PASSWORD)]
    assert not page.sidebar.radio and not page.chat_input and not page.sidebar.button
    page.text_input[0].input("s3cret")
    button(page, "Log in").click().run()
    assert page.error[0].value == "Wrong key." and not page.chat_input and not page.sidebar.radio
    page.text_input[0].input("s3cret key")
    button(page, "Log in").click().run()
    assert not page.exception and not page.error and page.chat_input
    page.sidebar.radio[0].set_value("History").run()
    assert page.caption[0].value == "1 of 1 entries"


# ---------------------------------------------------------------- the command

def test_streamlit_run_from_any_folder_binds_to_this_machine_only(home, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", PAGE, "--server.port", str(port)],
                              cwd=tmp_path, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_ui_command_passes_every_setting_to_the_page(home, started_pages, monkeypatch):
    from cli_app import main
    monkeypatch.delenv("APPRENTI_PAGE_KEY", raising=False)
    assert main(["--threshold", "0.9", "--base", "ui", "--port", "8999"]) == 0
    command, env = started_pages[0]
    assert command[-8:] == ["--server.address", "127.0.0.1", "--server.port", "8999", "--server.headless", "true",
                            "--browser.gatherUsageStats", "false"]
    assert "APPRENTI_PAGE_KEY" not in env  # on this machine only, no key unless one is given
    monkeypatch.setattr(os, "environ", env)
    page_settings = Settings.load()
    assert (page_settings.relevance_threshold, page_settings.use_finetuned, page_settings.home) == (0.9, False, home)


def test_the_ui_on_another_address_needs_a_key_which_reaches_the_page_by_its_environment(
        home, started_pages, monkeypatch, capsys):
    from cli_app import main
    monkeypatch.delenv("APPRENTI_PAGE_KEY", raising=False)
    assert main(["ui", "--host", "0.0.0.0"]) == 1 and not started_pages
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--host 0.0.0.0" in error and "--key KEY" in error
    assert main(["ui", "--host", "0.0.0.0", "--key", "s3cret"]) == 0
    command, env = started_pages[0]
    assert env["APPRENTI_PAGE_KEY"] == "s3cret" and not any("s3cret" in part for part in command)
    assert "asks for the key" in capsys.readouterr().err
    monkeypatch.setenv("APPRENTI_PAGE_KEY", "from the environment")
    assert main(["ui", "--host", "0.0.0.0"]) == 0
    assert started_pages[1][1]["APPRENTI_PAGE_KEY"] == "from the environment"


# ---------------------------------------------------------------- in a real browser

@pytest.fixture
def pixel_server():
    """A loopback HTTP server that counts the requests it gets: a page that renders Markdown images would
    fetch from it."""
    import http.server
    import threading
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *arguments):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()


def test_in_headless_chromium_a_follow_up_is_answered_from_the_right_document_and_rated(tiny_model, home, browser,
                                                                                        tmp_path, pixel_server):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait
    pixel_port, hits = pixel_server
    add_knowledge(home)
    add_knowledge(home, f"{HERON} ![pixel](http://127.0.0.1:{pixel_port}/pixel.png)", "heron")
    port = free_port()
    server = subprocess.Popen([sys.executable, "cli_app.py", "ui", "--port", str(port)], cwd=ROOT,
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    screenshot = tmp_path / "feedback_page.png"
    wait = WebDriverWait(browser, 240)

    def sources_shown() -> list:
        return browser.find_elements(By.XPATH, "//*[@data-testid='stChatMessage']//summary[contains(., 'Sources')]")

    def click(element) -> None:
        # Centred first: the chat input is pinned to the bottom of the window and would take a click there
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def chosen(label_path: str):
        """A wait condition: the last radio option at `label_path` is selected, clicked again while it is not (a
        click during the expander's opening lands elsewhere)."""
        def selected(driver) -> bool:
            label = driver.find_elements(By.XPATH, label_path)[-1]
            if not label.find_element(By.TAG_NAME, "input").is_selected():
                try:
                    click(label)
                except WebDriverException:  # still moving: the next try
                    return False
            return label.find_element(By.TAG_NAME, "input").is_selected()
        return selected

    def ask(question: str, answers: int):
        box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")))
        box.send_keys(question, Keys.ENTER)
        wait.until(lambda driver: len(sources_shown()) == answers)  # shown once the answer is complete

    try:
        wait_for_port(port)
        browser.get(f"http://127.0.0.1:{port}")
        try:
            ask("Who is Pim the heron?", 1)
            ask("Where does he live?", 2)
            follow_up = sources_shown()[-1]
            assert "heron#0" in follow_up.text and "ferry" not in follow_up.text, follow_up.text
            click(follow_up)  # the passages, as text: the image link in it is not fetched
            wait.until(ready.visibility_of_element_located((By.XPATH, "//*[contains(text(), 'Pim the heron lives')]")))
            click(browser.find_elements(By.XPATH, "//summary[contains(., 'Rate this answer')]")[-1])
            wait.until(chosen("//label[contains(., 'Bad')]"))
            wait.until(ready.element_to_be_clickable(
                (By.XPATH, "(//textarea[contains(@aria-label, 'The answer you wanted')])[last()]"))
            ).send_keys("By the old mill.")
            click(browser.find_elements(By.XPATH, "//button[.//p[text()='Send']]")[-1])
            wait.until(ready.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Rated bad')]")))
        finally:
            browser.save_screenshot(str(screenshot))
        assert not browser.find_elements(By.CSS_SELECTOR, f"img[src*='{pixel_port}']")
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
    finally:
        server.terminate()  # cli_app.py stops the Streamlit server it started
        output = server.communicate(timeout=60)[0]
    assert screenshot.stat().st_size > 10_000
    [entry], _ = read(Settings.load().feedback_file)
    assert (entry.question, entry.choice, entry.correction, entry.source) == (
        "Where does he live?", "bad", "By the old mill.", "ui")
    assert [passage["id"] for passage in entry.context] == ["heron#0"]
    [conversation] = saved_conversations()
    assert [turn["sources"] for turn in conversation.turns[1::2]] == [["heron#0"], ["heron#0"]]
    assert f"http://127.0.0.1:{port}" in output and "Traceback" not in output
    assert hits == []  # the image link in the document was never fetched
