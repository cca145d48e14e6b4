"""The feedback page, through Streamlit's testing API and in a real headless Chromium."""
import os
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from common.config import Settings
from conftest import ROOT, free_port, listening_addresses, wait_for_port
from feedback.records import read

PAGE = str(ROOT / "app" / "feedback_ui.py")
FERRY = "The ferry on Lake Quillmoor leaves at 7:15 every morning."


def add_knowledge(home, text=FERRY, doc_id="ferry"):
    from knowledge_base import KnowledgeBase
    from store.vector_store import embeddings_for
    KnowledgeBase(home / "chroma_db_store", embeddings_for(Settings.load())).add(text, doc_id)


def ask(page, question):
    page.text_input[0].input(question)
    page.button[0].click().run()  # Ask
    assert not page.exception, page.exception
    return page


def test_ask_compare_choose_and_submit(tiny_model, home):
    add_knowledge(home)
    page = AppTest.from_file(PAGE, default_timeout=180).run()
    page.text_input[0].input("When does the ferry leave?")
    page.button[0].click().run()  # Ask
    assert not page.exception
    assert any("[ferry#0]" in text.value for text in page.text)
    assert [m.value for m in page.markdown if m.value.startswith("**Answer")] == ["**Answer A**", "**Answer B**"]
    verdict = next(radio for radio in page.radio if radio.label == "Which answer is better?")
    verdict.set_value("B is better")
    page.text_area[0].input("At 7:15.")
    page.text_area[1].input("B names the time")
    next(button for button in page.button if button.label == "Submit").click().run()
    assert not page.exception
    assert "Saved as" in page.success[0].value and "sample" in page.success[0].value  # revealed after
    entries, problems = read(Settings.load().feedback_file)
    assert problems == [] and len(entries) == 1
    entry = entries[0]
    assert (entry.question, entry.choice, entry.source) == ("When does the ferry leave?", "second", "ui")
    assert entry.correction == "At 7:15." and entry.comment == "B names the time"
    assert entry.context == [{"id": "ferry#0", "text": "The ferry on Lake Quillmoor leaves at 7:15 every morning."}]
    assert len(entry.answers) == 2 and all(answer["model"] == str(tiny_model) for answer in entry.answers)


def test_a_question_nothing_answers_has_nothing_to_compare(tiny_model, home):
    add_knowledge(home)
    page = AppTest.from_file(PAGE, default_timeout=180).run()
    page.text_input[0].input("Who painted the Mona Lisa?")
    page.button[0].click().run()
    assert "nothing to compare" in page.info[0].value and not read(Settings.load().feedback_file)[0]


def test_history_filters_fixes_and_deletes(tiny_model, home):
    from feedback.records import Feedback, append
    path = Settings.load().feedback_file
    for question, choice, source in [("Capital of France?", "good", "cli"), ("Capital of Spain?", "bad", "cli")]:
        append(path, Feedback(question=question, answers=[{"text": "Paris", "model": "m"}], choice=choice,
                              source=source))
    page = AppTest.from_file(PAGE, default_timeout=60).run()
    page.sidebar.radio[0].set_value("History").run()
    assert page.caption[0].value == "2 of 2 entries"
    page.text_input[0].input("spain").run()
    assert page.caption[0].value == "1 of 2 entries"
    page.text_area[1].input("Wrong capital")  # the comment of the entry shown
    next(button for button in page.button if button.label == "Save changes").click().run()
    entries, _ = read(path)
    assert next(e for e in entries if e.question == "Capital of Spain?").comment == "Wrong capital"
    next(button for button in page.button if button.label == "Delete").click().run()
    assert [e.question for e in read(path)[0]] == ["Capital of France?"]
    assert len(path.read_text().splitlines()) == 4  # changes are appended, nothing rewritten


def test_two_questions_in_a_row(tiny_model, home):
    """Streamlit runs each rerun on a new thread: the cached assistant's keyword index must follow."""
    add_knowledge(home)
    page = ask(AppTest.from_file(PAGE, default_timeout=180).run(), "When does the ferry leave?")
    assert page.session_state["round"]["question"] == "When does the ferry leave?"
    ask(page, "At what time does the Lake Quillmoor ferry leave?")
    assert page.session_state["round"]["question"] == "At what time does the Lake Quillmoor ferry leave?"
    assert len(page.session_state["round"]["answers"]) == 2


MARKDOWN_TRAP = "The ferry leaves at 7:15. ![pixel](http://127.0.0.1:9/pixel.png) **bold** <b>tag</b>"


