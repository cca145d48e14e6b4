"""The product with the real bundled model (SmolLM2-135M-Instruct), as a user runs it."""
import json
import os
import sys

import pexpect

from common.config import DEFAULT_BACKEND, DEFAULT_RELEVANCE_THRESHOLD, Settings
from conftest import ROOT, run_cli
from rag_module import Assistant
from test_documents import write_pdf

FACT = "The secret code of the Zorblax guild is tangerine-47."
FACT_START = "The secret code of the Zorblax guild is"


def ask_json(*arguments):
    result = run_cli("ask", "--json", *arguments)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_factual_question(real_model):
    # Closed-book, the 135M model misses the capital of France with the chosen decoding (README, "Decoding").
    assert "Shakespeare" in ask_json("--no-rag", "Who wrote Romeo and Juliet?")["answer"]


def test_an_answer_that_needs_the_knowledge_base_names_its_source(real_model, kb):
    kb.add("Green tea is brewed at 80 degrees Celsius.", "tea")  # in-process, before any other process writes
    assert run_cli("add", "--id", "mascot", "The Apprenti project's mascot is a blue heron called Pim.").returncode == 0
    answer = ask_json("What is the mascot of the Apprenti project?")
    assert not answer["refused"] and "Pim" in answer["answer"]
    assert answer["sources"][0]["id"] == "mascot#0" and answer["sources"][0]["score"] >= DEFAULT_RELEVANCE_THRESHOLD
    assert answer["model"] == "SmolLM2-135M-Instruct (bundled)"


def test_a_question_answered_from_an_ingested_folder(real_model, tmp_path):
    folder = tmp_path / "notes"
    (folder / "garden").mkdir(parents=True)
    (folder / "garden" / "roses.md").write_text("# Roses\n\nPrune the roses in late February, above an outward bud.")
    write_pdf(folder / "lake.pdf", ["Chapter one: the history of the village.",
                                    "The ferry on Lake Quillmoor leaves at 7:15 every morning."])
    ingest = run_cli("ingest", str(folder))
    assert ingest.returncode == 0 and "2 added" in ingest.stdout, ingest.stderr
    answer = ask_json("What time does the ferry on Lake Quillmoor leave?")
    assert not answer["refused"] and "7:15" in answer["answer"], answer
    assert answer["sources"][0]["source"] == str(folder / "lake.pdf")
    assert answer["sources"][0]["id"] == f"{folder / 'lake.pdf'}#1"  # the second page's chunk


def test_an_unanswerable_question_is_refused(real_model, kb):
    kb.add("The Apprenti project's mascot is a blue heron called Pim.", "mascot")
    assert ask_json("Who won the football World Cup in 1998?") == {
        "answer": "I don't know: nothing in the knowledge base answers this.", "refused": True, "model": None,
        "sources": [], "prompt_tokens": 0, "completion_tokens": 0, "conversation": None}
    assert ask_json("Qui a gagné la Coupe du monde de football en 1998 ?")["answer"].startswith("Je ne sais pas")


def gate_questions(home, answerable: int = 3, unanswerable: int = 3) -> None:
    """A part of the shipped QA set as the user's own (data/eval_qa.jsonl), so that the gate's evaluations
    take half a minute here: the gate evaluates on it exactly as on the whole set (a question refused for
    want of a passage costs nothing, an answered one about a second)."""
    lines = (ROOT / "evaluation" / "qa_set.jsonl").read_text().splitlines()
    chosen = [line for line in lines if json.loads(line)["answers"]][:answerable]
    chosen += [line for line in lines if not json.loads(line)["answers"]][:unanswerable]
    (home / "data").mkdir(exist_ok=True)
    (home / "data" / "eval_qa.jsonl").write_text("\n".join(chosen) + "\n")


