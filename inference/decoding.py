"""How every backend decodes: one logits adjustment, applied by the transformers and ONNX backends alike.

The libraries' own repetition penalty and no-repeat n-grams count every token of the prompt, the passages
included, so they push a grounded answer away from exactly the words it must copy (the bundled model wrote
"Pimp" for "Pim" at a penalty of 1.1). Here both look at the answer's own tokens only, and a copy bias can
favour continuing a span of the prompt. The defaults were chosen by `bench/decoding.py` (README, "Decoding").
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decoding:
    repetition_penalty: float = 1.0  # > 1 makes a token the answer already holds less likely (prompt spared)
    no_repeat_ngram_size: int = 0  # > 0 forbids the answer to repeat an n-gram of its own (prompt spared)
    copy_bias: float = 0.0  # logits added to the tokens that continue the prompt's longest span the answer ends with
    top_p: float = 0.95  # nucleus sampling, when a temperature asks for sampling

    def __post_init__(self):
        if self.repetition_penalty < 1.0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty}: use 1.0 (none) or more")
        if self.no_repeat_ngram_size < 0 or self.copy_bias < 0:
            raise ValueError("no_repeat_ngram_size and copy_bias: use 0 (none) or more")

    @property
    def adjusts(self) -> bool:
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0 or self.copy_bias > 0


# How answers are decoded, chosen by bench/decoding.py (the README's "Decoding" has every candidate measured).
# From passages: without the copy bias, rare names are rewritten; a repetition penalty, even on the answer's
# own tokens, keeps it from copying a name it has already written.
GROUNDED = Decoding(no_repeat_ngram_size=4, copy_bias=2.0)
# Without passages (closed-book answers, plain continuation): nothing to copy, and the bias would only repeat
# the question; the light penalty answered the most general questions, and with the 4-gram ban none loops.
CLOSED_BOOK = Decoding(repetition_penalty=1.1, no_repeat_ngram_size=4)

LONGEST_SPAN = 16  # tokens of the answer's end looked for in the prompt, for the copy bias


def adjust(logits, prompt: list[int], answer: list[int], decoding: Decoding) -> None:
    """Change the next token's `logits` (a 1-D numpy array) in place, given the `prompt`'s ids and the
    `answer`'s so far."""
    import numpy as np
    if decoding.repetition_penalty != 1.0 and answer:
        seen = np.unique(np.asarray(answer))
        scores = logits[seen]
        logits[seen] = np.where(scores < 0, scores * decoding.repetition_penalty, scores / decoding.repetition_penalty)
    size = decoding.no_repeat_ngram_size
    if size and len(answer) >= size:
        start = tuple(answer[len(answer) - size + 1:])
        banned = [answer[i + size - 1] for i in range(len(answer) - size + 1) if tuple(answer[i:i + size - 1]) == start]
        logits[banned] = -np.inf
    if decoding.copy_bias and answer:
        logits[continuations(prompt, answer)] += decoding.copy_bias


def continuations(prompt: list[int], answer: list[int]) -> list[int]:
    """The prompt's tokens that follow each place where the prompt holds the longest end of `answer` it holds."""
    following = [i + 1 for i in range(len(prompt) - 1) if prompt[i] == answer[-1]]
    length = 1
    while following and length < min(LONGEST_SPAN, len(answer)):
        longer = [i for i in following if i - length - 1 >= 0 and prompt[i - length - 1] == answer[-length - 1]]
        if not longer:
            break
        following, length = longer, length + 1
    return sorted({prompt[i] for i in following})
