"""Evaluation: the metrics, the QA set's format, and a whole evaluation through the command line."""
import json

import pytest

from cli_app import main
from common.config import Settings
from common.errors import ApprentiError
from evaluation import metrics
from evaluation.qa_set import SHIPPED_QA, read_qa_set
from rag_module import REFUSALS

METRIC_KEYS = {"answer_contains", "answer_f1", "exact_match", "rouge_l", "supported", "refusal_accuracy",
               "recall_at_k", "mrr", "ppl_learning", "ppl_general", "facts_recalled", "preference_accuracy"}


def test_answer_metrics_compare_normalized_words():
    assert metrics.exact_match("The Baronetage.", ["baronetage"]) == 1.0
    assert metrics.exact_match("Kellynch", ["Kellynch Hall"]) == 0.0
    assert metrics.token_f1("Kellynch", ["Kellynch Hall"]) == pytest.approx(2 / 3)
    assert metrics.token_f1("nothing alike", ["Kellynch Hall", "the hall"]) == 0.0
    assert metrics.rouge_l("the hall of Kellynch", ["Kellynch Hall"]) == pytest.approx(0.4)  # LCS 1 of 3 and 2
    assert metrics.rouge_l("Kellynch Hall in Somerset", ["Kellynch Hall"]) == pytest.approx(2 / 3)  # 2 of 4 and 2
    assert metrics.supported("Sir Walter reads", ["Sir Walter Elliot never reads a book"]) == 1.0
    assert metrics.supported("Sir Walter swims", ["Sir Walter reads"]) == pytest.approx(2 / 3)
    # Right whatever its length: the reference's whole words, in order, anywhere in the answer.
    assert metrics.answer_contains("Good question! He only read the Baronetage.", ["the Baronetage"]) == 1.0
    assert metrics.answer_contains("It leaves at 7:15 sharp", ["7.15", "7:15"]) == 1.0
    assert metrics.answer_contains("He was fifty-fourteen", ["fifty-four"]) == 0.0  # whole words only
    assert metrics.answer_contains("the Baronetages", ["Baronetage"]) == 0.0


def test_a_refusal_is_recognised_in_words_in_english_and_french_without_over_matching():
    refusals = [*REFUSALS.values(), "I do not know.", "I’m sorry, but I don't have that information.",
                "Good question! I don't know.", "The text does not mention the World Cup.",
                "I cannot answer this from the passages.", "There is no information about it here.",
                "Je ne peux pas répondre.", "Désolé, je ne trouve pas la réponse.",
                "Le texte ne dit pas qui a gagné."]
    answers = ["Paris, I know.", "The Baronetage.", "Anne did not go to Bath.", "No, Anne stayed at Kellynch.",
               "Sir Walter does not know the answer.", "He said: I don't know.", "Sorry is not a word he used.",
               "Il ne sait pas nager.", "Kellynch Hall. It is in Somerset. I don't know more.",
               "Good question! Sir Walter read the Baronetage."]
    assert [answer for answer in refusals if not metrics.is_refusal(answer)] == []
    assert [answer for answer in answers if metrics.is_refusal(answer)] == []


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


def test_evaluate_scores_answers_refusals_retrieval_and_perplexity(tiny_model, home, kb, tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(row) for row in [
        {"question": "When does the ferry leave?", "answers": ["7:15"], "doc_ids": ["ferry"],
         "context": "The ferry on Lake Quillmoor leaves at 7:15 every morning."},
        {"question": "What colour is the heron?", "answers": ["blue"], "doc_ids": ["heron"],
         "context": "Pim the heron is blue and lives by the lake."},
        {"question": "Who won the 1998 football World Cup?", "answers": []},
        # The passage does not answer: the tiny model is asked, and its babble is no refusal.
        {"question": "How old is the heron?", "answers": [], "context": "Pim the heron is blue."},
        # Answered and searched in the user's knowledge base, which holds the first and lacks the second.
        {"question": "What is the mascot of the Apprenti project?", "answers": ["Pim"], "doc_ids": ["mascot"]},
        {"question": "What does the Apprenti mascot eat?", "answers": ["fish"], "doc_ids": ["diet"]},
    ]) + "\n{broken\n")
    assert main(["learn", "The secret code of the Zorblax guild is tangerine-47."]) == 0
    kb.add("The Apprenti project's mascot is a blue heron called Pim.", "mascot")
    capsys.readouterr()
    assert main(["evaluate", "--qa", str(qa), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["version"] == "base" and METRIC_KEYS <= set(result["metrics"])
    report = json.loads((home / "reports" / "base" / "report.json").read_text())
    assert [(row["refused"], row["answer"] == REFUSALS["en"]) for row in report["answers"]] == [
        (False, False), (False, False), (True, True), (False, False), (False, False), (False, False)]
    scores = result["metrics"]
    assert scores["answered_rightly"] == 1.0 and scores["refused_rightly"] == 0.5
    assert scores["refusal_accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    # Each gold document found first, but for the one the knowledge base lacks.
    assert scores["recall_at_k"] == 0.75 and scores["mrr"] == 0.75
    assert scores["answer_contains"] == 0.0 and scores["exact_match"] == 0.0  # a random model's babble
    assert scores["ppl_general"] > 1 and scores["ppl_learning"] > 1
    assert scores["facts_recalled"] == 0.0 and scores["preference_accuracy"] is None
    assert "line 7: not JSON" in captured.err
    assert report["metrics"] == scores and len(report["answers"]) == 6
    assert "| answer_contains |" in (home / "reports" / "base" / "report.md").read_text()


def test_an_empty_knowledge_base_refuses_and_finds_nothing_without_the_model(home, tmp_path):
    from evaluation.evaluate import answer_scores, retrieval_scores, score_question
    from rag_module import Assistant
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Where does Pim live?", "answers": ["by the lake"], "doc_ids": ["pim"]})
                  + "\n" + json.dumps({"question": "Who won the 1998 World Cup?", "answers": []}) + "\n")
    questions, _ = read_qa_set(qa)
    assistant = Assistant(Settings.load(), log_answers=False)
    rows = [score_question(assistant, question) for question in questions]
    assert [row["refused"] for row in rows] == [True, True] and not assistant.model_loaded
    scores = answer_scores(rows)
    assert scores["refused_rightly"] == 1.0 and scores["answered_rightly"] == 0.0
    assert scores["answer_contains"] == 0.0 and scores["answer_f1"] == 0.0
    assert retrieval_scores(questions, 4, assistant.knowledge_base) == {"recall_at_k": 0.0, "mrr": 0.0}


def test_the_champions_report_is_not_reused_once_the_knowledge_base_changed(home, kb, tmp_path):
    from evaluation.evaluate import evaluation_inputs
    from evaluation.gate import reusable_report
    settings = Settings.load()
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Who?", "answers": []}) + "\n")
    kb.add("Pim the heron lives by the lake.", "pim")
    inputs = evaluation_inputs(settings, qa, kb)
    (settings.reports_dir / "base").mkdir(parents=True)
    (settings.reports_dir / "base" / "report.json").write_text(json.dumps({"metrics": {}, "inputs": inputs}))
    assert reusable_report(settings, "base", evaluation_inputs(settings, qa, kb))["inputs"] == inputs
    kb.add("Pim the heron eats fish.", "pim", replace=True)
    assert reusable_report(settings, "base", evaluation_inputs(settings, qa, kb)) is None


def test_a_missing_qa_set_is_one_clear_message(home, tiny_model, capsys):
    assert main(["evaluate", "--qa", str(home / "nothing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "no QA set at" in err and "Traceback" not in err