def test_documents_and_answers_are_shown_as_text_never_as_markdown(tiny_model, home):
    add_knowledge(home, MARKDOWN_TRAP, "trap")
    page = ask(AppTest.from_file(PAGE, default_timeout=180).run(), "When does the ferry leave?")
    assert MARKDOWN_TRAP in [text.value for text in page.text]  # the document, as it is
    rendered = [element.value for element in [*page.markdown, *page.caption, *page.success, *page.info]]
    assert not any("](http" in value or "**bold**" in value for value in rendered), rendered
    answers = page.session_state["round"]["answers"]
    assert all(any(answer["text"] in text.value for text in page.text) for answer in answers)


def test_a_newly_fine_tuned_model_is_used_without_a_restart(tiny_model, home):
    from fine_tune_model import FineTuneConfig, train
    from training.learning_data import append_entry
    add_knowledge(home)
    page = ask(AppTest.from_file(PAGE, default_timeout=180).run(), "When does the ferry leave?")
    assert {answer["label"] for answer in page.session_state["round"]["answers"]} == {"sample 1", "sample 2"}
    settings = Settings.load()
    append_entry(settings.learning_data, "The ferry is painted green.")
    version = train(settings, FineTuneConfig(epochs=1, min_steps=2, batch_size=2), lambda event: None)["id"]
    ask(page, "When does the ferry leave?")
    answers = page.session_state["round"]["answers"]
    assert {answer["label"] for answer in answers} == {"base", "fine-tuned"}
    assert any(f"version {version}" in answer["model"] for answer in answers)


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
    assert main(["--threshold", "0.9", "--base", "ui", "--port", "8999"]) == 0
    command, env = started_pages[0]
    assert command[-8:] == ["--server.address", "127.0.0.1", "--server.port", "8999", "--server.headless", "true",
                            "--browser.gatherUsageStats", "false"]
    monkeypatch.setattr(os, "environ", env)
    page_settings = Settings.load()
    assert (page_settings.relevance_threshold, page_settings.use_finetuned, page_settings.home) == (0.9, False, home)


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


def test_in_headless_chromium_two_questions_choose_submit_and_read_the_record_back(tiny_model, home, browser,
                                                                                    tmp_path, pixel_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait
    pixel_port, hits = pixel_server
    add_knowledge(home, f"{FERRY} ![pixel](http://127.0.0.1:{pixel_port}/pixel.png)")
    port = free_port()
    server = subprocess.Popen([sys.executable, "cli_app.py", "ui", "--port", str(port)], cwd=ROOT,
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    screenshot = tmp_path / "feedback_page.png"
    try:
        wait_for_port(port)
        browser.get(f"http://127.0.0.1:{port}")
        wait = WebDriverWait(browser, 240)
        for number, question_text in enumerate(["When does the ferry leave?", "What time is the Quillmoor ferry?"]):
            question = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "input[aria-label='Question']")))
            question.send_keys(Keys.CONTROL + "a")  # modifiers are released at the end of each call
            question.send_keys(Keys.DELETE)
            question.send_keys(question_text)
            browser.find_element(By.XPATH, "//button[.//p[text()='Ask']]").click()
            try:
                wait.until(ready.element_to_be_clickable((By.XPATH, "//label[contains(., 'A is better')]"))).click()
            finally:
                browser.save_screenshot(str(screenshot))
            # The form below the choice appears with the page's next run: waited for, as the choice was.
            wait.until(ready.element_to_be_clickable(
                (By.CSS_SELECTOR, "textarea[aria-label='Comment (optional)']"))).send_keys(f"q{number}")
            wait.until(ready.element_to_be_clickable((By.XPATH, "//button[.//p[text()='Submit']]"))).click()
            wait.until(ready.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Saved as')]")))
        assert not browser.find_elements(By.CSS_SELECTOR, f"img[src*='{pixel_port}']")
        browser.save_screenshot(str(screenshot))
    finally:
        server.terminate()  # cli_app.py stops the Streamlit server it started
        output = server.communicate(timeout=60)[0]
    assert screenshot.stat().st_size > 10_000
    entries, _ = read(Settings.load().feedback_file)
    assert [(e.question, e.choice, e.comment, e.source) for e in entries] == [
        ("When does the ferry leave?", "first", "q0", "ui"), ("What time is the Quillmoor ferry?", "first", "q1", "ui")]
    assert f"http://127.0.0.1:{port}" in output and "Traceback" not in output
    assert hits == []  # the image link in the document was never fetched
