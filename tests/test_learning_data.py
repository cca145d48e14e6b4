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
