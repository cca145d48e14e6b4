"""Files shared by several processes: one lock helper, whole appends and whole replacements."""
from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from common.errors import ApprentiError, BusyError


@contextmanager
def file_lock(path: Path, *, wait: bool = True, waiting: str = "", busy: str = ""):
    """Hold an exclusive lock on `path` for the block. The lock goes with the process, even a killed one,
    and two opens of the file exclude each other even within one process (threads included).

    wait=False raises BusyError(`busy`) when another holder has it; `waiting`, if given, is said on stderr
    (never stdout, which scripts read) before waiting for it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as error:
        raise ApprentiError(f"cannot open {path}: {error.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise BusyError(busy or f"{path} is held by another Apprenti process") from None
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def append_whole(path: Path, data: bytes, own_line: bool = False) -> None:
    """Append `data` all at once or not at all, even with other processes appending to the same file: under
    the file's lock, synced, and cut back if the disk fills midway. `own_line`: if an earlier crash left the
    file without its last newline, start on a fresh line, so that the cut line stays alone."""
    with file_lock(path):
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND)
        size = os.fstat(descriptor).st_size
        try:
            if own_line and size and os.pread(descriptor, 1, size - 1) != b"\n":
                data = b"\n" + data
            written = 0
            while written < len(data):
                written += os.write(descriptor, data[written:])
            os.fsync(descriptor)
        except OSError as error:
            os.ftruncate(descriptor, size)
            raise ApprentiError(f"cannot write {path}: {error.strerror}; nothing was saved") from None
        finally:
            os.close(descriptor)


def write_whole(path: Path, data: bytes) -> None:
    """Write beside `path` and rename into place: a reader sees the old file or the new one, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise ApprentiError(f"cannot write {path}: {error.strerror}") from None
