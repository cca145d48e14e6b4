"""Documents as the user brings them (files, folders, JSONL records), read into text and cut into chunks.

Each reader returns `SourceDocument`s or raises `Unreadable` with a reason a person understands; nothing
here touches the store. The chunks keep where they come from: source, position, page and a content hash, and
for a file's documents the hash of the whole file's bytes, so that an ingest skips an unchanged file unparsed.

A folder is read with what lies in it: a symbolic link in it is followed only when it leads to a place inside
the folder (each file read once, by its real path); one that leads out of it, or nowhere, is skipped and said.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from common.jsonl import json_objects
from store.language import detect_language

CHUNK_CHARACTERS = 800  # about 200 word pieces: all-MiniLM-L6-v2 reads at most 256
CHUNK_OVERLAP = 100
# Paragraphs first, then lines, then sentences (in both languages' punctuation), then words.
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ": ", ", ", " ", ""]
MAX_FILE_BYTES = 200_000_000
MAX_ID_LENGTH = 500


# What every chunk's metadata holds; a JSONL record's own fields of these names get a "meta_" prefix.
RESERVED_KEYS = {"doc_id", "source", "chunk", "chunks", "start", "page", "hash", "doc_hash", "language",
                 "ingested_at", "file_hash", "file_records"}


class Unreadable(Exception):
    """A file (or a line of one) that cannot be ingested; the message says why."""


def content_hash(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


@dataclass
class SourceDocument:
    doc_id: str
    source: str  # the file's path, or the text's origin
    pages: list[str]  # one text for most formats, one per page for a PDF
    hash: str  # of the raw bytes or record: unchanged input means nothing to redo
    metadata: dict = field(default_factory=dict)  # a JSONL record's other fields
    file_hash: str = ""  # of the whole file's bytes ("" for a typed text): the same bytes need no parsing
    file_records: int = 0  # the documents the file holds, its bad lines included (see parse_file)

    @classmethod
    def from_text(cls, text: str, doc_id: str, source: str) -> "SourceDocument":
        return cls(doc_id, source, [text], content_hash(text))


@dataclass
class Chunk:
    id: str
    text: str
    metadata: dict


def chunk_id(doc_id: str, index: int) -> str:
    """Document `ID` is stored as chunks `ID#0`, `ID#1`, ..."""
    return f"{doc_id}#{index}"


def doc_id_of(chunk_id: str) -> str:
    return chunk_id.rsplit("#", 1)[0]


def chunk_document(document: SourceDocument, ingested_at: str) -> list[Chunk]:
    """The document's chunks, `doc_id#0`, `doc_id#1`..., each with metadata that says where it comes from."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_CHARACTERS, chunk_overlap=CHUNK_OVERLAP,
                                              separators=SEPARATORS, keep_separator="end", add_start_index=True)
    pieces = []  # (text, page, start)
    for page_number, page in enumerate(document.pages, 1):
        for piece in splitter.create_documents([page]):
            pieces.append((piece.page_content.strip(), page_number, piece.metadata["start_index"]))
    pieces = [piece for piece in pieces if piece[0]]
    language = detect_language(" ".join(page[:2000] for page in document.pages))
    chunks = []
    for index, (text, page_number, start) in enumerate(pieces):
        metadata = {**document.metadata, "doc_id": document.doc_id, "source": document.source, "chunk": index,
                    "chunks": len(pieces), "start": start, "hash": content_hash(text),
                    "doc_hash": document.hash, "language": language, "ingested_at": ingested_at}
        if len(document.pages) > 1:
            metadata["page"] = page_number
        if document.file_hash:
            metadata |= {"file_hash": document.file_hash, "file_records": document.file_records}
        chunks.append(Chunk(chunk_id(document.doc_id, index), text, metadata))
    return chunks


# ---------------------------------------------------------------- finding and reading files

LOOP = "a loop of symbolic links: it leads nowhere"


def real_path(path: Path) -> Path:
    """`path` absolute, every link on the way followed; Unreadable when it leads nowhere."""
    try:
        return path.resolve(strict=True)
    except RuntimeError:  # what Python 3.11's Path.resolve raises on a loop (3.13 raises OSError ELOOP)
        raise Unreadable(LOOP) from None
    except FileNotFoundError:
        raise Unreadable(f"a link to {os.path.realpath(path)}, which does not exist" if path.is_symlink()
                         else "no such file or folder") from None
    except OSError as error:
        raise Unreadable(LOOP if error.errno == errno.ELOOP else f"cannot reach it: {error.strerror}") from None


def find_files(path: Path, skipped: list[tuple[str, str]] | None = None) -> Iterator[Path]:
    """The file itself, or every file under the folder (hidden ones aside), in a stable order, each once and by
    its real path. `path` is a real path (see real_path). A link in the folder is followed only when it stays
    inside the folder; one that leads out of it, or nowhere, is skipped and added to `skipped` as (link, why)."""
    if not path.is_dir():
        yield path
        return
    yield from walk(path, path, {path}, [] if skipped is None else skipped)


