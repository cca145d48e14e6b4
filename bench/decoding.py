"""Decoding candidates side by side, on the bundled model, through Apprenti's own answer path (README, "Decoding").

    .venv/bin/python bench/decoding.py [--backend onnx-int8] [--grounded before,none,...] [--closed-book ...]
                                                                                        (make bench runs it)

Each candidate is an inference.decoding.Decoding: every penalty counts the answer's own tokens only, but for
"before", the libraries' repetition penalty of 1.1 on prompt and answer, as Apprenti decoded until then.
Grounded answers (Assistant.grounded_decoding), with or without the check of the answer against its passages
(rag_module.grounding_note), judged on:
- invented: documents no model has seen (bench/invented_documents.jsonl, English and French), all in one
  knowledge base, each question asked as `ask` asks it (retrieval, prompt, answer): the share of answers that
  carry the fact (answer_contains), and of the French questions, the share answered in French with the fact;
- qa: the shipped QA set's answerable questions with their own passage: answer_contains and token F1.
Closed-book answers (Assistant.closed_book_decoding), judged on:
- general: questions the model may know (reference words matched), English and French;
- loops: the share of answers to general instructions (up to 256 tokens) that loop (a run of 4 words seen
  three times or more).
"""
import argparse
import json
import os
import re
import sys
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from inference.decoding import Decoding  # noqa: E402

INVENTED = ROOT / "bench" / "invented_documents.jsonl"
GENERAL = [
    "Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
    "Describe a walk in a forest in autumn.", "What are the benefits of drinking water?",
    "Give me some advice for learning a new language.", "Explain what a computer network is.",
    "Write a poem about the sea.", "Why is the sky blue?", "Describe the city of Paris.",
    "How do plants grow?", "Écris un petit poème sur la pluie.", "Explique comment fonctionne un moteur.",
]
# name: (decoding, whether the answer is checked against its passages: rag_module.grounding_note)
GROUNDED = {
    "before": (Decoding(repetition_penalty=1.1), False),  # on prompt and answer, as the libraries do (penalising_the_prompt)
    "none": (Decoding(), False),
    "penalty 1.1": (Decoding(repetition_penalty=1.1), False),
    "penalty 1.2": (Decoding(repetition_penalty=1.2), False),
    "no-repeat 3-grams": (Decoding(no_repeat_ngram_size=3), False),
    "no-repeat 4-grams": (Decoding(no_repeat_ngram_size=4), False),
    "copy bias 2 + penalty 1.1": (Decoding(copy_bias=2.0, repetition_penalty=1.1), False),
    "copy bias 2 + no-repeat 4-grams": (Decoding(copy_bias=2.0, no_repeat_ngram_size=4), False),
    "copy bias 4 + no-repeat 4-grams": (Decoding(copy_bias=4.0, no_repeat_ngram_size=4), False),
    "no-repeat 4-grams + check": (Decoding(no_repeat_ngram_size=4), True),
    "copy bias 2 + no-repeat 4-grams + check (chosen)": (Decoding(copy_bias=2.0, no_repeat_ngram_size=4), True),
}
CLOSED_BOOK = {
    "before": Decoding(repetition_penalty=1.1),
    "none": Decoding(),
    "no-repeat 4-grams": Decoding(no_repeat_ngram_size=4),
    "penalty 1.1": Decoding(repetition_penalty=1.1),
    "penalty 1.2": Decoding(repetition_penalty=1.2),
    "penalty 1.1 + no-repeat 4-grams (chosen)": Decoding(repetition_penalty=1.1, no_repeat_ngram_size=4),
}
KNOWN = [("What is the capital of France?", "paris"), ("Who wrote Romeo and Juliet?", "shakespeare"),
         ("What is the largest planet in the solar system?", "jupiter"),
         ("What is the chemical formula of water?", "h2o"), ("How many days are in a week?", "seven|7"),
         ("What is the boiling point of water in Celsius?", "100"), ("Who painted the Mona Lisa?", "vinci"),
         ("What is the capital of Japan?", "tokyo"), ("What language is spoken in Brazil?", "portuguese"),
         ("How many legs does a spider have?", "eight|8"), ("What planet is known as the Red Planet?", "mars"),
         ("What is the freezing point of water in Celsius?", r"\b0|zero"),
         ("Quelle est la capitale de l'Italie ?", "rome"), ("Qui a écrit Les Misérables ?", "hugo")]


def loops(answer: str, size: int = 4, times: int = 3) -> bool:
    words = answer.lower().split()
    grams = Counter(tuple(words[i:i + size]) for i in range(len(words) - size + 1))
    return bool(grams) and max(grams.values()) >= times


@contextmanager
def penalising_the_prompt(candidate: str):
    """For "before": the penalty counts the prompt's tokens as the answer's, as the libraries' own do."""
    import inference.decoding
    import inference.onnx_model
    import inference.transformers_model
    adjust = inference.decoding.adjust

    def whole_sequence(logits, prompt, answer, decoding):
        adjust(logits, prompt, prompt + answer, decoding)
    if candidate == "before":
        inference.transformers_model.adjust = inference.onnx_model.adjust = whole_sequence
    try:
        yield
    finally:
        inference.transformers_model.adjust = inference.onnx_model.adjust = adjust


