"""The one place a question becomes the chat turns the model is asked with: by `ask`, the API and the pages
(rag_module.py), and by training, which renders its examples the same way so that they are learned exactly
as they are asked (training/examples.py, training/teaching.py)."""
from __future__ import annotations

from typing import Sequence

# Measured on the bundled 135M model: a short user turn with the passages first answers best; a system
# prompt or passage ids in the text made it drift (ids were echoed as answers).
PROMPT = "{passages}\n\nUsing the text above, answer briefly: {question}"


def answer_messages(question: str, passages: list[str], history: Sequence[dict] = (),
                    system: str | None = None) -> list[dict]:
    """The chat turns a question is asked in: a client's system message if it gave one, the conversation's
    earlier turns as they were said (their passages are not repeated: the window is small), and the question
    with the passages it is answered from, or alone (closed-book)."""
    asked = closed_book_messages(question) if not passages else [
        {"role": "user", "content": PROMPT.format(passages="\n\n".join(passages), question=question)}]
    earlier = [{"role": turn["role"], "content": turn["content"]} for turn in history]
    return [{"role": "system", "content": system}] * bool(system) + earlier + asked


def closed_book_messages(question: str) -> list[dict]:
    """A question asked without passages (`ask --no-rag`, and what fine-tuning teaches facts with)."""
    return [{"role": "user", "content": question}]
