"""The transformers backend: a model answering with the weights training makes, on this machine's best
device; the fallback where the ONNX backend (inference/onnx_model.py) cannot answer."""
from __future__ import annotations

import threading
import time

from inference.decoding import CLOSED_BOOK, Decoding, adjust
from inference.loading import context_window, load_causal_lm
from inference.locate import ModelSource
from inference.tokenizer import Prompts, TransformersTokenizer


class ChatModel(Prompts):
    """A loaded causal language model with its tokenizer: chat prompts, plain completion, streaming."""

    backend = "transformers"

    def __init__(self, source: ModelSource):
        started = time.perf_counter()
        self.source, self.name = source, source.name
        self.version = source.version
        self.model, self.tokenizer = load_causal_lm(source.path, adapters=source.adapters)
        self.prompts = TransformersTokenizer(self.tokenizer)
        self.generating = threading.Lock()  # one generation at a time: a server's requests take turns
        self.load_seconds = time.perf_counter() - started

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def context_window(self) -> int:
        return context_window(self.model)

    def stream(self, input_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
               decoding: Decoding | None = None):
        """Yield the continuation of `input_ids` piece by piece: greedy, or sampled when `temperature` > 0,
        as `decoding` says (by default CLOSED_BOOK: no passages to copy). Generation runs
        in a thread; closing the generator early (Ctrl-C, a consumer that stops) cancels it at the next token."""
        import torch
        from transformers import LogitsProcessor, StoppingCriteria, TextIteratorStreamer

        cancelled = threading.Event()
        decoding, prompt = decoding or CLOSED_BOOK, list(input_ids)

        class Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancelled.is_set()

        class Adjust(LogitsProcessor):  # inference.decoding's adjustment, as the ONNX backend applies it
            def __call__(self, input_ids, scores):
                logits = scores[0].float().numpy().copy()
                adjust(logits, prompt, input_ids[0, len(prompt):].tolist(), decoding)
                return torch.from_numpy(logits)[None].to(scores.dtype)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = torch.tensor([input_ids], device=self.model.device)
        arguments = dict(input_ids=inputs, attention_mask=torch.ones_like(inputs), streamer=streamer,
                         max_new_tokens=max_new_tokens,
                         **(dict(do_sample=True, temperature=temperature, top_p=decoding.top_p) if temperature > 0
                            else dict(do_sample=False)),
                         logits_processor=[Adjust()] if decoding.adjusts else None,
                         pad_token_id=self.tokenizer.pad_token_id, stopping_criteria=[Cancel()])
        failure = []

        def generate():
            try:
                with torch.inference_mode():
                    self.model.generate(**arguments)
            except BaseException as error:  # re-raised in the caller's thread below
                failure.append(error)
                streamer.end()

        with self.generating:
            worker = threading.Thread(target=generate, daemon=True)
            worker.start()
            try:
                yield from streamer
            finally:
                cancelled.set()
                worker.join()
        if failure:
            raise failure[0]