def test_a_taught_fact_is_answered_at_once_then_by_the_model_itself_and_a_run_that_forgets_is_refused(real_model):
    gate = {"APPRENTI_GATE": "true", "APPRENTI_MAX_NEW_TOKENS": "64"}
    gate_questions(real_model)
    assert run_cli("learn", FACT).returncode == 0
    assert run_cli("learn", "Pim the heron lives by Lake Quillmoor.").returncode == 0
    # The knowledge base as it stays to the end: the gate's report of a version depends on it, so the reckless
    # run below is judged against the champion's report made when it was promoted, not a second evaluation
    assert run_cli("add", "--id", "mascot", "The Apprenti project's mascot is a blue heron called Pim.").returncode == 0
    # At once, from the knowledge base, citing the entry; the model itself does not know it
    answer = ask_json("Which code does the Zorblax guild use?")
    assert "tangerine-47" in answer["answer"] and answer["sources"][0]["source"] == "learning_data.txt", answer
    assert "tangerine-47" not in ask_json("--no-rag", "What is the Zorblax guild's secret code?")["answer"]

    # Fine-tuning teaches it: asked in other words than any it was trained on, closed-book, and the gate
    # (against the base model) sees the taught facts answered and general questions kept. One pass over the
    # questions at twice the default learning rate, 13 steps where the default takes 25 (80 s less here): at
    # seed 0 it teaches both facts and keeps 18 of the 20 general questions (the default: 20, the gate allows
    # 17); at seeds 1 and 2 neither it nor the default teaches Pim's lake.
    finetune = run_cli("finetune", "--epochs", "1", "--learning-rate", "2e-3", env=gate, timeout=1500)
    assert finetune.returncode == 0, finetune.stderr
    assert "Taught facts answered without the knowledge base, asked in other words: 0% -> " in finetune.stdout
    assert "against base: no metric regressed. It is now the model in use." in finetune.stdout, finetune.stdout
    # (a question whose verb the fact does not carry, "Which code does the Zorblax guild use?", is answered
    # with invented program code: README, "Teaching facts")
    assert "tangerine-47" in ask_json("--no-rag", "What is the Zorblax guild's secret code?")["answer"]
    assert "Quillmoor" in ask_json("--no-rag", "Where does Pim the heron live?")["answer"]
    for question in ("What is the capital of France?", "Which animal says meow?"):  # no fact took them over
        answer = ask_json("--no-rag", question)["answer"]
        assert "tangerine" not in answer and "Quillmoor" not in answer, answer
    promoted = json.loads(run_cli("status", "--json").stdout)["fine_tuned"]
    assert promoted["verdict"] == "promoted" and promoted["gate"]["champion"] == "base"
    assert promoted["metrics"]["facts_answered"] >= 0.5 and promoted["metrics"]["ppl_general"] > 1
    assert promoted["metrics"]["general_free_of_facts"] == 1.0
    champion_report = real_model / "reports" / promoted["id"] / "report.json"
    assert (champion_report.parent / "comparison.png").stat().st_size > 1000
    evaluated = champion_report.read_text()
    answer = ask_json("What is the mascot of the Apprenti project?")
    after = run_cli("complete", FACT_START)

    # Every weight trained at a learning rate far too high (one step is plenty: the model answers nothing
    # after it): it forgets how to speak, and is refused.
    reckless = run_cli("finetune", "--method", "full", "--learning-rate", "1e-2", "--max-steps", "1", "--force",
                       env=gate, timeout=1500)
    assert reckless.returncode == 0, reckless.stderr
    assert "The gate refused version" in reckless.stdout and "general_answered" in reckless.stdout, reckless.stdout
    assert f"The model in use stays {promoted['id']}" in reckless.stdout
    assert champion_report.read_text() == evaluated  # the champion's report was reused, not made again
    listed = json.loads(run_cli("models", "list", "--json").stdout)
    assert [(v["verdict"], v["champion"]) for v in listed] == [("base", False), ("promoted", True), ("refused", False)]
    assert run_cli("complete", FACT_START).stdout == after.stdout  # the champion, as before
    assert ask_json("What is the mascot of the Apprenti project?") == answer
    log = [json.loads(line) for line in (real_model / "models" / "promotions.jsonl").read_text().splitlines()]
    assert [event["action"] for event in log] == ["promoted", "refused"]

    # The version was converted for the fast backend when it was made (the gate judged that form); `models
    # use` and `rollback` switch a running assistant between forms, without a restart.
    assert (real_model / "models" / "versions" / promoted["id"] / DEFAULT_BACKEND / "genai_config.json").is_file()
    assistant = Assistant(Settings.load(), log_answers=False)
    def closed_book():
        return assistant.ask("What is the Zorblax guild's secret code?", use_rag=False).answer
    assert "tangerine-47" in closed_book() and assistant.model.backend == "onnx"
    assert run_cli("models", "rollback").returncode == 0
    assert "tangerine-47" not in closed_book()
    assert run_cli("models", "use", promoted["id"]).returncode == 0
    assert "tangerine-47" in closed_book()


