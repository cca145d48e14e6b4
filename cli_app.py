"""Apprenti: a local assistant that answers from your knowledge base and learns from what you teach it.

Without a command, the menu. With one, the same actions for scripts:
  ask QUESTION        answer from the knowledge base, with its sources (--json, -k N, --no-rag)
  add TEXT            add knowledge (--id ID, --replace, --file PATH; TEXT '-' reads stdin)
  ingest PATH...      add files and folders (.txt .md .html .pdf .docx .jsonl); again: only what changed
  search QUERY        the ranked passages, without an answer (--json, -k N; QUERY '-': one query a line)
  learn TEXT          append learning data to learning_data.txt (--file PATH; TEXT '-' reads stdin)
  finetune            fine-tune the model on all learning data, then use it
  feedback            record a judgement of an answer (--question Q --answer A --good | --bad [--correction C])
  merge-feedback      build the preference datasets (data/dataset_rlhf.jsonl, data/dataset_kto.jsonl)
  ui                  serve the feedback page: compare two answers, fix past feedback (--port 8501)
  complete TEXT       the model's plain continuation of TEXT (what fine-tuning taught shows here)
  status              models, knowledge base and learning data
  list / export       the knowledge base's documents, as a table / as JSONL (--chunks: every chunk)
  delete ID           remove a document from the knowledge base
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from config import ApprentiError, DuplicateIdError, Settings

MAX_TEXT_BYTES = 20_000_000  # larger texts belong in files split by the user, not one entry

TEXTS = {
    "en": {
        "menu": ["Ask a question", "Add knowledge (ChromaDB)",
                 "Give learning data (learning_data.txt)",
                 "Update the model with the new data (fine-tuning)", "Quit",
                 "Add documents: a file or a folder (.txt .md .html .pdf .docx .jsonl)",
                 "Open the feedback page (compare answers in a browser)"],
        "choice": "Your choice (1-7): ",
        "bad_choice": "Please type a number from 1 to 7.",
        "path": "File or folder: ",
        "question": "Question: ",
        "empty": "Nothing typed: back to the menu.",
        "text": "Text (finish with an empty line):",
        "id": "Id (Enter for a generated one): ",
        "replace": "A document '{id}' exists already. Replace it? [y/N] ",
        "added": "Added '{id}' to the knowledge base ({chunks} chunk(s)).",
        "learned": "Saved in learning_data.txt ({entries} entries). Choose 4 to fine-tune on them.",
        "interrupted": "\nStopped: back to the menu.",
        "loading": "(loading the models, once...)",
        "sources": "Sources:",
        "no_sources": "(no passage of the knowledge base scored {threshold} or more)",
        "unchanged": "No new learning data since the last fine-tuning: nothing to do.",
        "finetuned": "Fine-tuned in {seconds:.0f} s: perplexity on the learning data {before:.2f} -> {after:.2f}.",
        "now_using": "Now using: {model}",
        "ingested": "Documents: {added} added, {updated} updated, {unchanged} unchanged, {removed} removed "
                    "({chunks} chunks written).",
        "skipped": "Skipped ({count}):",
        "gone": "{count} document(s) whose file is gone were kept: ingest again with --prune to remove them.",
        "page": "The feedback page is at http://{host}:{port} (Ctrl-C here stops it and returns to the menu).",
        "rate": "Rate this answer: g = good, b = bad, Enter = skip: ",
        "rate_keys": {"g": "good", "b": "bad"},
        "wanted": "The answer you wanted (Enter to skip): ",
        "thanks": "Thank you: your feedback is saved.",
        "bye": "Goodbye.",
    },
    "fr": {
        "menu": ["Poser une question", "Ajouter une connaissance (ChromaDB)",
                 "Fournir des données pour l'apprentissage (fichier learning_data.txt)",
                 "Mettre à jour le modèle avec les nouvelles données (fine-tuning)", "Quitter",
                 "Ajouter des documents : un fichier ou un dossier (.txt .md .html .pdf .docx .jsonl)",
                 "Ouvrir la page d'avis (comparer des réponses dans un navigateur)"],
        "choice": "Votre choix (1-7) : ",
        "bad_choice": "Tapez un nombre de 1 à 7.",
        "path": "Fichier ou dossier : ",
        "question": "Question : ",
        "empty": "Rien de saisi : retour au menu.",
        "text": "Texte (terminez par une ligne vide) :",
        "id": "Identifiant (Entrée pour en générer un) : ",
        "replace": "Un document '{id}' existe déjà. Le remplacer ? [o/N] ",
        "added": "'{id}' ajouté à la base de connaissances ({chunks} morceau(x)).",
        "learned": "Enregistré dans learning_data.txt ({entries} entrées). Choisissez 4 pour le fine-tuning.",
        "interrupted": "\nInterrompu : retour au menu.",
        "loading": "(chargement des modèles, une seule fois...)",
        "sources": "Sources :",
        "no_sources": "(aucun passage de la base n'atteint le score {threshold})",
        "unchanged": "Aucune nouvelle donnée d'apprentissage depuis le dernier fine-tuning : rien à faire.",
        "finetuned": "Fine-tuning fait en {seconds:.0f} s : perplexité sur les données {before:.2f} -> {after:.2f}.",
        "now_using": "Modèle utilisé : {model}",
        "ingested": "Documents : {added} ajouté(s), {updated} mis à jour, {unchanged} inchangé(s), "
                    "{removed} retiré(s) ({chunks} morceaux écrits).",
        "skipped": "Ignoré(s) ({count}) :",
        "gone": "{count} document(s) dont le fichier a disparu sont gardés : relancez avec --prune pour les retirer.",
        "page": "La page d'avis est à http://{host}:{port} (Ctrl-C ici l'arrête et revient au menu).",
        "rate": "Notez cette réponse : b = bonne, m = mauvaise, Entrée = passer : ",
        "rate_keys": {"b": "good", "m": "bad"},
        "wanted": "La réponse que vous attendiez (Entrée pour passer) : ",
        "thanks": "Merci : votre avis est enregistré.",
        "bye": "Au revoir.",
    },
}


def interface_language() -> str:
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(variable):
            return "fr" if os.environ[variable].lower().startswith("fr") else "en"
    return "en"


def read_text(text: str | None, path: str | None) -> str:
    """The text given on the command line, '-' for standard input, or a file's content."""
    if path is None and text == "-":
        return sys.stdin.read(MAX_TEXT_BYTES + 1)
    if path is None:
        return text or ""
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_TEXT_BYTES:
            raise ApprentiError(f"{file} is larger than {MAX_TEXT_BYTES // 1_000_000} MB: split it first")
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ApprentiError(f"{file} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
    except OSError as error:
        raise ApprentiError(f"cannot read {file}: {error.strerror}") from None


def check_size(text: str) -> str:
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise ApprentiError(f"the text is larger than {MAX_TEXT_BYTES // 1_000_000} MB: split it first")
    return text


def open_knowledge_base(settings: Settings):
    from knowledge_base import KnowledgeBase
    return KnowledgeBase.open(settings)


def print_sources(answer, texts: dict, threshold: float) -> None:
    if not answer.sources:
        print(texts["no_sources"].format(threshold=threshold))
        return
    print(texts["sources"])
    for source in answer.sources:
        excerpt = " ".join(source.text.split())
        print(f"  [{source.id}] {source.score:.2f}  {excerpt[:100]}{'...' if len(excerpt) > 100 else ''}")


def print_chunk(piece: str) -> None:
    print(piece, end="", flush=True)


class FineTuneProgress:
    """Renders the fine-tuning subprocess's events: a summary line, then a bar with loss and ETA."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm
        if event["event"] == "start":
            print(f"Fine-tuning {event['model']} ({event['method']}, {event['dtype']} on {event['device']}) "
                  f"on {event['entries']} entries: {event['steps']} steps.", flush=True)
            self.bar = tqdm(total=event["steps"], unit="step", dynamic_ncols=True)
        elif event["event"] == "step":
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.3f}", tok_s=f"{event['tokens_per_second']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fine_tune(assistant, config, texts: dict) -> None:
    from fine_tune_model import run_fine_tuning
    progress = FineTuneProgress()
    try:
        record = run_fine_tuning(assistant.settings, config, progress)
    finally:
        progress.close()
    if record is None:
        print(texts["unchanged"])
        return
    print(texts["finetuned"].format(seconds=record["seconds"], before=record["perplexity_before"],
                                    after=record["perplexity_after"]))
    assistant.reload_model()
    print(texts["now_using"].format(model=assistant.model.name))


class IngestProgress:
    """Two bars: files read, then chunks embedded and written (with the documents done), each with an ETA."""

    def __init__(self):
        self.bars = {}

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm
        stage = event["stage"]
        if stage not in self.bars:
            self.close()
            self.bars[stage] = tqdm(total=event["total"], desc=stage, unit="file" if stage == "reading" else "chunk",
                                    dynamic_ncols=True)
        bar = self.bars[stage]
        bar.update(event["done"] - bar.n)
        if "documents" in event:
            bar.set_postfix(documents=f"{event['documents']}/{event['documents_total']}")

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def ingest(knowledge_base, paths: list[str], prune: bool, texts: dict) -> bool:
    """Ingest with progress and print what happened; False when nothing could be read at all."""
    progress = IngestProgress()
    try:
        report = knowledge_base.ingest([Path(path) for path in paths], prune=prune, progress=progress)
    finally:
        progress.close()
    print(texts["ingested"].format(added=len(report.added), updated=len(report.updated), unchanged=report.unchanged,
                                   removed=len(report.removed), chunks=report.chunks))
    if report.gone:
        print(texts["gone"].format(count=len(report.gone)))
    if report.problems:
        print(texts["skipped"].format(count=len(report.problems)), file=sys.stderr)
        for path, reason in report.problems:
            print(f"  {path}: {reason}", file=sys.stderr)
    return bool(report.added or report.updated or report.unchanged or report.removed or not report.problems)


# ---------------------------------------------------------------- the menu

def read_block(prompt: str) -> str:
    """Lines up to an empty one (or the end of input), so that pasted paragraphs stay whole."""
    print(prompt)
    lines = []
    while True:
        try:
            line = input()
        except EOFError:
            break
        if not line.strip():
            break
        lines.append(line)
    return "\n".join(lines)


def menu_ask(assistant, texts: dict) -> None:
    question = input(texts["question"]).strip()
    if not question:
        print(texts["empty"])
        return
    if not assistant.model_loaded:
        print(texts["loading"], flush=True)
    answer = assistant.ask(check_size(question), on_text=print_chunk)
    print()
    print_sources(answer, texts, assistant.settings.relevance_threshold)
    if sys.stdin.isatty():  # a script piping the menu is never asked
        ask_rating(assistant.settings, question, answer, texts)


def ask_rating(settings: Settings, question: str, answer, texts: dict) -> None:
    """One key to rate (or skip); a bad answer may get the answer the user wanted."""
    from feedback import Feedback, append
    choice = texts["rate_keys"].get(input(texts["rate"]).strip().lower()[:1])
    if choice is None:
        return
    correction = input(texts["wanted"]).strip() if choice == "bad" else ""
    append(settings.feedback_file, Feedback(
        question=question, answers=[{"text": answer.answer, "model": answer.model}], choice=choice, source="cli",
        context=[{"id": source.id, "text": source.text} for source in answer.sources], correction=correction))
    print(texts["thanks"])


def menu_add(assistant, texts: dict) -> None:
    text = check_size(read_block(texts["text"]))
    if not text.strip():
        print(texts["empty"])
        return
    doc_id = input(texts["id"]).strip() or None
    try:
        ids = assistant.knowledge_base.add(text, doc_id)
    except DuplicateIdError:
        if not input(texts["replace"].format(id=doc_id)).strip().lower().startswith(("y", "o")):
            print(texts["empty"])
            return
        ids = assistant.knowledge_base.add(text, doc_id, replace=True)
    print(texts["added"].format(id=ids[0].rsplit("#", 1)[0], chunks=len(ids)))


def menu_learn(assistant, texts: dict) -> None:
    from fine_tune_model import append_entry, read_entries
    text = check_size(read_block(texts["text"]))
    if not text.strip():
        print(texts["empty"])
        return
    append_entry(assistant.settings.learning_data, text)
    print(texts["learned"].format(entries=len(read_entries(assistant.settings.learning_data))))


def menu_finetune(assistant, texts: dict) -> None:
    from fine_tune_model import FineTuneConfig
    fine_tune(assistant, FineTuneConfig(), texts)


def menu_ingest(assistant, texts: dict) -> None:
    path = input(texts["path"]).strip().strip("'\"")
    if not path:
        print(texts["empty"])
        return
    ingest(assistant.knowledge_base, [path], prune=False, texts=texts)


def menu_ui(assistant, texts: dict) -> None:
    serve_feedback_page(assistant.settings, "127.0.0.1", 8501, texts)


# 5 is Quit, where the first menu had it; later entries come after it.
MENU_ACTIONS = {"1": menu_ask, "2": menu_add, "3": menu_learn, "4": menu_finetune, "6": menu_ingest, "7": menu_ui}


def serve_feedback_page(settings: Settings, host: str, port: int, texts: dict) -> int:
    """Streamlit serving feedback_ui.py until Ctrl-C; the page reads the same data dir as this process."""
    import signal
    import subprocess
    command = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("feedback_ui.py")),
               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    print(texts["page"].format(host=host, port=port), flush=True)
    server = subprocess.Popen(command, env={**os.environ, "APPRENTI_HOME": str(settings.home),
                                            "APPRENTI_BASE_MODEL": settings.base_model})

    def stop(signal_number, frame):  # a terminated Apprenti takes its page down with it
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
        return 0


def run_menu(settings: Settings, arguments) -> int:
    from rag_module import Assistant
    texts = TEXTS[interface_language()]
    assistant = Assistant(settings)
    print(f"Apprenti · {status_line(settings)}")
    while True:
        print()
        for number, label in enumerate(texts["menu"], 1):
            print(f"{number}. {label}")
        try:
            choice = input(texts["choice"]).strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if choice == "5":
            print(texts["bye"])
            return 0
        if choice not in MENU_ACTIONS:
            print(texts["bad_choice"])
            continue
        try:
            MENU_ACTIONS[choice](assistant, texts)
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print(texts["interrupted"])
        except ApprentiError as error:
            print(f"error: {error}")


def status_line(settings: Settings) -> str:
    """Cheap enough for the menu's first screen: no model is loaded for it."""
    from fine_tune_model import read_entries
    from models import read_training_record
    record = read_training_record(settings.finetuned_dir) if settings.use_finetuned else None
    model = settings.base_model + (f" (fine-tuned {record['finished_at'][:10]} from {record['base_model']})"
                                   if record else "")
    try:
        entries = len(read_entries(settings.learning_data))
    except ApprentiError:
        entries = "unreadable"
    return f"model: {model} · learning data: {entries} entries · data dir: {settings.home}"


# ---------------------------------------------------------------- the subcommands

def command_ask(settings: Settings, arguments) -> int:
    from rag_module import Assistant
    assistant = Assistant(settings)
    question = check_size(read_text(arguments.question, None))
    if not question.strip():
        raise ApprentiError("the question is empty")
    answer = assistant.ask(question, k=arguments.k, use_rag=not arguments.no_rag,
                           on_text=lambda piece: None if arguments.json else print_chunk(piece))
    if arguments.json:
        print(json.dumps(answer.to_json(), ensure_ascii=False))
    else:
        print()
        if not arguments.no_rag:
            print_sources(answer, TEXTS["en"], settings.relevance_threshold)
    return 0


def command_add(settings: Settings, arguments) -> int:
    text = check_size(read_text(arguments.text, arguments.file))
    kb = open_knowledge_base(settings)
    source = str(Path(arguments.file).expanduser().resolve()) if arguments.file else "typed"
    ids = kb.add(text, arguments.id, replace=arguments.replace, source=source)
    print(TEXTS["en"]["added"].format(id=ids[0].rsplit("#", 1)[0], chunks=len(ids)))
    return 0


def command_ingest(settings: Settings, arguments) -> int:
    return 0 if ingest(open_knowledge_base(settings), arguments.paths, arguments.prune, TEXTS["en"]) else 1


def command_search(settings: Settings, arguments) -> int:
    """One query, or (QUERY '-') one query a line of stdin and one JSON array a line, the models loaded once."""
    k = arguments.k or settings.top_k
    if not arguments.query.strip():
        raise ApprentiError("the query is empty")
    kb = open_knowledge_base(settings)
    if arguments.query == "-":
        for line in sys.stdin:
            hits = kb.search(line.strip(), k, arguments.mode) if line.strip() else []
            print(json.dumps([asdict(hit) for hit in hits], ensure_ascii=False), flush=True)
        return 0
    hits = kb.search(check_size(arguments.query).strip(), k, arguments.mode)
    if arguments.json:
        print(json.dumps([asdict(hit) for hit in hits], ensure_ascii=False))
    for rank, hit in enumerate(hits if not arguments.json else [], 1):
        excerpt = " ".join(hit.text.split())
        print(f"{rank:>2}. {hit.score:.3f}  {hit.id}  ({hit.source})\n    {excerpt[:160]}"
              f"{'...' if len(excerpt) > 160 else ''}")
    if not hits and not arguments.json:
        print("The knowledge base is empty.")
    return 0


def command_learn(settings: Settings, arguments) -> int:
    from fine_tune_model import append_entry, read_entries
    append_entry(settings.learning_data, check_size(read_text(arguments.text, arguments.file)))
    print(TEXTS["en"]["learned"].format(entries=len(read_entries(settings.learning_data))))
    return 0


def command_finetune(settings: Settings, arguments) -> int:
    from fine_tune_model import FineTuneConfig
    from rag_module import Assistant
    fine_tune(Assistant(settings), FineTuneConfig.from_arguments(arguments), TEXTS["en"])
    return 0


def command_complete(settings: Settings, arguments) -> int:
    from rag_module import Assistant
    text = check_size(read_text(arguments.text, None))
    if not text.strip():
        raise ApprentiError("the text to complete is empty")
    Assistant(settings).complete(text, on_text=print_chunk)
    print()
    return 0


def command_feedback(settings: Settings, arguments) -> int:
    """Record a judgement of an answer, as the menu does after one."""
    from feedback import Feedback, append
    context = []
    if arguments.context_id:
        texts = open_knowledge_base(settings).texts(arguments.context_id)
        missing = [chunk_id for chunk_id in arguments.context_id if chunk_id not in texts]
        if missing:
            raise ApprentiError(f"the knowledge base has no chunk {', '.join(missing)}: give chunk ids as "
                                "`search` prints them")
        context = [{"id": chunk_id, "text": texts[chunk_id]} for chunk_id in arguments.context_id]
    entry = Feedback(question=arguments.question, answers=[{"text": arguments.answer, "model": arguments.answer_model}],
                     choice="good" if arguments.good else "bad", source="cli", context=context,
                     correction=arguments.correction or "", comment=arguments.comment or "")
    append(settings.feedback_file, entry)
    print(f"Feedback {entry.id} saved in {settings.feedback_file}.")
    return 0


def command_merge_feedback(settings: Settings, arguments) -> int:
    """Build the preference datasets from all the feedback (step 4 of the pipeline)."""
    from feedback import merge
    if not settings.feedback_file.exists():
        print(f"No feedback yet ({settings.feedback_file} does not exist): rate some answers first.")
        return 0
    report = merge(settings.feedback_file, settings.rlhf_dataset, settings.kto_dataset)
    for problem in report.broken_lines:
        print(f"{settings.feedback_file}: {problem}: skipped", file=sys.stderr)
    print(f"{report.entries} feedback entries -> {report.pairs} preference pairs ({report.train} train, "
          f"{report.test} test) in {settings.rlhf_dataset}; {report.kto} rows in {settings.kto_dataset}.")
    for reason, count in report.skipped.items():
        print(f"  skipped {count}: {reason}")
    return 0


def command_ui(settings: Settings, arguments) -> int:
    if arguments.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: the feedback page will be reachable from other machines ({arguments.host})", file=sys.stderr)
    return serve_feedback_page(settings, arguments.host, arguments.port, TEXTS["en"])


def command_status(settings: Settings, arguments) -> int:
    from fine_tune_model import read_entries
    from models import read_training_record
    kb = open_knowledge_base(settings)
    record = read_training_record(settings.finetuned_dir)
    status = {
        "data_dir": str(settings.home),
        "base_model": settings.base_model,
        "fine_tuned": record,
        "use_fine_tuned": settings.use_finetuned,
        "knowledge_base": {"documents": len(kb.documents()), "chunks": kb.count_chunks(),
                           "server": settings.chroma_url or None},
        "learning_data_entries": len(read_entries(settings.learning_data)),
        "relevance_threshold": settings.relevance_threshold,
    }
    if arguments.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"data dir:         {status['data_dir']}")
    print(f"base model:       {settings.base_model}")
    if record:
        print(f"fine-tuned model: {record['method']} from {record['base_model']}, {record['finished_at']}, "
              f"{record['steps']} steps on {record['entries']} entries, perplexity "
              f"{record['perplexity_before']:.2f} -> {record['perplexity_after']:.2f}"
              + ("" if settings.use_finetuned else " (not used: --base)"))
    else:
        print("fine-tuned model: none yet")
    print(f"knowledge base:   {status['knowledge_base']['documents']} documents, "
          f"{status['knowledge_base']['chunks']} chunks")
    print(f"learning data:    {status['learning_data_entries']} entries")
    return 0


