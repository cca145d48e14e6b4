"""The one logits adjustment both backends decode with: penalties that spare the prompt, a copy bias."""
import numpy as np
import pytest

from inference.decoding import Decoding, adjust


def adjusted(prompt, answer, **decoding) -> np.ndarray:
    logits = np.full(10, 2.0, dtype=np.float32)
    logits[9] = -2.0
    adjust(logits, prompt, answer, Decoding(**decoding))
    return logits


def test_the_repetition_penalty_counts_the_answer_s_tokens_not_the_prompt_s():
    logits = adjusted(prompt=[1, 2, 9], answer=[3, 9], repetition_penalty=2.0)
    assert logits[1] == logits[2] == 2.0  # in the prompt only: spared
    assert logits[3] == 1.0 and logits[9] == -4.0  # in the answer: divided, or multiplied below zero
    assert logits[4] == 2.0


def test_no_repeat_ngrams_are_the_answer_s_own():
    # The prompt holds 5 6 7 and the answer ends with 5 6: copying 7 stays allowed.
    assert adjusted(prompt=[5, 6, 7], answer=[5, 6], no_repeat_ngram_size=3)[7] == 2.0
    # The answer itself already said 5 6 7: saying it again is forbidden.
    logits = adjusted(prompt=[], answer=[5, 6, 7, 1, 5, 6], no_repeat_ngram_size=3)
    assert logits[7] == -np.inf and np.isfinite(np.delete(logits, 7)).all()


def test_the_copy_bias_favours_the_longest_span_of_the_prompt_the_answer_continues():
    prompt = [1, 2, 3, 8, 2, 4]  # after "2" the prompt goes on with 3 or 4; after "1 2" only with 3
    logits = adjusted(prompt, answer=[1, 2], copy_bias=1.5)
    assert logits[3] == 3.5 and logits[4] == 2.0
    logits = adjusted(prompt, answer=[7, 2], copy_bias=1.5)
    assert logits[3] == logits[4] == 3.5
    assert (adjusted(prompt, answer=[], copy_bias=1.5) == adjusted(prompt, answer=[])).all()


def test_a_bad_decoding_is_refused():
    with pytest.raises(ValueError, match="repetition_penalty=0.5"):
        Decoding(repetition_penalty=0.5)
