"""Concurrent requests decoded together (inference/batching.py): each gets the tokens it would get alone, with
its own length, decoding and sampling; a stream closed leaves the batch; a full queue says when to retry."""
import functools
import json
import threading

import pytest

from common.config import Settings
from inference.batching import BatchDecoder, QueueFull
from inference.decoding import CLOSED_BOOK, GROUNDED, adjust
from inference.locate import resolve_base_model
from inference.onnx_model import converted_folder
from inference.tokenizer import FolderTokenizer

QUESTIONS = ["Where do herons nest?", "Explain how a ferry crosses a lake, step by step.", "Qui a écrit Les Misérables ?",
             "Name three green teas.", "What is 12 times 7?", "Tell me a story about a lantern."]


@pytest.fixture(scope="module")
def model_folder(bundled_models):
    """The bundled model's converted form, made once for the session (conftest.bundled_models)."""
    settings = Settings.load(home=bundled_models.parent, backend="onnx-int8",
                             base_model="TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    return converted_folder(settings, resolve_base_model(settings))


@pytest.fixture(scope="module")
def prompts(model_folder):
    """Prompts of different lengths (a passage repeated), so that rows join and leave at different steps."""
    tokenizer = FolderTokenizer(model_folder)
    passage = "Herons nest in colonies called heronries, usually in tall trees near water. "
    return [tokenizer.chat_ids([{"role": "user", "content": passage * number + question}])
            for number, question in enumerate(QUESTIONS)]


def alone(model_folder, prompt: list[int], new: int, decoding=None) -> list[int]:
    """The tokens ONNX Runtime GenAI's own generator gives for one request (greedy), the reference."""
    import onnxruntime_genai as og
    model = alone.models.setdefault(str(model_folder), og.Model(str(model_folder)))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    answer = []
    while not generator.is_done():
        if decoding is not None:
            logits = generator.get_logits()
            adjust(logits.reshape(-1), prompt, answer, decoding)
            generator.set_logits(logits)
        generator.generate_next_token()
        answer.append(int(generator.get_next_tokens()[0]))
    eos = json.loads((model_folder / "genai_config.json").read_text())["model"]["eos_token_id"]
    return [token for token in answer if token not in (eos if isinstance(eos, list) else [eos])]


alone.models = {}


def read_all(streams) -> list[list[int]]:
    """Every stream read at once, each by its own thread, as a server's requests are."""
    tokens = [None] * len(streams)

    def read(number):
        tokens[number] = list(streams[number])
    threads = [threading.Thread(target=read, args=(number,)) for number in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tokens


def test_requests_decoded_together_get_the_tokens_they_get_alone(model_folder, prompts):
    lengths = [12, 30, 20, 30, 8, 24]
    decodings = [GROUNDED, CLOSED_BOOK, None, GROUNDED, None, CLOSED_BOOK]
    expected = [alone(model_folder, prompt, new, decoding)
                for prompt, new, decoding in zip(prompts, lengths, decodings)]
    decoder = BatchDecoder(model_folder, max_batch=4, max_waiting=8, prefill_chunk=64)
    try:
        # six requests, four rows: two wait and join as others end; long prompts are read in chunks
        streams = [decoder.submit(prompt, new, logits_hook=decoding and functools.partial(adjust, decoding=decoding))
                   for prompt, new, decoding in zip(prompts, lengths, decodings)]
        assert read_all(streams) == expected
        assert {stream.finish_reason for stream in streams} <= {"stop", "length"}

        # one closed mid-answer leaves the batch; the others go on unchanged
        streams = [decoder.submit(prompt, 30) for prompt in prompts[:3]]
        for number, _ in enumerate(streams[1]):
            if number == 3:
                streams[1].close()
                break
        rest = read_all([streams[0], streams[2]])
        assert rest == [alone(model_folder, prompts[0], 30), alone(model_folder, prompts[2], 30)]
        assert streams[1].finish_reason == "cancelled"

        # sampling with a seed repeats; a stop check ends the answer where it says
        sampled = [decoder.submit(prompts[5], 20, temperature=0.8, top_p=0.9, seed=7) for _ in range(2)]
        first, second = read_all(sampled)
        assert first == second and first != alone(model_folder, prompts[5], 20)
        stopped = decoder.submit(prompts[1], 40, stop=lambda answer: len(answer) >= 5)
        assert len(list(stopped)) == 5 and stopped.finish_reason == "stop"
    finally:
        decoder.close()


def test_a_full_queue_says_when_to_retry(model_folder, prompts):
    decoder = BatchDecoder(model_folder, max_batch=1, max_waiting=1)
    held = []
    try:
        with pytest.raises(QueueFull) as full:
            for _ in range(4):
                held.append(decoder.submit(prompts[0], 40))
        assert 1 <= len(held) <= 2  # one decoding (once the worker has taken it), one waiting
        assert full.value.retry_after >= 1 and "retry in" in str(full.value)
    finally:
        for stream in held:
            stream.close()
        decoder.close()