def command_list(settings: Settings, arguments) -> int:
    """The documents as a table: id, chunks, hash, date and source."""
    records = open_knowledge_base(settings).documents().values()
    width = min(max((len(record.doc_id) for record in records), default=2), 60)
    print(f"{'id':<{width}}  {'chunks':>6}  {'hash':<16}  {'ingested':<19}  source")
    for record in records:
        flag = "" if record.complete else "  (incomplete: ingest again)"
        print(f"{record.doc_id:<{width}}  {record.chunks:>6}  {record.hash:<16}  {record.ingested_at:<19}  "
              f"{record.source}{flag}")
    return 0


def command_export(settings: Settings, arguments) -> int:
    """JSONL on stdout: one line a document (the pipeline's metadata.json), or one a chunk with its text."""
    kb = open_knowledge_base(settings)
    if arguments.chunks:
        for chunk_id, text, metadata in kb.chunks():
            print(json.dumps({"id": chunk_id, **metadata, "text": text}, ensure_ascii=False))
    else:
        for record in kb.documents().values():
            print(json.dumps(record.to_json(), ensure_ascii=False))
    return 0


def command_delete(settings: Settings, arguments) -> int:
    removed = open_knowledge_base(settings).delete(arguments.id)
    print(f"Deleted '{arguments.id}' ({removed} chunk(s)).")
    return 0


