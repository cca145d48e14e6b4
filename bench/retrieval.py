"""Retrieval quality: dense alone, keyword alone, rank fusion (RRF) and our weighted fusion, on question sets
built from FAQs no one on the team wrote, installed from Debian packages:

  python-faq     the Python FAQ (python3-doc, PSF licence), English
  debian-faq-en  the Debian FAQ (debian-faq), English
  debian-faq-fr  the same FAQ in French (debian-faq-fr)

Each FAQ entry's answer is a document; its heading is the question and the answer its gold passage. One entry
in five (by hash) is left out of the store: its question has no answer there, which measures the relevance
threshold. The others are split in two halves by hash; the figures are two-fold cross-validated: each half
is ranked with the keyword weight that did best on the other half (per language).

    apt-get install python3-doc debian-faq debian-faq-fr    # once (make bench does it)
    .venv/bin/python bench/retrieval.py [--weights 0.1,0.2,...]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

PYTHON_FAQ = Path("/usr/share/doc/python3-doc/html/faq")
DEBIAN_FAQ = "/usr/share/doc/debian/FAQ/debian-faq.{language}.txt.gz"
PACKAGES = "python3-doc debian-faq debian-faq-fr"
RRF_K = 60  # the constant of reciprocal rank fusion's 1 / (k + rank), as in its paper


def debian_faq(language: str) -> list[tuple[str, str, str]]:
    """(id, question, answer) of every numbered section of the Debian FAQ's text version."""
    text = gzip.open(DEBIAN_FAQ.format(language=language), "rt", encoding="utf-8").read().replace("\xa0", " ")
    entries, heading, body, continuing = [], None, [], False
    for line in text.splitlines():
        numbered = re.match(r"^(\d+(?:\.\d+)+)\.\s+(\S.*)$", line)
        if numbered or re.match(r"^(Chapter|Chapitre|Appendix|Annexe) ", line):
            if heading:
                entries.append((f"debian-faq-{language}/{heading[0]}", heading[1], "\n".join(body).strip()))
            heading, body, continuing = (numbered.groups() if numbered else None), [], bool(numbered)
        elif heading and continuing and line.strip() and not line.startswith(" "):
            heading = (heading[0], f"{heading[1]} {line.strip()}")  # a heading wrapped on two lines
        else:
            continuing = False
            body.append(line)
    if heading:
        entries.append((f"debian-faq-{language}/{heading[0]}", heading[1], "\n".join(body).strip()))
    return entries


def python_faq() -> list[tuple[str, str, str]]:
    from bs4 import BeautifulSoup
    entries = []
    for page in sorted(PYTHON_FAQ.glob("*.html")):
        if page.name == "index.html":
            continue
        for section in BeautifulSoup(page.read_bytes(), "html.parser").find_all("section"):
            heading = section.find(["h2", "h3", "h4"], recursive=False)
            if heading is None or section.find("section"):
                continue
            question = heading.get_text(" ").replace("¶", "").strip()
            heading.decompose()
            entries.append((f"python-faq/{page.stem}/{section.get('id')}", question,
                            " ".join(section.get_text(" ").split())))
    return entries


