"""Evaluation: the metrics, the QA set's format, and a whole evaluation through the command line."""
import json

import pytest

from cli_app import main
from common.errors import ApprentiError
from evaluation import metrics
from evaluation.qa_set import SHIPPED_QA, read_qa_set

METRIC_KEYS = {"answer_f1", "exact_match", "rouge_l", "supported", "refusal_accuracy", "recall_at_k", "mrr",
               "ppl_learning", "ppl_general", "facts_recalled", "preference_accuracy"}


def test_answer_metrics_compare_normalized_words():
    assert metrics.exact_match("The Baronetage.", ["baronetage"]) == 1.0
    assert metrics.exact_match("Kellynch", ["Kellynch Hall"]) == 0.0
    assert metrics.token_f1("Kellynch", ["Kellynch Hall"]) == pytest.approx(2 / 3)
    assert metrics.token_f1("nothing alike", ["Kellynch Hall", "the hall"]) == 0.0
    assert metrics.rouge_l("the hall of Kellynch", ["Kellynch Hall"]) == pytest.approx(0.4)  # LCS 1 of 3 and 2
    assert metrics.rouge_l("Kellynch Hall in Somerset", ["Kellynch Hall"]) == pytest.approx(2 / 3)  # 2 of 4 and 2
    assert metrics.supported("Sir Walter reads", ["Sir Walter Elliot never reads a book"]) == 1.0
    assert metrics.supported("Sir Walter swims", ["Sir Walter reads"]) == pytest.approx(2 / 3)
    assert metrics.is_refusal("I don't know: nothing in the knowledge base answers this.")
    assert metrics.is_refusal("Je ne sais pas : rien") and not metrics.is_refusal("Paris, I know")


def test_ranking_metrics():
    assert metrics.reciprocal_rank(["a", "b", "c"], ["c"]) == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank(["a"], ["z"]) == 0.0
    assert metrics.recall_at(["a", "b", "c"], ["c"], 2) == 0.0 and metrics.recall_at(["a", "b", "c"], ["c"], 3) == 1.0


def test_a_qa_set_keeps_good_lines_and_names_bad_ones_by_number(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join([
        json.dumps({"question": "Who?", "answers": ["Anne"], "context": "Anne walked.", "doc_ids": ["a"]}),
        "{broken",
        json.dumps({"question": "", "answers": []}),
        json.dumps({"question": "Why?", "answers": "because"}),
        json.dumps({"question": "who?", "answers": ["Anne"]}),
        json.dumps({"question": "What is the capital of Australia?", "answers": []}),
    ]) + "\n")
    questions, problems = read_qa_set(path)
    assert [q.question for q in questions] == ["Who?", "What is the capital of Australia?"]
    assert [q.answerable for q in questions] == [True, False]
    assert [problem.split(":")[0] for problem in problems] == ["line 2", "line 3", "line 4", "line 5"]
    assert "the same question as line 1" in problems[-1]
    path.write_text("{broken\n")
    with pytest.raises(ApprentiError, match="no usable question .line 1: not JSON"):
        read_qa_set(path)


def test_the_shipped_qa_set_is_whole():
    questions, problems = read_qa_set(SHIPPED_QA)
    assert problems == [] and len(questions) >= 30
    assert sum(not q.answerable for q in questions) >= 5
    assert all(any(a.lower() in q.context.lower() for a in q.answers) for q in questions if q.answerable)


def test_evaluate_scores_answers_refusals_retrieval_and_perplexity(tiny_model, home, tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(row) for row in [
        {"question": "When does the ferry leave?", "answers": ["7:15"], "doc_ids": ["ferry"],
         "context": "The ferry on Lake Quillmoor leaves at 7:15 every morning."},
        {"question": "What colour is the heron?", "answers": ["blue"], "doc_ids": ["heron"],
         "context": "Pim the heron is blue and lives by the lake."},
        {"question": "Who won the 1998 football World Cup?", "answers": []},
    ]) + "\n{broken\n")
    assert main(["learn", "The secret code of the Zorblax guild is tangerine-47."]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--qa", str(qa), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["version"] == "base" and METRIC_KEYS <= set(result["metrics"])
    scores = result["metrics"]
    assert scores["refused_rightly"] == 1.0 and scores["answered_rightly"] == 1.0  # empty knowledge base: refused
    assert scores["refusal_accuracy"] == 1.0
    assert scores["recall_at_k"] == 1.0 and scores["mrr"] == 1.0  # two distinct passages, each found first
    assert 0 <= scores["answer_f1"] <= 1 and scores["ppl_general"] > 1 and scores["ppl_learning"] > 1
    assert scores["facts_recalled"] == 0.0 and scores["preference_accuracy"] is None
    assert "line 4: not JSON" in captured.err
    report = json.loads((home / "reports" / "base" / "report.json").read_text())
    assert report["metrics"] == scores and len(report["answers"]) == 3
    assert "| answer_f1 |" in (home / "reports" / "base" / "report.md").read_text()


def test_a_missing_qa_set_is_one_clear_message(home, tiny_model, capsys):
    assert main(["evaluate", "--qa", str(home / "nothing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "no QA set at" in err and "Traceback" not in err