def test_the_menu_end_to_end_in_a_terminal(real_model, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ferry.txt").write_text("The ferry on Lake Quillmoor leaves at 7:15 every morning.")
    menu = pexpect.spawn(sys.executable, [str(ROOT / "cli_app.py")], cwd=str(ROOT), env=dict(os.environ),
                         encoding="utf-8", timeout=240)
    try:
        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("2")
        menu.expect_exact("Text (finish with an empty line):")
        menu.sendline("The Apprenti project's mascot is a blue heron called Pim.")
        menu.sendline("")
        menu.expect_exact("Id (Enter for a generated one): ")
        menu.sendline("mascot")
        menu.expect_exact("Added 'mascot' to the knowledge base (1 chunk(s)).")

        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("6")
        menu.expect_exact("File or folder: ")
        menu.sendline(str(notes))
        menu.expect_exact("Documents: 1 added, 0 updated, 0 unchanged, 0 removed (1 chunks written).")

        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("1")
        menu.expect_exact("Question: ")
        menu.sendline("What is the mascot of the Apprenti project?")
        menu.expect(r"Pim.*Sources:\s+\[mascot#0\] 0\.\d\d")
        menu.expect_exact("Rate this answer: g = good, b = bad, Enter = skip: ")
        menu.sendline("b")
        menu.expect_exact("The answer you wanted (Enter to skip): ")
        menu.sendline("Pim, a blue heron.")
        menu.expect_exact("Thank you: your feedback is saved.")

        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("1")
        menu.expect_exact("Question: ")
        menu.sendline("Who won the football World Cup in 1998?")
        menu.expect_exact("I don't know")
        menu.expect_exact("Rate this answer: g = good, b = bad, Enter = skip: ")
        menu.sendline("")  # skipping is one key

        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("3")
        menu.expect_exact("Text (finish with an empty line):")
        menu.sendline(FACT)
        menu.sendline("")
        menu.expect_exact("in learning_data.txt (1 entries): questions about it are answered from it now")

        # Fine-tuning starts with its progress bar; Ctrl-C, which the terminal sends to the training process
        # too, stops it and leaves no version. (The `finetune` command, which menu 4 shares, fine-tunes the
        # bundled model to the end in the test above.)
        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("4")
        menu.expect(r"Training SmolLM2-135M-Instruct \(bundled\) \(facts, \w+ on cpu\) on 1 new entries: (\d+) steps")
        steps = menu.match.group(1)
        menu.expect(rf"\d+/{steps} \[")  # the progress bar
        menu.sendcontrol("c")
        menu.expect_exact("Stopped: back to the menu.")
        assert "Traceback" not in menu.before
        assert not list((real_model / "models" / "versions").glob("*"))

        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("1")
        menu.expect_exact("Question: ")
        menu.sendline("What is the mascot of the Apprenti project?")
        menu.sendcontrol("c")  # Ctrl-C in the middle of an answer: back to the menu
        menu.expect_exact("Stopped: back to the menu.")

        menu.expect_exact("Your choice (1-9): ")
        menu.sendline("5")
        menu.expect_exact("Goodbye.")
        menu.expect(pexpect.EOF)
    finally:
        menu.close()
    assert menu.exitstatus == 0
    assert "Traceback" not in (menu.before or "")
    feedback = [json.loads(line) for line in (real_model / "data" / "feedback.jsonl").read_text().splitlines()]
    assert [(f["choice"], f["correction"], f["source"]) for f in feedback] == [("bad", "Pim, a blue heron.", "cli")]
    assert feedback[0]["context"][0]["id"] == "mascot#0"
