"""Corpora in the knowledge base: incremental ingest, hybrid search, the keyword index kept in step, a Chroma
server, and the store unharmed by interruptions, bad input and a read-only disk."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from common.config import Settings
from conftest import ROOT, free_port, run_cli, wait_for_port
from knowledge_base import KnowledgeBase


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "cuisine").mkdir(parents=True)
    (folder / "tea.md").write_text("# Tea\n\nGreen tea is brewed at 80 degrees Celsius for two minutes.")
    (folder / "cuisine" / "crepes.txt").write_text("Pour la pâte à crêpes, mélangez la farine, les œufs et le lait. "
                                                  "Laissez reposer la pâte une heure avant la cuisson.")
    (folder / "errors.txt").write_text("Error XK-4471 means the printer's fuser is too cold. Wait ten minutes.")
    (folder / "faq.jsonl").write_text(
        json.dumps({"id": "faq-backup", "text": "Backups run every night at 2 am.", "team": "ops"}) + "\n" +
        json.dumps({"id": "faq-vpn", "text": "The VPN needs the Apprenti client version 3."}) + "\n")
    return folder


def test_a_folder_goes_in_and_a_second_run_changes_nothing(kb, corpus):
    report = kb.ingest([corpus])
    assert sorted(report.added) == sorted([str(corpus / "tea.md"), str(corpus / "cuisine" / "crepes.txt"),
                                           str(corpus / "errors.txt"), "faq-backup", "faq-vpn"])
    assert report.problems == [] and report.chunks == 5
    records = kb.documents()
    assert records["faq-vpn"].source == str(corpus / "faq.jsonl") and records["faq-vpn"].complete
    again = kb.ingest([corpus])
    assert again.unchanged == 5 and not again.added and not again.updated and again.chunks == 0
    assert kb.documents() == records  # same hashes, same dates: nothing was rewritten


def test_changed_files_are_reindexed_and_deleted_ones_pruned_on_request(kb, corpus):
    kb.ingest([corpus])
    (corpus / "tea.md").write_text("# Tea\n\nBlack tea is brewed at 95 degrees Celsius.")
    (corpus / "errors.txt").unlink()
    (corpus / "faq.jsonl").write_text(json.dumps({"id": "faq-vpn", "text": "The VPN needs client version 4."}) + "\n")
    report = kb.ingest([corpus])
    assert sorted(report.updated) == sorted([str(corpus / "tea.md"), "faq-vpn"]) and report.unchanged == 1
    assert sorted(report.gone) == sorted([str(corpus / "errors.txt"), "faq-backup"]) and report.removed == []
    assert str(corpus / "errors.txt") in kb.documents()  # kept without --prune
    report = kb.ingest([corpus], prune=True)
    assert sorted(report.removed) == sorted([str(corpus / "errors.txt"), "faq-backup"])
    assert sorted(kb.documents()) == sorted([str(corpus / "tea.md"), str(corpus / "cuisine" / "crepes.txt"),
                                             "faq-vpn"])
    assert kb.search("black tea temperature", 1)[0].text.endswith("95 degrees Celsius.")
    assert {doc_id: count for doc_id, (_, count) in kb.keywords.documents().items()} == \
        {doc_id: record.chunks for doc_id, record in kb.documents().items()}


def test_pruning_one_folder_leaves_other_folders_alone(kb, corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.txt").write_text("A note elsewhere.")
    kb.ingest([corpus, other])
    (corpus / "tea.md").unlink()
    report = kb.ingest([corpus / "cuisine"], prune=True)
    assert report.removed == [] and str(corpus / "tea.md") in kb.documents()


def test_an_id_used_by_another_source_is_not_overwritten(kb, corpus, tmp_path):
    kb.ingest([corpus])
    (tmp_path / "more.jsonl").write_text(json.dumps({"id": "faq-vpn", "text": "Something else."}) + "\n")
    report = kb.ingest([tmp_path / "more.jsonl"])
    assert report.problems == [(str(tmp_path / "more.jsonl"), f"id 'faq-vpn' is already used by {corpus / 'faq.jsonl'}")]
    assert "version 3" in kb.search("VPN client version", 1)[0].text


def test_keyword_search_finds_exact_codes_and_french_word_forms(kb, corpus):
    kb.ingest([corpus])
    assert kb.search("XK-4471", 1, mode="keyword")[0].doc_id == str(corpus / "errors.txt")
    # "reposer"/"repose", "pâtes"/"pâte": French stemming; accents and case do not matter either
    hits = kb.search("combien de temps faut-il laisser REPOSER les pates ?", 2, mode="keyword")
    assert [hit.doc_id for hit in hits] == [str(corpus / "cuisine" / "crepes.txt")]  # no other has these words
    hybrid = kb.search("combien de temps faut-il laisser reposer les pâtes ?", 1)
    assert hybrid[0].doc_id == str(corpus / "cuisine" / "crepes.txt")


def test_hybrid_scores_fuse_both_and_stay_comparable_to_a_threshold(kb, corpus):
    kb.ingest([corpus])
    question = "What does error XK-4471 mean?"
    dense, keyword, hybrid = (kb.search(question, 5, mode=mode) for mode in ("dense", "keyword", "hybrid"))
    assert hybrid[0].doc_id == str(corpus / "errors.txt")
    top_dense = next(h.score for h in dense if h.doc_id == hybrid[0].doc_id)
    top_keyword = next(h.score for h in keyword if h.doc_id == hybrid[0].doc_id)
    assert hybrid[0].score == pytest.approx(0.75 * top_dense + 0.25 * top_keyword, abs=1e-3)
    unrelated = kb.search("Who painted the Mona Lisa?", 1)[0]
    assert unrelated.score < Settings.load().relevance_threshold < hybrid[0].score


def test_a_lost_keyword_index_is_rebuilt_from_the_store(home, embeddings, corpus, capsys):
    KnowledgeBase(home / "chroma_db_store", embeddings).ingest([corpus])
    (home / "chroma_db_store" / "keywords.sqlite3").unlink()
    reopened = KnowledgeBase(home / "chroma_db_store", embeddings)
    assert reopened.search("XK-4471", 1, mode="keyword")[0].doc_id == str(corpus / "errors.txt")
    assert "rebuilding it (5 chunks)" in capsys.readouterr().err
    assert reopened.keywords.count() == 5


# ---------------------------------------------------------------- the command line, as scripts use it

def test_waiting_for_another_writer_is_said_on_stderr_so_json_output_stays_json(home, embeddings, corpus):
    """A search that must rebuild the keyword index waits for the write lock another process holds."""
    from common.files import file_lock
    KnowledgeBase(home / "chroma_db_store", embeddings).ingest([corpus])
    (home / "chroma_db_store" / "keywords.sqlite3").unlink()
    with file_lock(home / "chroma_db_store" / ".write.lock"):
        search = subprocess.Popen([sys.executable, str(ROOT / "cli_app.py"), "search", "--json", "XK-4471"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        said = []

        def read_until_waiting():
            for line in search.stderr:
                said.append(line)
                if "waiting" in line:
                    return

        reader = threading.Thread(target=read_until_waiting, daemon=True)
        reader.start()
        reader.join(timeout=120)
    out, err = search.communicate(timeout=120)
    assert search.returncode == 0, err
    assert json.loads(out)[0]["doc_id"] == str(corpus / "errors.txt")
    assert "waiting for another Apprenti process" in "".join(said)


def test_ingest_search_list_and_export_from_the_command_line(corpus, tmp_path):
    (corpus / "broken.jsonl").write_text('{"id": "ok", "text": "A good line."}\n{not json\n')
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    result = run_cli("ingest", str(corpus), str(tmp_path / "missing"))
    assert result.returncode == 0, result.stderr
    assert "Documents: 6 added, 0 updated, 0 unchanged, 0 removed (6 chunks written)." in result.stdout
    assert f"{corpus / 'broken.jsonl'}: line 2: not JSON" in result.stderr
    assert f"{corpus / 'binary.txt'}: binary data, not text" in result.stderr
    assert f"{tmp_path / 'missing'}: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr and "chunk/s" in result.stderr  # the progress bar

    hits = json.loads(run_cli("search", "--json", "-k", "2", "When do backups run?").stdout)
    assert hits[0] == {"id": "faq-backup#0", "doc_id": "faq-backup", "score": hits[0]["score"],
                       "text": "Backups run every night at 2 am.", "source": str(corpus / "faq.jsonl")}
    assert len(hits) == 2 and hits[0]["score"] > hits[1]["score"]

    lines = run_cli("search", "-", input="green tea temperature\n\nerror XK-4471\n").stdout.splitlines()
    assert [json.loads(line)[0]["doc_id"] if json.loads(line) else None for line in lines] == [
        str(corpus / "tea.md"), None, str(corpus / "errors.txt")]

    table = run_cli("list").stdout.splitlines()
    assert table[0].split() == ["id", "chunks", "hash", "ingested", "source"] and len(table) == 7
    exported = [json.loads(line) for line in run_cli("export").stdout.splitlines()]
    assert {record["doc_id"] for record in exported} >= {"faq-backup", "ok", str(corpus / "tea.md")}
    assert set(exported[0]) == {"doc_id", "source", "chunks", "hash", "ingested_at"}
    chunks = [json.loads(line) for line in run_cli("export", "--chunks").stdout.splitlines()]
    assert len(chunks) == 6 and chunks[0]["text"] and chunks[0]["hash"] and chunks[0]["start"] == 0
    assert next(c for c in chunks if c["doc_id"] == "faq-backup")["team"] == "ops"


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = run_cli("ingest", str(tmp_path))
    assert result.returncode == 1 and f"{tmp_path / 'empty.txt'}: the file is empty" in result.stderr
    assert run_cli("search", "").returncode == 1


def snapshot(home) -> list:
    """What the store holds, dates aside: every chunk's id, text and metadata."""
    result = run_cli("export", "--chunks", env={"APPRENTI_HOME": str(home)})
    return sorted((c["id"], c["text"], c["hash"], c["doc_hash"], c["chunks"]) for c in map(json.loads, result.stdout.splitlines()))


