"""Unexpected errors (bugs of ours): the whole story goes to the log, one line goes to the user."""
from __future__ import annotations

import sys
import traceback
from datetime import datetime
from pathlib import Path


def log_crash(log: Path, what: str, error: BaseException) -> str:
    """Append the traceback of `error` to `log`; returns the one line to show the user."""
    try:
        with open(log, "a") as handle:
            handle.write(f"{datetime.now().isoformat()} {what} {sys.argv}\n{traceback.format_exc()}\n")
        where = f"details in {log}"
    except OSError:
        where = f"could not write the details to {log}"
    return f"unexpected {type(error).__name__}: {error} ({where})"