COMMANDS = {"ask": command_ask, "add": command_add, "ingest": command_ingest, "search": command_search,
            "learn": command_learn, "finetune": command_finetune, "complete": command_complete,
            "status": command_status, "list": command_list, "export": command_export, "delete": command_delete,
            "feedback": command_feedback, "merge-feedback": command_merge_feedback, "ui": command_ui}


def build_parser() -> argparse.ArgumentParser:
    from fine_tune_model import FineTuneConfig
    parser = argparse.ArgumentParser(prog="cli_app.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="base model, hub id or folder (env APPRENTI_BASE_MODEL; default TinyLlama)")
    parser.add_argument("--base", action="store_true", help="use the base model, not the fine-tuned one")
    parser.add_argument("--threshold", type=float, help="lowest relevance score of a passage (env "
                                                        "APPRENTI_RELEVANCE_THRESHOLD)")
    parser.add_argument("--home", help="data dir (env APPRENTI_HOME; default: this folder)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer a question from the knowledge base")
    ask.add_argument("question", help="the question ('-' reads stdin)")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("-k", type=int, default=None, help="passages to retrieve")
    ask.add_argument("--no-rag", action="store_true", help="ask the model alone: no retrieval, no refusal")

    add = commands.add_parser("add", help="add a text to the knowledge base")
    add.add_argument("text", nargs="?", help="the text ('-' reads stdin)")
    add.add_argument("--file", help="read the text from this file")
    add.add_argument("--id", help="document id (default: generated)")
    add.add_argument("--replace", action="store_true", help="replace a document with the same id")

    ingest = commands.add_parser("ingest", help="add files and folders to the knowledge base")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="a file or a folder (read recursively)")
    ingest.add_argument("--prune", action="store_true", help="remove the documents whose files are gone")

    search = commands.add_parser("search", help="the ranked passages for a query, without an answer")
    search.add_argument("query", help="the query ('-': one query a line on stdin, one JSON array a line out)")
    search.add_argument("-k", type=int, default=None, help="passages to return")
    search.add_argument("--json", action="store_true", help="print a JSON array")
    search.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid",
                        help="by meaning and words (default), by meaning only, by words only")

    learn = commands.add_parser("learn", help="append an entry to learning_data.txt")
    learn.add_argument("text", nargs="?", help="the entry ('-' reads stdin)")
    learn.add_argument("--file", help="read the entry from this file")

    FineTuneConfig.add_arguments(commands.add_parser("finetune", help="fine-tune on all learning data"))

    feedback = commands.add_parser("feedback", help="record a judgement of an answer")
    feedback.add_argument("--question", required=True)
    feedback.add_argument("--answer", required=True, help="the answer judged")
    verdict = feedback.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--good", action="store_true")
    verdict.add_argument("--bad", action="store_true")
    feedback.add_argument("--correction", help="the answer wanted (with --bad)")
    feedback.add_argument("--comment")
    feedback.add_argument("--context-id", nargs="+", metavar="ID", help="the chunks the answer came from")
    feedback.add_argument("--answer-model", help="the model that gave the answer")
    commands.add_parser("merge-feedback", help="build data/dataset_rlhf.jsonl and data/dataset_kto.jsonl")
    ui = commands.add_parser("ui", help="serve the feedback page (Streamlit)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ui.add_argument("--port", type=int, default=8501)

    complete = commands.add_parser("complete", help="the model's plain continuation of a text")
    complete.add_argument("text", help="the text ('-' reads stdin)")

    status = commands.add_parser("status", help="models, knowledge base and learning data")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    commands.add_parser("list", help="the knowledge base's documents")
    export = commands.add_parser("export", help="the knowledge base's documents as JSONL")
    export.add_argument("--chunks", action="store_true", help="one line a chunk, with its text and metadata")
    delete = commands.add_parser("delete", help="remove a document from the knowledge base")
    delete.add_argument("id", help="document id")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command in {"add", "learn"} and (arguments.text is None) == (arguments.file is None):
        print(f"error: {arguments.command} takes a TEXT or --file PATH (one of them)", file=sys.stderr)
        return 2
    if getattr(arguments, "k", None) is not None and arguments.k < 1:
        print("error: -k must be at least 1", file=sys.stderr)
        return 2
    settings = None
    try:
        settings = Settings.load(home=arguments.home, base_model=arguments.model,
                                 relevance_threshold=arguments.threshold,
                                 use_finetuned=False if arguments.base else None)
        return COMMANDS.get(arguments.command, run_menu)(settings, arguments)
    except ApprentiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped.", file=sys.stderr)
        return 130
    except Exception as error:  # a bug of ours: the whole story goes to the log, one line to the user
        log = settings.log_file if settings else Path("apprenti.log")
        with open(log, "a") as handle:
            handle.write(f"{datetime.now().isoformat()} {sys.argv}\n{traceback.format_exc()}\n")
        print(f"error: unexpected {type(error).__name__}: {error} (details in {log})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