def big_corpus(folder, files=60):
    folder.mkdir()
    for n in range(files):
        paragraphs = [f"Document {n}, part {p}: " + " ".join(f"Fact {n}.{p}.{s} about subject {s * n % 13}."
                                                            for s in range(14)) for p in range(3)]
        (folder / f"doc{n:03}.txt").write_text("\n\n".join(paragraphs))
    return folder


def test_ctrl_c_in_the_middle_of_an_ingest_then_again_gives_the_same_store_as_one_clean_run(tmp_path, embeddings):
    corpus = big_corpus(tmp_path / "big", files=100)  # 300 chunks: written in groups of 128
    clean = tmp_path / "clean"
    KnowledgeBase(clean / "chroma_db_store", embeddings).ingest([corpus])

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, str(ROOT / "cli_app.py"), "ingest", str(corpus)], cwd=ROOT,
                               env={**os.environ, "APPRENTI_HOME": str(interrupted)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 240

    def embedded() -> int:
        counts = re.findall(r"embedding:.*?(\d+)/300", "".join(seen))
        return int(counts[-1]) if counts else 0

    while embedded() < 140 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # until a first group of documents is written, more to come
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130, "".join(seen)
    reader.join(timeout=5)
    assert "stopped." in "".join(seen) and "Traceback" not in "".join(seen)
    partial = snapshot(interrupted)
    assert 0 < len(partial) < len(snapshot(clean))

    again = run_cli("ingest", str(corpus), env={"APPRENTI_HOME": str(interrupted)})
    assert again.returncode == 0, again.stderr
    assert snapshot(interrupted) == snapshot(clean)
    assert "0 updated" in again.stdout  # whole documents were written, never half of one


def test_two_ingests_at_once_both_land(tmp_path):
    first, second = big_corpus(tmp_path / "first", 8), tmp_path / "second"
    second.mkdir()
    (second / "note.txt").write_text("A second folder's note.")
    processes = [subprocess.Popen([sys.executable, str(ROOT / "cli_app.py"), "ingest", str(folder)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for folder in (first, second)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    status = json.loads(run_cli("status", "--json").stdout)["knowledge_base"]
    assert status["documents"] == 9 and status["chunks"] == 8 * 3 + 1


def test_a_read_only_store_gives_a_clear_message_and_stays_as_it_was(home, corpus):
    assert run_cli("ingest", str(corpus / "tea.md")).returncode == 0
    before = snapshot(home)
    store = home / "chroma_db_store"
    # A read-only bind mount in a private mount namespace: even root cannot write there, and the mount
    # vanishes with the process.
    command = (f"mount --bind {store} {store} && mount -o remount,bind,ro {store} && "
               f"exec {sys.executable} {ROOT / 'cli_app.py'} ingest {corpus}")
    result = subprocess.run(["unshare", "--mount", "sh", "-c", command], capture_output=True, text=True,
                            timeout=300, env=os.environ, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "Read-only file system" in result.stderr or "readonly database" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    assert snapshot(home) == before


@pytest.fixture
def chroma_server(tmp_path):
    """A real `chroma run` on loopback, with its data in the test's folder."""
    port = free_port()
    chroma = shutil.which("chroma", path=os.path.dirname(sys.executable))
    server = subprocess.Popen([chroma, "run", "--path", str(tmp_path / "server-data"), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_same_commands_run_against_a_chroma_server(home, corpus, chroma_server, tmp_path):
    server = {"APPRENTI_CHROMA_URL": chroma_server}
    result = run_cli("ingest", str(corpus), env=server)
    assert result.returncode == 0 and "5 added" in result.stdout, result.stderr
    hits = json.loads(run_cli("search", "--json", "When do backups run?", env=server).stdout)
    assert hits[0]["doc_id"] == "faq-backup"
    status = json.loads(run_cli("status", "--json", env=server).stdout)
    assert status["knowledge_base"] == {"documents": 5, "chunks": 5, "server": chroma_server}
    assert (tmp_path / "server-data").exists()
    assert not (home / "chroma_db_store" / "chroma.sqlite3").exists()  # nothing went to the embedded store
    assert json.loads(run_cli("status", "--json").stdout)["knowledge_base"]["chunks"] == 0

    # Another client with its own data dir (so its own keyword index) sees and searches the same store.
    elsewhere = {**server, "APPRENTI_HOME": str(tmp_path / "other-home")}
    hits = json.loads(run_cli("search", "--json", "--mode", "keyword", "XK-4471", env=elsewhere).stdout)
    assert hits[0]["doc_id"] == str(corpus / "errors.txt")
    assert run_cli("ingest", str(corpus), env=server).stdout.startswith("Documents: 0 added, 0 updated, 5 unchanged")


def test_an_unreachable_server_is_one_clear_message():
    result = run_cli("search", "anything", env={"APPRENTI_CHROMA_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == 1 and "cannot reach the Chroma server at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- what the user gave: links, loops, unchanged files

def test_links_out_of_the_folder_are_not_followed_and_links_inside_read_each_file_once(kb, corpus, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The root password is hunter2.")
    (corpus / "passwd.txt").symlink_to(outside / "secret.txt")
    (corpus / "elsewhere").symlink_to(outside, target_is_directory=True)
    (corpus / "up").symlink_to(tmp_path, target_is_directory=True)
    (corpus / "alias.md").symlink_to("tea.md")  # inside: the same file, read once
    (corpus / "cuisine" / "kitchen").symlink_to("..", target_is_directory=True)  # inside: the folder itself
    (corpus / "cuisine" / "loop.txt").symlink_to("loop.txt")
    (corpus / "old.txt").symlink_to(outside / "secret.txt")
    kb.add("The root password is hunter2.", str(corpus / "old.txt"), source=str(corpus / "old.txt"))  # an older Apprenti followed it

    report = kb.ingest([corpus], prune=True)
    assert sorted(report.added) == sorted([str(corpus / "tea.md"), str(corpus / "cuisine" / "crepes.txt"),
                                           str(corpus / "errors.txt"), "faq-backup", "faq-vpn"])
    assert sorted(report.problems) == sorted([
        (str(corpus / "passwd.txt"), f"a link to {outside / 'secret.txt'}, outside {corpus}: not followed"),
        (str(corpus / "old.txt"), f"a link to {outside / 'secret.txt'}, outside {corpus}: not followed"),
        (str(corpus / "elsewhere"), f"a link to {outside}, outside {corpus}: not followed"),
        (str(corpus / "up"), f"a link to {tmp_path}, outside {corpus}: not followed"),
        (str(corpus / "cuisine" / "loop.txt"), "a loop of symbolic links: it leads nowhere")])
    assert report.removed == [str(corpus / "old.txt")]
    assert all(record.source.startswith(f"{corpus}/") and "elsewhere" not in record.source
               for record in kb.documents().values())
    assert "hunter2" not in json.dumps([text for _, text, _ in kb.chunks()])
    # A file given itself is the user's choice, link or not: read, under its real path.
    assert kb.ingest([corpus / "passwd.txt"]).added == [str(outside / "secret.txt")]


def test_links_out_of_the_folder_and_loops_are_said_by_the_command_line(home, tmp_path, capsys):
    from cli_app import main
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    (folder / "loop.md").symlink_to("loop.md")
    assert main(["ingest", str(folder)]) == 1  # nothing to read
    out, err = capsys.readouterr()
    assert "Documents: 0 added, 0 updated, 0 unchanged, 0 removed (0 chunks written)." in out
    assert f"  {folder / 'passwd.txt'}: a link to /etc/passwd, outside {folder}: not followed" in err
    assert f"  {folder / 'loop.md'}: a loop of symbolic links: it leads nowhere" in err


def test_a_loop_given_as_the_path_is_one_clear_message(home, tmp_path, capsys, monkeypatch):
    from cli_app import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop").symlink_to("loop")
    assert main(["ingest", "loop"]) == 1
    out, err = capsys.readouterr()
    assert err == f"Skipped (1):\n  {tmp_path / 'loop'}: a loop of symbolic links: it leads nowhere\n"
    assert "0 added" in out


def record_parsing(monkeypatch) -> list[str]:
    """The names of the files parsed from now on, in order."""
    from store import documents
    parsed = []

    def recording(reader):
        return lambda data, path: parsed.append(path.name) or reader(data, path)

    for suffix, reader in documents.READERS.items():
        monkeypatch.setitem(documents.READERS, suffix, recording(reader))
    monkeypatch.setattr(documents, "read_jsonl", recording(documents.read_jsonl))
    return parsed


def test_an_unchanged_file_is_not_parsed_again_and_a_jsonl_file_keeps_its_counts(kb, corpus, monkeypatch):
    from store.catalog import IngestReport
    from test_documents import write_pdf
    write_pdf(corpus / "book.pdf", ["Chapter one: the lighthouse keeper.", "Chapter two: the storm."])
    assert len(kb.ingest([corpus]).added) == 6
    parsed = record_parsing(monkeypatch)
    assert kb.ingest([corpus]) == IngestReport(unchanged=6) and parsed == []

    faq = corpus / "faq.jsonl"
    backup = faq.read_text().splitlines()[0]
    faq.write_text(backup + "\n" + json.dumps({"id": "faq-vpn", "text": "The VPN needs client version 4."}) + "\n")
    assert kb.ingest([corpus]) == IngestReport(updated=["faq-vpn"], unchanged=5, chunks=1)
    assert parsed == ["faq.jsonl"]  # its other line's document now knows the file's new bytes
    assert kb.ingest([corpus]) == IngestReport(unchanged=6) and parsed == ["faq.jsonl"]

    faq.write_text(json.dumps({"id": "faq-vpn", "text": "The VPN needs client version 4."}) + "\n")
    assert kb.ingest([corpus]) == IngestReport(unchanged=5, gone=["faq-backup"])
    parsed.clear()
    # Unparsed, the file still says that its line faq-backup is gone.
    assert kb.ingest([corpus]) == IngestReport(unchanged=5, gone=["faq-backup"]) and parsed == []
    assert kb.ingest([corpus], prune=True) == IngestReport(unchanged=5, removed=["faq-backup"]) and parsed == []
    assert "faq-backup" not in kb.documents()


def test_a_file_half_stored_or_with_bad_lines_is_parsed_again(kb, corpus, monkeypatch):
    from store.catalog import IngestReport
    kb.ingest([corpus])
    parsed = record_parsing(monkeypatch)
    kb.delete("faq-vpn")  # as an interrupted ingest can leave a file: some of its documents stored
    assert kb.ingest([corpus]) == IngestReport(added=["faq-vpn"], unchanged=4, chunks=1)
    assert parsed == ["faq.jsonl"]
    (corpus / "faq.jsonl").write_text((corpus / "faq.jsonl").read_text() + "{not json\n")
    problem = (str(corpus / "faq.jsonl"), "line 3: not JSON (Expecting property name enclosed in double quotes)")
    for _ in range(2):  # its bad line is never stored, so it is parsed each time, and the line said each time
        parsed.clear()
        assert kb.ingest([corpus]) == IngestReport(unchanged=5, problems=[problem]) and parsed == ["faq.jsonl"]


def without_file_hashes(document, ingested_at):
    """Chunks as an Apprenti from before file hashes wrote them."""
    from store.documents import chunk_document
    chunks = chunk_document(document, ingested_at)
    for chunk in chunks:
        del chunk.metadata["file_hash"], chunk.metadata["file_records"]
    return chunks


def test_a_store_without_file_hashes_parses_each_file_once_more(kb, corpus, monkeypatch):
    from store.catalog import IngestReport
    with monkeypatch.context() as older:
        older.setattr("knowledge_base.chunk_document", without_file_hashes)
        kb.ingest([corpus])
    before = {chunk_id: (text, metadata) for chunk_id, text, metadata in kb.chunks()}
    parsed = record_parsing(monkeypatch)
    assert kb.ingest([corpus]) == IngestReport(unchanged=5)
    assert sorted(parsed) == ["crepes.txt", "errors.txt", "faq.jsonl", "tea.md"]
    after = {chunk_id: (text, metadata) for chunk_id, text, metadata in kb.chunks()}
    assert after["faq-backup#0"][1]["file_records"] == 2
    assert {chunk_id: (text, {key: value for key, value in metadata.items()
                              if key not in ("file_hash", "file_records")})
            for chunk_id, (text, metadata) in after.items()} == before  # the file's hash added, nothing else changed
    parsed.clear()
    assert kb.ingest([corpus]) == IngestReport(unchanged=5) and parsed == []