def bucket(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10


def build_set(name: str, entries, home: Path):
    """The store of one set, and its questions: (question, gold doc id or None, 'dev'/'test'/'unanswerable')."""
    from common.config import Settings
    from knowledge_base import KnowledgeBase
    entries = [entry for entry in entries if len(entry[2]) > 80]
    corpus = home / f"{name}.jsonl"
    questions = []
    with open(corpus, "w") as out:
        for doc_id, question, answer in entries:
            part = bucket(doc_id)
            if part < 2:
                questions.append((question, None, "unanswerable"))
                continue
            questions.append((question, doc_id, "dev" if part < 6 else "test"))
            out.write(json.dumps({"id": doc_id, "text": answer}, ensure_ascii=False) + "\n")
    settings = Settings.load(home=home / name)
    kb = KnowledgeBase.open(settings)
    kb.ingest([corpus])
    return kb, questions


def rank_of(gold: str, hits) -> int | None:
    for rank, hit in enumerate(hits, 1):
        if hit.doc_id == gold:
            return rank
    return None


def metrics(ranks: list[int | None]) -> dict:
    n = len(ranks)
    return {"recall@1": sum(r == 1 for r in ranks if r) / n, "recall@4": sum(r <= 4 for r in ranks if r) / n,
            "mrr@10": sum(1 / r for r in ranks if r and r <= 10) / n}


def rrf(lists, k: int):
    """Plain reciprocal rank fusion of ranked hit lists: the fusion the issue warns about."""
    scores, hits = {}, {}
    for hit_list in lists:
        for rank, hit in enumerate(hit_list, 1):
            scores[hit.id] = scores.get(hit.id, 0) + 1 / (RRF_K + rank)
            hits[hit.id] = hit
    return [hits[i] for i in sorted(scores, key=lambda i: -scores[i])[:k]]


SETS = {"python-faq": "en", "debian-faq-en": "en", "debian-faq-fr": "fr"}


def missing_faqs() -> str:
    """What to install for the FAQs that are missing (bench/follow_up.py reads them too); empty if none is."""
    missing = [p for p in (PYTHON_FAQ, Path(DEBIAN_FAQ.format(language="en")), Path(DEBIAN_FAQ.format(language="fr")))
               if not p.exists()]
    return f"missing {', '.join(map(str, missing))}: apt-get install {PACKAGES}" if missing else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6",
                        help="keyword weights to try")
    arguments = parser.parse_args()
    if missing_faqs():
        print(missing_faqs(), file=sys.stderr)
        return 1
    from store.hybrid_search import KEYWORD_WEIGHTS
    weights = sorted({float(w) for w in arguments.weights.split(",")} | set(KEYWORD_WEIGHTS.values()))
    home = Path(tempfile.mkdtemp(prefix="apprenti-retrieval-"))
    entries = {"python-faq": python_faq(), "debian-faq-en": debian_faq("en"), "debian-faq-fr": debian_faq("fr")}
    runs = {}  # set -> one dict a question: part, and the gold's rank (or None) and top score of each method
    for name in SETS:
        started = time.perf_counter()
        kb, questions = build_set(name, entries[name], home)
        print(f"{name}: {sum(q[1] is not None for q in questions)} answers stored ({kb.count_chunks()} chunks), "
              f"{len(questions)} questions, built in {time.perf_counter() - started:.0f} s", flush=True)
        runs[name] = []
        for question, gold, part in questions:
            dense = kb.search(question, 30, mode="dense")
            keyword = kb.search(question, 30, mode="keyword")
            run = {"part": part, "dense": rank_of(gold, dense[:10]), "keyword": rank_of(gold, keyword[:10]),
                   "rrf": rank_of(gold, rrf([dense, keyword], 10)), "top dense": dense[0].score}
            for weight in weights:
                hits = kb.search(question, 10, mode="hybrid", keyword_weight=weight)
                run[weight] = rank_of(gold, hits)
                run[f"top {weight}"] = hits[0].score
            runs[name].append(run)

    def mean_mrr(language: str, part: str, weight: float) -> float:
        sets = [name for name, set_language in SETS.items() if set_language == language]
        return sum(metrics([run[weight] for run in runs[name] if run["part"] == part])["mrr@10"]
                   for name in sets) / len(sets)

    # Two-fold cross-validation: each half is ranked with the weight that did best on the other half.
    other = {"dev": "test", "test": "dev"}
    chosen = {(language, part): max(weights, key=lambda w: mean_mrr(language, other[part], w))
              for language in set(SETS.values()) for part in other}
    overall = {language: max(weights, key=lambda w: mean_mrr(language, "dev", w) + mean_mrr(language, "test", w))
               for language in set(SETS.values())}
    print(f"\nkeyword weight chosen on each half: {chosen}")
    print(f"chosen on all questions: {overall}; in use: {KEYWORD_WEIGHTS}")
    print("\nAnswerable questions, each half ranked with the weight chosen on the other half:")
    print(f"{'set':<14} {'questions':>9}  {'method':<24} {'recall@1':>8} {'recall@4':>8} {'MRR@10':>7}")
    for name, language in SETS.items():
        answerable = [run for run in runs[name] if run["part"] != "unanswerable"]
        rows = {"dense": [run["dense"] for run in answerable], "keyword": [run["keyword"] for run in answerable],
                "RRF (naive fusion)": [run["rrf"] for run in answerable],
                "hybrid (cross-validated)": [run[chosen[language, run["part"]]] for run in answerable],
                f"hybrid (in use, {KEYWORD_WEIGHTS[language]:g})": [run[KEYWORD_WEIGHTS[language]] for run in answerable]}
        for method, ranks in rows.items():
            m = metrics(ranks)
            print(f"{name:<14} {len(answerable):>9}  {method:<24} {m['recall@1']:>8.3f} {m['recall@4']:>8.3f} "
                  f"{m['mrr@10']:>7.3f}")
    print("\nMRR@10 by keyword weight (dev / test halves):")
    for name, language in SETS.items():
        print(f"  {name:<14} " + "  ".join(f"{w:g}: {mean_mrr_of(runs[name], 'dev', w):.3f}/"
                                             f"{mean_mrr_of(runs[name], 'test', w):.3f}" for w in weights))
    threshold_report(runs)
    return 0


def mean_mrr_of(runs, part: str, weight: float) -> float:
    return metrics([run[weight] for run in runs if run["part"] == part])["mrr@10"]


def threshold_report(runs) -> None:
    """How the relevance threshold in use sorts the questions: answerable ones should be answered, those
    whose answer is not stored refused. (FAQ entries overlap, so some of those have a near answer.)"""
    from common.config import DEFAULT_RELEVANCE_THRESHOLD as threshold
    from store.hybrid_search import KEYWORD_WEIGHTS
    answerable = [run[f"top {KEYWORD_WEIGHTS[SETS[name]]}"] for name in runs for run in runs[name]
                  if run["part"] != "unanswerable"]
    unanswerable = [run[f"top {KEYWORD_WEIGHTS[SETS[name]]}"] for name in runs for run in runs[name]
                    if run["part"] == "unanswerable"]
    print(f"\nRelevance threshold {threshold} on the fused top-1 score: answers "
          f"{sum(s >= threshold for s in answerable) / len(answerable):.1%} of the {len(answerable)} answerable "
          f"questions, refuses {sum(s < threshold for s in unanswerable) / len(unanswerable):.1%} of the "
          f"{len(unanswerable)} whose answer is not stored")


if __name__ == "__main__":
    raise SystemExit(main())