def walk(folder: Path, root: Path, seen: set[Path], skipped: list[tuple[str, str]]) -> Iterator[Path]:
    """The files of `folder`, then those of its subfolders, depth first; `seen`: the real paths met already."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        skipped.append((str(folder), f"cannot read the folder: {error.strerror}"))
        return
    files, folders = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            try:
                path = link_target(path, root)
            except Unreadable as error:
                skipped.append((entry.path, str(error)))
                continue
            is_folder = path.is_dir()
        else:
            is_folder = entry.is_dir(follow_symlinks=False)
        if path not in seen:  # a link to a file or folder of the tree: read once, where the walk meets it first
            seen.add(path)
            (folders if is_folder else files).append(path)
    yield from files
    for subfolder in folders:
        yield from walk(subfolder, root, seen, skipped)


def link_target(link: Path, root: Path) -> Path:
    """Where a link in the folder `root` leads; Unreadable when that is outside `root`, or nowhere."""
    target = real_path(link)
    if target != root and root not in target.parents:
        raise Unreadable(f"a link to {target}, outside {root}: not followed")
    return target


def read_file(path: Path) -> tuple[list[SourceDocument], list[str]]:
    """The documents in one file and the problems met in it (a JSONL file can have both).
    Raises Unreadable when nothing of the file can be used."""
    data = read_bytes(path)
    return parse_file(path, data, content_hash(data))


def read_bytes(path: Path) -> bytes:
    """The bytes of a file of a supported type; Unreadable otherwise."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise Unreadable(f"unsupported file type '{suffix or path.name}' (supported: {', '.join(SUFFIXES)})")
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):  # reading a named pipe would wait forever
            raise Unreadable("not a regular file (a pipe, a socket or a device)")
        if status.st_size > MAX_FILE_BYTES:
            raise Unreadable(f"larger than {MAX_FILE_BYTES // 1_000_000} MB: split it first")
        data = path.read_bytes()
    except OSError as error:
        raise Unreadable(f"cannot read it: {error.strerror}") from None
    if not data.strip():
        raise Unreadable("the file is empty")
    return data


def parse_file(path: Path, data: bytes, file_hash: str) -> tuple[list[SourceDocument], list[str]]:
    """The documents in a file's bytes (`file_hash`: their content_hash) and the problems met in them.
    Raises Unreadable when nothing of the file can be used."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        documents, problems = read_jsonl(data, path)
    else:
        pages = READERS[suffix](data, path)
        if not any(page.strip() for page in pages):
            raise Unreadable("no text in it" + (" (a scanned PDF? run OCR on it first)" if suffix == ".pdf" else ""))
        documents, problems = [SourceDocument(str(path), str(path), pages, file_hash)], []
    for document in documents:
        # A bad line counts among the file's records: the store never holds all of them, so the file is never
        # taken as unchanged, and each ingest reads it again and says its problems again.
        document.file_hash, document.file_records = file_hash, len(documents) + len(problems)
    return documents, problems


def decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise Unreadable("binary data, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Unreadable(f"not UTF-8 text (bad byte at offset {error.start}): save it as UTF-8") from None


def read_text(data: bytes, path: Path) -> list[str]:
    return [decode_text(data)]


def read_html(data: bytes, path: Path) -> list[str]:
    from bs4 import BeautifulSoup
    if b"\x00" in data[:8192]:
        raise Unreadable("binary data, not HTML")
    soup = BeautifulSoup(data, "html.parser")  # reads the page's own charset declaration
    for hidden in soup(["script", "style", "noscript", "template"]):
        hidden.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return ["\n".join(line for line in lines if line)]


def read_pdf(data: bytes, path: Path) -> list[str]:
    import io
    import logging
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every oddity of real-world PDFs
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("the PDF is encrypted with a password")
        return [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as error:
        raise Unreadable(f"not a readable PDF ({type(error).__name__}: {error})") from None


def read_docx(data: bytes, path: Path) -> list[str]:
    import io
    import zipfile
    import docx2txt
    try:
        return [docx2txt.process(io.BytesIO(data))]
    except (zipfile.BadZipFile, KeyError) as error:
        raise Unreadable(f"not a readable .docx ({error})") from None


def read_jsonl(data: bytes, path: Path) -> tuple[list[SourceDocument], list[str]]:
    """One document per line: {"id": ..., "text": ..., other fields kept as metadata}. Bad lines are
    reported with their number; the good ones are kept."""
    text = decode_text(data)
    documents, problems, first_line = [], [], {}
    for number, line, record, problem in json_objects(text):
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        doc_id, body = record.pop("id", None), record.pop("text", None)
        if not isinstance(doc_id, (str, int)) or not str(doc_id).strip():
            problems.append(f"line {number}: no \"id\"")
            continue
        doc_id = str(doc_id).strip()
        if not isinstance(body, str) or not body.strip():
            problems.append(f"line {number}: no \"text\" for id '{doc_id}'")
            continue
        if len(doc_id) > MAX_ID_LENGTH:
            problems.append(f"line {number}: id longer than {MAX_ID_LENGTH} characters")
            continue
        if doc_id in first_line:
            problems.append(f"line {number}: duplicate id '{doc_id}' (first on line {first_line[doc_id]})")
            continue
        first_line[doc_id] = number
        metadata = {(f"meta_{key}" if key in RESERVED_KEYS else key):
                    value if isinstance(value, (str, int, float, bool)) else json.dumps(value, ensure_ascii=False)
                    for key, value in record.items() if value is not None}
        documents.append(SourceDocument(doc_id, str(path), [body], content_hash(line.strip()), metadata))
    if not documents:
        raise Unreadable("no usable line" + (f": {problems[0]}" if problems else ""))
    return documents, problems


READERS = {".txt": read_text, ".md": read_text, ".html": read_html, ".htm": read_html, ".pdf": read_pdf,
           ".docx": read_docx}
SUFFIXES = (*READERS, ".jsonl")
