"""Feedback records and the preference datasets made from them."""
import json

import pytest

from common.config import Settings
from common.errors import ApprentiError
from conftest import at_once
from feedback.datasets import merge, split_of
from feedback.records import Feedback, append, delete, read


def rating(question, answer, choice, **fields):
    return Feedback(question=question, answers=[{"text": answer, "model": "m"}], choice=choice, source="cli",
                    **fields)


def comparison(question, first, second, choice, **fields):
    return Feedback(question=question, answers=[{"text": first, "model": "base"}, {"text": second, "model": "tuned"}],
                    choice=choice, source="ui", **fields)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_judgements_are_refused_with_every_problem_named():
    with pytest.raises(ApprentiError, match="the question is empty; choice 'meh'"):
        Feedback(question=" ", answers=[{"text": "a"}], choice="meh", source="cli")
    with pytest.raises(ApprentiError, match="'first' judges 2 answer"):
        Feedback(question="q", answers=[{"text": "a"}], choice="first", source="ui")
    with pytest.raises(ApprentiError, match="a good answer needs no correction"):
        rating("q", "a", "good", correction="better")


def test_entries_are_appended_fixed_and_deleted_without_rewriting_the_file(tmp_path):
    path = tmp_path / "data" / "feedback.jsonl"
    first, second = rating("q1", "a1", "good"), rating("q2", "a2", "bad")
    append(path, first)
    append(path, second)
    fixed = Feedback(**{**first.__dict__, "comment": "precise"})
    append(path, fixed)
    delete(path, second)
    assert len(path.read_text().splitlines()) == 4  # every change is a new line
    entries, problems = read(path)
    assert [(e.id, e.comment) for e in entries] == [(first.id, "precise")] and problems == []


def test_a_line_cut_by_a_crash_is_reported_and_the_next_append_starts_clean(tmp_path):
    path = tmp_path / "feedback.jsonl"
    append(path, rating("q1", "a1", "good"))
    with open(path, "a") as handle:
        handle.write('{"question": "half a li')  # a crash in the middle of a line
    append(path, rating("q2", "a2", "bad"))
    entries, problems = read(path)
    assert [e.question for e in entries] == ["q1", "q2"]
    assert len(problems) == 1 and problems[0].startswith("line 2:")


def append_many(path, worker):
    for n in range(50):
        append(path, rating(f"question {worker}-{n} " + "x" * 3000, "answer", "good"))


def test_appends_from_several_processes_at_once_stay_whole(tmp_path):
    path = tmp_path / "feedback.jsonl"
    at_once(append_many, [(path, w) for w in range(4)])
    entries, problems = read(path)
    assert problems == [] and len(entries) == 200


def test_merge_builds_pairs_with_the_sketch_fields_and_kto_rows(tmp_path):
    path = tmp_path / "feedback.jsonl"
    context = [{"id": "report#0", "text": "Le rapport indique une montée des tensions régionales en Asie."}]
    question = "Quels sont les risques géopolitiques mentionnés dans le rapport de 2023 ?"
    append(path, rating(question, "Les risques ne sont pas précisés.", "bad", context=context,
                        correction="La montée des tensions régionales en Asie.", comment="fidèle au texte"))
    append(path, comparison("Capital of France?", "Paris.", "Lyon.", "first", comment="A is right"))
    append(path, comparison("Capital of Spain?", "Rome.", "Lisbon.", "both_bad"))  # no pair
    append(path, comparison("Capital of Italy?", "Milan.", "Turin.", "both_bad", correction="Rome."))
    append(path, rating("What is 2+2?", "4", "good"))
    append(path, rating("what is  2+2?", "5", "bad"))  # same question, other answer: a pair
    append(path, rating("Who wrote Hamlet?", "Shakespeare", "good"))  # alone: KTO only
    with open(path, "a") as handle:
        handle.write("not json\n")
    report = merge(path, tmp_path / "dataset_rlhf.jsonl", tmp_path / "dataset_kto.jsonl")

    pairs = read_jsonl(tmp_path / "dataset_rlhf.jsonl")
    assert all(list(pair) == ["prompt", "chosen", "rejected", "annotator_comment", "timestamp", "question", "passages"]
               for pair in pairs)
    assert next(p for p in pairs if p["chosen"].startswith("La montée"))["passages"] == [context[0]["text"]]
    assert {(p["prompt"], p["chosen"], p["rejected"]) for p in pairs} == {
        (question + "\n\nContext:\n" + context[0]["text"], "La montée des tensions régionales en Asie.",
         "Les risques ne sont pas précisés."),
        ("Capital of France?", "Paris.", "Lyon."),
        ("Capital of Italy?", "Rome.", "Milan."), ("Capital of Italy?", "Rome.", "Turin."),
        ("What is 2+2?", "4", "5"),
    }
    assert next(p for p in pairs if p["chosen"] == "Paris.")["annotator_comment"] == "A is right"
    assert report.pairs == 5 and report.train + report.test == 5 and report.entries == 7
    assert report.broken_lines == ["line 8: not JSON (Expecting value)"]
    assert report.skipped == {"both answers bad, no correction": 1,
                              "a rating with no opposite rating of the same question (kept in the KTO form)": 1}
    kto = read_jsonl(tmp_path / "dataset_kto.jsonl")
    assert all(list(row) == ["prompt", "question", "passages", "completion", "label"] for row in kto)
    assert {"prompt": "Who wrote Hamlet?", "question": "Who wrote Hamlet?", "passages": [],
            "completion": "Shakespeare", "label": True} in kto
    assert {"prompt": "Capital of France?", "question": "Capital of France?", "passages": [], "completion": "Lyon.",
            "label": False} in kto
    split = read_jsonl(tmp_path / "dataset_rlhf_train.jsonl") + read_jsonl(tmp_path / "dataset_rlhf_test.jsonl")
    assert sorted(map(json.dumps, split)) == sorted(map(json.dumps, pairs))
    assert all(split_of(p) == "test" for p in read_jsonl(tmp_path / "dataset_rlhf_test.jsonl"))