def grounded(candidate: str, assistant, invented: list[dict], qa: list) -> dict:
    import rag_module
    from evaluation import metrics
    from store.hybrid_search import Passage
    from store.language import detect_language
    assistant.grounded_decoding, check = GROUNDED[candidate]
    grounding_note = rag_module.grounding_note
    if not check:
        rag_module.grounding_note = lambda question, answer, sources: ""
    started = time.perf_counter()
    carried, french, rows = [], [], []
    try:
        with penalising_the_prompt(candidate):
            for document in invented:
                answer = assistant.ask(document["question"]).answer
                right = bool(metrics.answer_contains(answer, [document["answer"]]))
                carried.append(right)
                if document["language"] == "fr":
                    french.append(right and detect_language(answer) == "fr")
                rows.append({"id": document["id"], "answer": answer, "right": right})
            qa_contains, qa_f1 = [], []
            for question in qa:
                source = Passage("qa#0", "qa", 1.0, question.context, "qa set")
                answer = assistant.ask(question.question, sources=[source]).answer
                qa_contains.append(metrics.answer_contains(answer, question.answers))
                qa_f1.append(metrics.token_f1(answer, question.answers))
    finally:
        rag_module.grounding_note = grounding_note
    return {"invented": f"{sum(carried)}/{len(carried)}", "french": f"{sum(french)}/{len(french)}",
            "qa_contains": sum(qa_contains) / len(qa_contains), "qa_f1": sum(qa_f1) / len(qa_f1),
            "seconds": round(time.perf_counter() - started, 1), "answers": rows}


def closed_book(candidate: str, assistant) -> dict:
    assistant.closed_book_decoding = CLOSED_BOOK[candidate]
    started = time.perf_counter()
    with penalising_the_prompt(candidate):
        known = [bool(re.search(pattern, assistant.ask(question, use_rag=False).answer.lower()))
                 for question, pattern in KNOWN]
        looped = [loops(assistant.ask(instruction, use_rag=False).answer) for instruction in GENERAL]
    return {"known": f"{sum(known)}/{len(known)}", "loops": f"{sum(looped)}/{len(looped)}",
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="onnx-int8", help="APPRENTI_BACKEND to answer with")
    parser.add_argument("--grounded", default=",".join(GROUNDED), help="comma-separated names ('' for none)")
    parser.add_argument("--closed-book", default=",".join(CLOSED_BOOK), help="comma-separated names ('' for none)")
    parser.add_argument("--answers", action="store_true", help="print every invented document's answer")
    arguments = parser.parse_args()
    # A data dir of the bench's own: its converted models are kept between runs, its knowledge base is not.
    home = ROOT / "bench" / ".cache" / "decoding"
    shutil.rmtree(home / "chroma_db_store", ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(APPRENTI_HOME=str(home), APPRENTI_BACKEND=arguments.backend, APPRENTI_GATE="false")
    from common.config import Settings
    from evaluation.qa_set import SHIPPED_QA, read_qa_set
    from knowledge_base import KnowledgeBase
    from rag_module import Assistant
    settings = Settings.load()
    invented = [json.loads(line) for line in INVENTED.read_text().splitlines() if line.strip()]
    kb = KnowledgeBase.open(settings)
    for document in invented:
        kb.add(document["text"], document["id"])
    qa = [question for question in read_qa_set(SHIPPED_QA)[0] if question.answerable and question.context]
    assistant = Assistant(settings, log_answers=False)
    print(f"backend {arguments.backend}, model {assistant.model.name}; {len(invented)} invented documents "
          f"({sum(d['language'] == 'fr' for d in invented)} French), {len(qa)} QA questions, {len(KNOWN)} general "
          f"questions, {len(GENERAL)} general instructions\n", flush=True)
    print("| grounded answers | invented: fact in answer | French: in French, with the fact | QA: answer contains | "
          "QA: F1 | s |\n| --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
    results = {}
    for name in filter(None, arguments.grounded.split(",")):
        result = results[name] = grounded(name, assistant, invented, qa)
        print(f"| {name} | {result['invented']} | {result['french']} | {result['qa_contains']:.3f} | "
              f"{result['qa_f1']:.3f} | {result['seconds']} |", flush=True)
    print("\n| closed-book answers | general questions right | instructions answered in a loop | s |\n"
          "| --- | ---: | ---: | ---: |", flush=True)
    for name in filter(None, arguments.closed_book.split(",")):
        result = closed_book(name, assistant)
        print(f"| {name} | {result['known']} | {result['loops']} | {result['seconds']} |", flush=True)
    if arguments.answers:
        for name, result in results.items():
            print(f"\n{name}:")
            for row in result["answers"]:
                print(f"  {'ok ' if row['right'] else 'NO '} {row['id']}: {' '.join(row['answer'].split())[:160]}")

if __name__ == "__main__":
    main()
