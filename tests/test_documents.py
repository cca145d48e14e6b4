"""Reading files into documents and cutting them into chunks: every format, and every kind of bad file."""
import json

import pytest

from store.documents import CHUNK_CHARACTERS, SourceDocument, Unreadable, chunk_document, find_files, read_file


def write_pdf(path, pages: list[str]) -> None:
    from fpdf import FPDF
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
        else:
            pdf.rect(20, 20, 50, 50)  # a page with a drawing and no text, like a scan
    pdf.output(str(path))


def write_docx(path, paragraphs: list[str]) -> None:
    import docx
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    document.save(str(path))


def test_each_format_is_read_into_text(tmp_path):
    (tmp_path / "a.txt").write_text("Plain text.\n\nSecond paragraph.")
    (tmp_path / "b.md").write_text("# Title\n\nSome *markdown*.")
    (tmp_path / "c.html").write_bytes("<html><head><meta charset='latin-1'><style>p {}</style></head><body>"
                                      "<h1>Café</h1><script>var x = 1;</script><p>Une page.</p></body></html>"
                                      .encode("latin-1"))
    write_pdf(tmp_path / "d.pdf", ["First page text.", "Second page text."])
    write_docx(tmp_path / "e.docx", ["A Word paragraph.", "Another one."])
    texts = {path.name: read_file(path)[0][0] for path in find_files(tmp_path)}
    assert texts["a.txt"].pages == ["Plain text.\n\nSecond paragraph."]
    assert texts["b.md"].pages == ["# Title\n\nSome *markdown*."]
    assert texts["c.html"].pages == ["Café\nUne page."]  # its own charset, no script nor style
    assert [page.strip() for page in texts["d.pdf"].pages] == ["First page text.", "Second page text."]
    assert "A Word paragraph." in texts["e.docx"].pages[0] and "Another one." in texts["e.docx"].pages[0]
    for name, document in texts.items():
        assert document.doc_id == document.source == str(tmp_path / name) and len(document.hash) == 16


def test_a_folder_is_walked_recursively_in_a_stable_order_without_hidden_files(tmp_path):
    for name in ["b.txt", "a/z.md", "a/b/c.txt", ".hidden/x.txt", "a/.secret.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text")
    assert [p.relative_to(tmp_path).as_posix() for p in find_files(tmp_path)] == ["b.txt", "a/z.md", "a/b/c.txt"]
    assert list(find_files(tmp_path / "b.txt")) == [tmp_path / "b.txt"]


@pytest.mark.parametrize("name, content, reason", [
    ("empty.txt", b"", "the file is empty"),
    ("blank.md", b"  \n\n ", "the file is empty"),
    ("binary.txt", bytes(range(256)) * 4, "binary data, not text"),
    ("latin1.txt", "Un café à Noël".encode("latin-1"), "not UTF-8 text (bad byte at offset 6)"),
    ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "not a readable PDF"),
    ("broken.docx", b"PK not a zip", "not a readable .docx"),
    ("picture.png", b"\x89PNG\r\n", "unsupported file type '.png'"),
    ("all-bad.jsonl", b"{oops\n[1, 2]\n", "no usable line: line 1: not JSON"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(Unreadable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_file(tmp_path / name)


def test_a_pdf_without_text_says_so(tmp_path):
    write_pdf(tmp_path / "scan.pdf", ["", ""])
    with pytest.raises(Unreadable, match=r"no text in it \(a scanned PDF\? run OCR on it first\)"):
        read_file(tmp_path / "scan.pdf")


def test_jsonl_keeps_good_lines_and_reports_bad_ones_by_number(tmp_path):
    lines = [json.dumps({"id": "q1", "text": "Le chat dort.", "lang": "fr", "tags": ["a", "b"], "source": "x"}),
             "{broken",
             json.dumps({"text": "no id"}),
             json.dumps({"id": "q2", "text": "   "}),
             "",
             json.dumps({"id": 7, "text": "A numeric id."}),
             json.dumps({"id": "q1", "text": "Duplicate."}),
             json.dumps(["not", "an", "object"])]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    documents, problems = read_file(tmp_path / "records.jsonl")
    assert [(d.doc_id, d.pages) for d in documents] == [("q1", ["Le chat dort."]), ("7", ["A numeric id."])]
    assert documents[0].metadata == {"lang": "fr", "tags": '["a", "b"]', "meta_source": "x"}
    assert documents[0].source == str(tmp_path / "records.jsonl")
    assert problems == ["line 2: not JSON (Expecting property name enclosed in double quotes)",
                        'line 3: no "id"', "line 4: no \"text\" for id 'q2'",
                        "line 7: duplicate id 'q1' (first on line 1)", "line 8: not a JSON object"]


def test_chunks_respect_paragraphs_and_sentences_overlap_and_say_where_they_come_from():
    sentences = [f"Sentence number {i} says something about topic {i % 7}." for i in range(60)]
    paragraphs = [" ".join(sentences[i:i + 20]) for i in range(0, 60, 20)]  # each longer than a chunk
    text = "\n\n".join(paragraphs)
    chunks = chunk_document(SourceDocument.from_text(text, "doc", "notes.txt"), "2026-11-22T10:00:00")
    assert len(chunks) > 3 and [c.id for c in chunks] == [f"doc#{i}" for i in range(len(chunks))]
    for chunk in chunks:
        assert len(chunk.text) <= CHUNK_CHARACTERS
        assert chunk.text.endswith(".")  # never cut inside a sentence
        assert text[chunk.metadata["start"]:].startswith(chunk.text)
        assert chunk.metadata | {"start": 0, "hash": ""} == {
            "doc_id": "doc", "source": "notes.txt", "chunk": chunk.metadata["chunk"], "chunks": len(chunks),
            "start": 0, "hash": "", "doc_hash": SourceDocument.from_text(text, "doc", "x").hash, "language": "en",
            "ingested_at": "2026-11-22T10:00:00"}
    within_paragraph = [(a, b) for a, b in zip(chunks, chunks[1:])
                        if "\n\n" not in text[a.metadata["start"]:b.metadata["start"] + len(b.text)]]
    assert within_paragraph
    for previous, chunk in within_paragraph:  # they share a sentence or two: the overlap
        assert chunk.metadata["start"] < previous.metadata["start"] + len(previous.text)
    assert len({c.metadata["hash"] for c in chunks}) == len(chunks)


def test_a_pdf_chunk_knows_its_page(tmp_path):
    write_pdf(tmp_path / "book.pdf", ["Chapter one is short.", "Chapter two is short too."])
    document = read_file(tmp_path / "book.pdf")[0][0]
    chunks = chunk_document(document, "now")
    assert [(c.metadata["page"], c.text) for c in chunks] == [(1, "Chapter one is short."),
                                                             (2, "Chapter two is short too.")]


def test_french_documents_are_marked_french():
    chunks = chunk_document(SourceDocument.from_text("Le chat dort sur le canapé de la maison.", "fr", "t"), "now")
    assert chunks[0].metadata["language"] == "fr"
