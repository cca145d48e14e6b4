"""The knowledge base: add a text, ingest files and folders, list, export and delete documents."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cli.inputs import read_block, read_text
from cli.progress import StageProgress
from cli.registry import command, option
from cli.texts import TEXTS
from common.config import Settings
from common.errors import DuplicateIdError


def open_knowledge_base(settings: Settings):
    from knowledge_base import KnowledgeBase
    return KnowledgeBase.open(settings)


def added(chunk_ids: list[str], texts: dict) -> None:
    from store.documents import doc_id_of
    print(texts["added"].format(id=doc_id_of(chunk_ids[0]), chunks=len(chunk_ids)))


def ingest_with_progress(knowledge_base, paths: list[str], prune: bool, texts: dict) -> bool:
    """Ingest with progress and print what happened; False when nothing could be read at all."""
    progress = StageProgress()
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


def menu_add(assistant, texts: dict) -> None:
    text = read_block(texts["text"])
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
    added(ids, texts)


def menu_ingest(assistant, texts: dict) -> None:
    path = input(texts["path"]).strip().strip("'\"")
    if not path:
        print(texts["empty"])
        return
    ingest_with_progress(assistant.knowledge_base, [path], prune=False, texts=texts)


@command("add", "add a text to the knowledge base",
         option("text", nargs="?", help="the text ('-' reads stdin)"),
         option("--file", help="read the text from this file"),
         option("--id", help="document id (default: generated)"),
         option("--replace", action="store_true", help="replace a document with the same id"))
def add(settings: Settings, arguments) -> int:
    text = read_text(arguments.text, arguments.file)
    source = str(Path(arguments.file).expanduser().resolve()) if arguments.file else "typed"
    added(open_knowledge_base(settings).add(text, arguments.id, replace=arguments.replace, source=source),
          TEXTS["en"])
    return 0


@command("ingest", "add files and folders (.txt .md .html .pdf .docx .jsonl); again: only what changed",
         option("paths", nargs="+", metavar="PATH", help="a file or a folder (read recursively)"),
         option("--prune", action="store_true", help="remove the documents whose files are gone"))
def ingest(settings: Settings, arguments) -> int:
    return 0 if ingest_with_progress(open_knowledge_base(settings), arguments.paths, arguments.prune,
                                     TEXTS["en"]) else 1


@command("list", "the knowledge base's documents")
def list_documents(settings: Settings, arguments) -> int:
    """The documents as a table: id, chunks, hash, date and source."""
    records = open_knowledge_base(settings).documents().values()
    width = min(max((len(record.doc_id) for record in records), default=2), 60)
    print(f"{'id':<{width}}  {'chunks':>6}  {'hash':<16}  {'ingested':<19}  source")
    for record in records:
        flag = "" if record.complete else "  (incomplete: ingest again)"
        print(f"{record.doc_id:<{width}}  {record.chunks:>6}  {record.hash:<16}  {record.ingested_at:<19}  "
              f"{record.source}{flag}")
    return 0


@command("export", "the knowledge base's documents as JSONL",
         option("--chunks", action="store_true", help="one line a chunk, with its text and metadata"))
def export(settings: Settings, arguments) -> int:
    """JSONL on stdout: one line a document (the pipeline's metadata.json), or one a chunk with its text."""
    kb = open_knowledge_base(settings)
    if arguments.chunks:
        for chunk_id, text, metadata in kb.chunks():
            print(json.dumps({"id": chunk_id, **metadata, "text": text}, ensure_ascii=False))
    else:
        for record in kb.documents().values():
            print(json.dumps(record.to_json(), ensure_ascii=False))
    return 0


@command("delete", "remove a document from the knowledge base", option("id", help="document id"))
def delete(settings: Settings, arguments) -> int:
    removed = open_knowledge_base(settings).delete(arguments.id)
    print(f"Deleted '{arguments.id}' ({removed} chunk(s)).")
    return 0


@command("reembed", "embed the knowledge base again with the embedding model in use (after changing it)")
def reembed(settings: Settings, arguments) -> int:
    """Every chunk embedded again, beside the store in use, which it replaces once whole: Ctrl-C or a crash leaves
    the store as it was, and running it again goes on from where it stopped."""
    progress = StageProgress()
    try:
        chunks = open_knowledge_base(settings).reembed(progress=progress)
    finally:
        progress.close()
    print(f"Embedded {chunks} chunk(s) again.")
    return 0
