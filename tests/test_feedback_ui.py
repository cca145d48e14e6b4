"""The feedback page, through Streamlit's testing API and in a real headless Chromium."""
import os
import shutil
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from config import Settings
from conftest import ROOT, free_port, wait_for_port
from feedback import read

PAGE = str(ROOT / "feedback_ui.py")


def add_knowledge(home):
    from knowledge_base import KnowledgeBase, embeddings_for
    KnowledgeBase(home / "chroma_db_store", embeddings_for(Settings.load())).add(
        "The ferry on Lake Quillmoor leaves at 7:15 every morning.", "ferry")


def test_ask_compare_choose_and_submit(tiny_model, home):
    add_knowledge(home)
    page = AppTest.from_file(PAGE, default_timeout=180).run()
    page.text_input[0].input("When does the ferry leave?")
    page.button[0].click().run()  # Ask
    assert not page.exception
    assert any("[ferry#0]" in markdown.value for markdown in page.markdown)
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
    from feedback import Feedback, append
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


# ---------------------------------------------------------------- in a real browser

@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed here when missing."""
    if not (shutil.which("chromedriver") and shutil.which("chromium")):
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium"), shutil.which("chromedriver")


def test_in_headless_chromium_ask_choose_submit_and_read_the_record_back(tiny_model, home, chromium, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait
    add_knowledge(home)
    port = free_port()
    server = subprocess.Popen([sys.executable, "cli_app.py", "ui", "--port", str(port)], cwd=ROOT,
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(chromium[1]), options=options)
    try:
        wait_for_port(port)
        browser.get(f"http://127.0.0.1:{port}")
        wait = WebDriverWait(browser, 240)
        question = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "input[aria-label='Question']")))
        question.send_keys("When does the ferry leave?")
        browser.find_element(By.XPATH, "//button[.//p[text()='Ask']]").click()
        try:
            wait.until(ready.element_to_be_clickable((By.XPATH, "//label[contains(., 'A is better')]"))).click()
        finally:
            browser.save_screenshot(str(tmp_path / "feedback_page.png"))
        browser.find_element(By.CSS_SELECTOR, "textarea[aria-label='Comment (optional)']").send_keys("clear")
        browser.find_element(By.XPATH, "//button[.//p[text()='Submit']]").click()
        wait.until(ready.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Saved as')]")))
        browser.save_screenshot(str(tmp_path / "feedback_page.png"))
    finally:
        browser.quit()
        server.terminate()  # cli_app.py stops the Streamlit server it started
        output = server.communicate(timeout=60)[0]
    assert (tmp_path / "feedback_page.png").stat().st_size > 10_000
    entries, _ = read(Settings.load().feedback_file)
    assert [(e.question, e.choice, e.comment, e.source) for e in entries] == [
        ("When does the ferry leave?", "first", "clear", "ui")]
    assert f"http://127.0.0.1:{port}" in output and "Traceback" not in output
