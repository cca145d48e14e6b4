import json

import pytest

from cli_app import main
from conftest import run_cli
from training.learning_data import read_entries


def test_learn_appends_entries_answers_them_at_once_and_forget_takes_them_back(home, capsys):
    from training.learning_data import entry_id
    assert main(["learn", "A multi-line entry\nstays whole."]) == 0
    assert f"Saved as {entry_id('A multi-line entry' + chr(10) + 'stays whole.')}" in capsys.readouterr().out
    assert main(["learn", "Another one."]) == 0
    assert "states no fact to teach" in capsys.readouterr().out  # two words: retrieval only
    assert main(["learn", "Another one."]) == 1
    assert "already entry 2" in capsys.readouterr().err
    assert read_entries(home / "learning_data.txt") == ["A multi-line entry\nstays whole.", "Another one."]
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["learning_data_entries"] == 2 and status["knowledge_base"]["documents"] == 2
    assert status["fine_tuned"] is None
    assert main(["search", "multi-line entry", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == "learning_data.txt"
    assert main(["learned"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:2] == ["1", entry_id("A multi-line entry\nstays whole.")]
    assert listed[1].split() == ["2", entry_id("Another one."), "Another", "one."]
    assert main(["forget", "1"]) == 0
    assert "Took back" in capsys.readouterr().out
    assert main(["forget", "1"]) == 0 and main(["forget", "1"]) == 1
    assert "no entry '1'" in capsys.readouterr().err
    assert read_entries(home / "learning_data.txt") == [] and main(["list"]) == 0
    assert "learning_data.txt" not in capsys.readouterr().out


def test_bad_input_gets_one_clear_message_and_no_traceback(home, tmp_path, capsys):
    bad_utf8 = tmp_path / "latin1.txt"
    bad_utf8.write_bytes(b"caf\xe9")
    cases = [
        (["learn", "   "], 1, "the entry is empty"),
        (["learn"], 2, "takes a TEXT or --file PATH"),
        (["add", "text", "--file", "x.txt"], 2, "takes a TEXT or --file PATH"),
        (["add", "--file", str(tmp_path / "missing.txt")], 1, "cannot read"),
        (["add", "--file", str(tmp_path)], 1, "cannot read"),
        (["learn", "--file", str(bad_utf8)], 1, "not UTF-8 text (byte 3)"),
        (["delete", "nothing"], 1, "no document 'nothing'"),
        (["--threshold", "5", "status"], 1, "relevance_threshold=5.0"),
    ]
    for arguments, code, message in cases:
        assert main(arguments) == code, arguments
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (arguments, err)


def test_add_list_duplicate_replace_and_delete(home, capsys):
    assert main(["add", "--id", "paris", "Paris is the capital of France."]) == 0
    assert main(["add", "--id", "paris", "Another text."]) == 1
    assert "already has a document 'paris'" in capsys.readouterr().err
    assert main(["add", "--id", "paris", "--replace", "Paris is in France."]) == 0
    capsys.readouterr()
    assert main(["list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "chunks", "hash", "ingested", "source"] and row.split()[:2] == ["paris", "1"]
    assert main(["delete", "paris"]) == 0 and "Deleted 'paris'" in capsys.readouterr().out


def test_ask_json_gives_answer_sources_and_model(tiny_model, capsys):
    main(["add", "--id", "paris", "Paris is the capital of France."])
    capsys.readouterr()
    assert main(["ask", "--json", "What is the capital of France?"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"answer", "refused", "model", "sources", "prompt_tokens", "completion_tokens",
                           "conversation"}
    assert answer["prompt_tokens"] > 10 and answer["completion_tokens"] > 0 and answer["conversation"] is None
    assert answer["refused"] is False and answer["model"] == str(tiny_model)
    assert [source["id"] for source in answer["sources"]] == ["paris#0"]
    assert main(["ask", "--json", "Who won the World Cup in 1998?"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "answer": "I don't know: nothing in the knowledge base answers this.", "refused": True, "model": None,
        "sources": [], "prompt_tokens": 0, "completion_tokens": 0, "conversation": None}


def test_ask_prints_the_streamed_answer_then_its_sources(tiny_model, capsys):
    main(["add", "--id", "paris", "Paris is the capital of France."])
    assert main(["ask", "-k", "1", "What is the capital of France?"]) == 0
    out = capsys.readouterr().out
    assert "Sources:\n  [paris#0] 0." in out and "Paris is the capital of France." in out


def test_the_menu_from_a_pipe_adds_learns_and_exits_at_end_of_input(tiny_model):
    result = run_cli(input="10\n\n2\nParis is the capital of France.\n\nparis\n3\nline one\nline two\n\n")
    assert result.returncode == 0, result.stderr
    assert "1. Ask a question" in result.stdout and "5. Quit" in result.stdout
    assert result.stdout.count("Please type a number from 1 to 9.") == 2
    assert "Added 'paris' to the knowledge base (1 chunk(s))." in result.stdout
    assert "in learning_data.txt (1 entries): questions about it are answered from it now" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_menu_speaks_french_in_a_french_locale(home):
    result = run_cli(input="5\n", env={"LANG": "fr_FR.UTF-8"})
    assert result.returncode == 0
    assert "1. Poser une question" in result.stdout and "5. Quitter" in result.stdout and "Au revoir." in result.stdout


@pytest.mark.parametrize("stdin", ["", "1\n", "2\nsome text"])
def test_end_of_input_anywhere_exits_cleanly(home, stdin):
    result = run_cli(input=stdin)
    assert result.returncode == 0 and "Traceback" not in result.stderr + result.stdout


def test_the_menu_shows_no_model_load_and_help_is_instant(home):
    result = run_cli("--help")
    assert result.returncode == 0 and "finetune" in result.stdout
    import subprocess
    import sys
    imported = subprocess.run([sys.executable, "-c", "import cli_app, sys; print(' '.join(sorted(sys.modules)))"],
                              capture_output=True, text=True, cwd=str(__import__("conftest").ROOT)).stdout.split()
    assert not {"torch", "transformers", "chromadb", "langchain_chroma", "peft"} & set(imported)


def test_status_says_what_the_model_in_use_was_trained_on_whatever_the_method():
    from cli.status import trained_on
    facts = {"training": {"steps": 38}, "data": {"learning_data": {"entries": 6, "sha256": "x"}},
             "metrics": {"facts_answered": 0.83, "general_answered": 0.95, "answer_contains": 0.5}}
    assert trained_on(facts) == ("38 steps on 6 entries; taught facts answered 83%, general questions answered "
                                 "95%, answers from passages right 50%")
    sft = {"training": {"steps": 48}, "data": {"instructions": {"rows": 120, "file": "train.jsonl"}}, "metrics": {}}
    assert trained_on(sft) == "48 steps on 120 instructions"
    dpo = {"training": {"steps": 20}, "data": {"pairs": {"rows": 30}, "test": {"rows": 4}},
           "metrics": {"answer_contains": None}}
    assert trained_on(dpo) == "20 steps on 30 pairs, 4 held-out rows"
