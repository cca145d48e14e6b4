"""Smoke test of the base model: load it, answer a fixed question, print what ran and how fast.

    python test_model.py [--model ID_OR_FOLDER]      exit code 0 when it answered, 1 otherwise
"""
from __future__ import annotations

import argparse
import sys
import time

from common.config import Settings
from common.errors import ApprentiError

QUESTION = "Who wrote Romeo and Juliet?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder (default: APPRENTI_BASE_MODEL, else TinyLlama)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    arguments = parser.parse_args(argv)
    try:
        from inference.chat_model import load_chat_model
        from inference.locate import resolve_base_model
        settings = Settings.load(base_model=arguments.model)
        model = load_chat_model(settings, resolve_base_model(settings))  # on the backend answers use
        started = time.perf_counter()
        pieces = list(model.stream(model.chat_ids([{"role": "user", "content": QUESTION}]),
                                   arguments.max_new_tokens))
        seconds = time.perf_counter() - started
    except ApprentiError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    answer = "".join(pieces).strip()
    tokens = len(model.text_ids(answer)) if answer else 0
    print(f"model:     {model.name}")
    print(f"backend:   {model.backend}, {model.dtype} on {model.device}")
    print(f"load:      {model.load_seconds:.1f} s")
    print(f"speed:     {tokens / seconds:.1f} tokens/s ({tokens} tokens in {seconds:.1f} s)")
    print(f"question:  {QUESTION}")
    print(f"answer:    {answer}")
    if not answer:
        print("FAILED: the model gave an empty answer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
