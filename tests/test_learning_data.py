import errno
import os

import pytest

from common.errors import ApprentiError
from conftest import at_once
from training.learning_data import append_entry, data_fingerprint, read_entries


def test_entries_stay_whole_with_their_blank_lines(home):
    path = home / "learning_data.txt"
    append_entry(path, "first line\nsecond line\n\nafter a blank line")
    append_entry(path, "  another entry  ")
    assert read_entries(path) == ["first line\nsecond line\n\nafter a blank line", "another entry"]


def test_empty_entries_are_refused_and_nothing_is_written(home):
    path = home / "learning_data.txt"
    for empty in ["", "   ", "\n\n"]:
        with pytest.raises(ApprentiError, match="empty"):
            append_entry(path, empty)
    assert not path.exists()


def test_an_entry_holding_the_separator_line_is_refused(home):
    with pytest.raises(ApprentiError, match="separates entries"):
        append_entry(home / "learning_data.txt", "before\n%\nafter")


def test_a_file_written_by_hand_is_one_entry(home):
    path = home / "learning_data.txt"
    path.write_text("Some notes\n\nwritten by hand.\n")
    assert read_entries(path) == ["Some notes\n\nwritten by hand."]


def test_missing_file_has_no_entries_and_bad_encoding_is_explained(home):
    path = home / "learning_data.txt"
    assert read_entries(path) == []
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(ApprentiError, match="not UTF-8"):
        read_entries(path)


def _append_many(path, writer):
    for i in range(40):
        append_entry(path, f"writer {writer} entry {i}\n" + "x" * 3000)


def test_appends_from_several_processes_at_once_keep_every_entry_whole(home):
    path = home / "learning_data.txt"
    at_once(_append_many, [(path, w) for w in range(4)])
    entries = read_entries(path)
    assert len(entries) == 160
    assert all(entry.endswith("x" * 3000) and entry.count("\n") == 1 for entry in entries)
    assert {entry.split("\n")[0] for entry in entries} == {f"writer {w} entry {i}" for w in range(4) for i in range(40)}


def test_a_full_disk_leaves_the_file_as_it_was(home, monkeypatch):
    path = home / "learning_data.txt"
    append_entry(path, "kept")
    before = path.read_bytes()
    real_write = os.write

    def write_half_then_fail(descriptor, data):
        if len(data) > 10:
            real_write(descriptor, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_half_then_fail)
    with pytest.raises(ApprentiError, match="No space left on device; nothing was saved"):
        append_entry(path, "a long entry that will not fit on the disk")
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_fingerprint_changes_with_the_data():
    assert data_fingerprint(["a", "b"]) == data_fingerprint(["a", "b"])
    assert data_fingerprint(["a", "b"]) != data_fingerprint(["a", "b", "c"])
    assert data_fingerprint(["ab"]) != data_fingerprint(["a", "b"])


def test_a_duplicate_entry_or_a_huge_one_is_refused_and_nothing_is_saved(home):
    from training.learning_data import MAX_ENTRY_CHARACTERS, entry_id
    path = home / "learning_data.txt"
    assert append_entry(path, "The ferry is green.") == entry_id("The ferry is green.")
    with pytest.raises(ApprentiError, match=r"already entry 1 \(learned-[0-9a-f]{10}\): nothing was saved"):
        append_entry(path, "  The ferry is green.\n")
    with pytest.raises(ApprentiError, match="add a document to the knowledge base instead"):
        append_entry(path, "x" * (MAX_ENTRY_CHARACTERS + 1))
    assert read_entries(path) == ["The ferry is green."]


def test_an_entry_is_taken_back_by_id_or_number_and_an_unknown_one_is_a_clear_error(home):
    from training.learning_data import entry_id, remove_entry
    path = home / "learning_data.txt"
    for text in ("First entry\n\nwith a blank line.", "Second entry.", "Third entry."):
        append_entry(path, text)
    assert remove_entry(path, entry_id("Second entry.")) == "Second entry."
    assert remove_entry(path, "1") == "First entry\n\nwith a blank line."
    assert read_entries(path) == ["Third entry."]
    for unknown in ("7", "learned-0000000000", ""):
        with pytest.raises(ApprentiError, match="no entry .* as 'python cli_app.py learned' lists them"):
            remove_entry(path, unknown)
    assert read_entries(path) == ["Third entry."]
    assert remove_entry(path, entry_id("Third entry.").removeprefix("learned-")) == "Third entry."
    assert read_entries(path) == []


def test_the_knowledge_base_follows_the_entries_even_after_a_hand_edit(home, kb):
    from training.learning_data import SOURCE, entry_id, sync_knowledge_base
    path = home / "learning_data.txt"
    append_entry(path, "The Zorblax guild password is tangerine-47.")
    append_entry(path, "Pim the heron is blue.")
    kb.add("A document of the user's own.", "mine")
    assert sync_knowledge_base(path, kb) == (2, 0)
    assert sync_knowledge_base(path, kb) == (0, 0)
    learned = {doc_id: record for doc_id, record in kb.documents().items() if record.source == SOURCE}
    assert set(learned) == {entry_id("The Zorblax guild password is tangerine-47."), entry_id("Pim the heron is blue.")}
    assert kb.search("What is the password of the Zorblax guild?", 1)[0].doc_id == entry_id(
        "The Zorblax guild password is tangerine-47.")
    path.write_text("Pim the heron is grey.\n%\n", encoding="utf-8")  # edited by hand
    assert sync_knowledge_base(path, kb) == (1, 2)
    assert {doc_id for doc_id, record in kb.documents().items()} == {"mine", entry_id("Pim the heron is grey.")}
