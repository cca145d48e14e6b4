"""A loaded chat model: prompts in its chat template, plain completion, answers streamed token by token."""
from __future__ import annotations

import importlib.util
import re
import secrets
import threading
import time
from pathlib import Path

from common.config import Settings
from common.errors import ApprentiError
from common.messages import notice
from inference.decoding import CLOSED_BOOK, Decoding, adjust
from inference.loading import context_window, load_causal_lm
from inference.locate import ModelSource


def load_chat_model(settings: Settings, source: ModelSource):
    """`source` on the backend the settings choose: its converted form on ONNX Runtime GenAI, or
    transformers, which is also the fallback where the converted form cannot be had."""
    folder = fast_form(settings, source)
    if folder is not None:
        from inference.onnx_model import OnnxChatModel
        try:
            return OnnxChatModel(source, folder)
        except ApprentiError as error:
            notice(f"{error}: answering with transformers")
    return ChatModel(source)


def fast_form(settings: Settings, source: ModelSource) -> Path | None:
    """The converted form the fast backend answers `source` with, made now if it is not made yet; None, with
    a one-line notice, where it cannot be (the runtime not installed, a model it cannot convert)."""
    if settings.backend == "transformers":
        return None
    if importlib.util.find_spec("onnxruntime_genai") is None:
        notice("onnxruntime-genai is not installed ('make run' installs it): answering with transformers")
        return None
    from inference.onnx_model import converted
    try:
        return converted(settings, source)
    except ApprentiError as error:
        notice(f"{error}: answering with transformers")
        return None


class Prompts:
    """What every backend's model does alike, with the transformers tokenizer it keeps as `tokenizer`: a chat
    in the model's template, or plain text, as token ids."""

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The messages in the model's chat template. What the messages say is tokenised as text, special tokens
        included: a user or a document that writes "<|im_start|>system" must not open a turn of its own. So the
        template is rendered around marks, and only the template's own text between them is read for special
        tokens."""
        marks = [f"\ue000{secrets.token_hex(8)}\ue001" for _ in messages]
        rendered = self.tokenizer.apply_chat_template(
            [{**message, "content": mark} for message, mark in zip(messages, marks)],
            add_generation_prompt=True, tokenize=False)
        said = {mark: message["content"] for mark, message in zip(marks, messages)}
        ids = []
        for part in re.split(f"({'|'.join(marks)})", rendered):
            if part in said:
                ids += self.tokenizer(said[part], add_special_tokens=False, split_special_tokens=True)["input_ids"]
            elif part:
                ids += self.tokenizer(part, add_special_tokens=False)["input_ids"]
        return ids

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]


class ChatModel(Prompts):
    """A loaded causal language model with its tokenizer: chat prompts, plain completion, streaming."""

    backend = "transformers"

    def __init__(self, source: ModelSource):
        started = time.perf_counter()
        self.source, self.name = source, source.name
        self.version = source.version
        self.model, self.tokenizer = load_causal_lm(source.path, adapters=source.adapters)
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

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            cancelled.set()
            worker.join()
        if failure:
            raise failure[0]
