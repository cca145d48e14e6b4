"""Notices: one line on stderr, so that stdout stays what scripts read (JSON, answers)."""
import sys


def notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)