def test_a_question_lands_on_one_side_of_the_split_whatever_its_passages():
    sides = {split_of({"prompt": f"Q{n}", "question": f"Question {n}?", "passages": []}) for n in range(200)}
    assert sides == {"train", "test"}  # both sides are used...
    for n in range(200):  # ...but one question, asked with any passages or spacing, is on one side only
        question = f"Question {n}?"
        asked = [{"prompt": f"{question}\n\nContext:\n{passage}", "question": spelled, "passages": [passage]}
                 for passage in ("a", "b", "c") for spelled in (question, f"  {question.lower()} ")]
        assert len({split_of(row) for row in asked}) == 1


def test_merging_twice_adds_nothing_and_leaves_the_feedback_untouched(tmp_path):
    path = tmp_path / "feedback.jsonl"
    append(path, comparison("Capital of France?", "Paris.", "Lyon.", "first"))
    append(path, comparison("Capital of France?", "Paris.", "Lyon.", "first"))  # the same judgement twice
    before = path.read_bytes()
    merge(path, tmp_path / "rlhf.jsonl", tmp_path / "kto.jsonl")
    first = (tmp_path / "rlhf.jsonl").read_bytes()
    report = merge(path, tmp_path / "rlhf.jsonl", tmp_path / "kto.jsonl")
    assert (tmp_path / "rlhf.jsonl").read_bytes() == first and report.pairs == 1
    assert path.read_bytes() == before


def test_the_command_line_records_feedback_and_merges_it(home, capsys, kb):
    from cli_app import main
    kb.add("Paris is the capital of France.", "paris")
    assert main(["feedback", "--question", "Capital of France?", "--answer", "Lyon", "--bad",
                 "--correction", "Paris", "--comment", "wrong city", "--context-id", "paris#0"]) == 0
    assert main(["feedback", "--question", "Capital of France?", "--answer", "Paris", "--good"]) == 0
    assert main(["feedback", "--question", "Q", "--answer", "A", "--good", "--context-id", "nope#0"]) == 1
    assert "the knowledge base has no chunk or document nope#0" in capsys.readouterr().err
    assert main(["feedback", "--question", "Q", "--answer", "A", "--good", "--correction", "B"]) == 1
    assert "a good answer needs no correction" in capsys.readouterr().err
    entries, _ = read(Settings.load().feedback_file)
    assert entries[0].context == [{"id": "paris#0", "text": "Paris is the capital of France."}]
    assert (entries[0].choice, entries[0].correction, entries[0].source) == ("bad", "Paris", "cli")
    assert main(["merge-feedback"]) == 0
    out = capsys.readouterr().out
    assert "2 feedback entries -> 2 preference pairs" in out
    assert len(read_jsonl(Settings.load().rlhf_dataset)) == 2


def test_context_ids_may_be_the_document_ids_the_user_chose(home, capsys, kb):
    from cli_app import main
    kb.add("Green tea is brewed at 80 degrees.\n\n" + "Black tea wants boiling water. " * 40, "tea-doc")
    kb.add("Paris is the capital of France.", "paris")
    assert main(["feedback", "--question", "How hot for green tea?", "--answer", "80 degrees", "--good",
                 "--context-id", "tea-doc", "paris#0"]) == 0
    entry = read(Settings.load().feedback_file)[0][0]
    chunks = kb.documents()["tea-doc"].chunks
    assert chunks > 1
    assert [c["id"] for c in entry.context] == [f"tea-doc#{i}" for i in range(chunks)] + ["paris#0"]
    assert entry.context[0]["text"].startswith("Green tea is brewed at 80 degrees.")


def test_a_follow_up_s_feedback_keeps_its_conversation_and_training_reads_it(tmp_path):
    from training.examples import preference_pair, prompt_turns
    path = tmp_path / "feedback.jsonl"
    history = [{"role": "user", "content": "What is the mascot of the project?"},
               {"role": "assistant", "content": "A blue heron called Pim."}]
    context = [{"id": "nest#0", "text": "Pim lives by Lake Quillmoor."}]
    for answer, choice in [("By Lake Quillmoor.", "good"), ("In Paris.", "bad")]:
        append(path, rating("Where does it live?", answer, choice, context=context, history=history))
    append(path, rating("Where does it live?", "Nowhere.", "bad"))  # asked alone: another prompt
    merge(path, tmp_path / "dataset_rlhf.jsonl", tmp_path / "dataset_kto.jsonl")
    [pair] = read_jsonl(tmp_path / "dataset_rlhf.jsonl")
    assert (pair["chosen"], pair["rejected"], pair["history"]) == ("By Lake Quillmoor.", "In Paris.", history)
    assert pair["prompt"].startswith("Conversation:\nuser: What is the mascot of the project?\nassistant: A blue")
    turns = prompt_turns(pair)
    assert turns[:2] == history and "Where does it live?" in turns[2]["content"]  # asked as the menu asked it
    assert preference_pair(pair)["prompt"] == turns
    with pytest.raises(ApprentiError, match="the history has a turn that is not"):
        rating("Where?", "Here.", "good", history=[{"role": "system", "content": "obey"}])
