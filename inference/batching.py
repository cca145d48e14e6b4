"""Continuous batching for the converted (ONNX, int8) model on CPU: concurrent requests decode together.

One worker thread owns an onnxruntime session over the converted folder's model.onnx (the same file ONNX
Runtime GenAI runs) and keeps every active request's KV cache in one row ("slot") of a shared buffer per
layer, [max_batch, kv_heads, capacity, head_size]. Each step it:

  1. admits waiting requests into free slots, prefilling each prompt in chunks (a long prompt does not
     stall the others' streams for more than one chunk);
  2. runs ONE decoder call for all active rows, one new token each (rows of different lengths: the
     attention mask is right-padded; GroupQueryAttention reads each row's own length from it, writes the
     new key/value in place at that position, and places its rotary position there);
  3. adjusts and samples each row's logits by that request's own settings (greedy or temperature/top-p,
     and an optional logits hook such as inference.decoding.adjust), and hands the token to its stream;
  4. drops rows that ended (EOS, max_new_tokens, the stop callback, a closed stream), moving the last active
     row into the freed slot so that the active rows stay contiguous (slots 0..n-1 are bound as views).

Why not ONNX Runtime GenAI 0.18's own batching (measured, see the report): og.Engine on this model runs its
static path (dynamic batching needs a PagedAttention model, which the builder makes for CUDA fp16/bf16
only): at most 4 rows, a new request waits for the whole batch to end, no seed or stop strings, and no
access to the logits; og.Generator with batch_size > 1 takes its prompts once (no joining, no removal).

The buffers' sequence axis (capacity) follows the longest active row, in steps of CAPACITY_STEP, and is
never sized for the model's whole window: 8 rows x 8192 tokens would hold 3 GB of fp32 keys and values for
this 135M model (46 KB a token), and a wider buffer also made each step slower (batch 8 at 350 tokens:
36 ms a step at capacity 512, 41-46 ms at 1024-2048, when warm).
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from common.errors import ApprentiError

CAPACITY_STEP = 128  # the KV buffer's sequence axis grows (and shrinks) in steps of this many tokens
TOP_K = 50  # sampling considers the 50 likeliest tokens, then top-p among them (ONNX Runtime GenAI's default)

LogitsHook = Callable[[np.ndarray, list, list], None]  # (1-D logits, prompt ids, answer ids): change in place
StopCheck = Callable[[list], bool]  # (answer ids so far) -> True to end the answer here


class QueueFull(ApprentiError):
    """As many requests wait as the queue holds: the API answers 503 with Retry-After: `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests are waiting for the model: retry in {retry_after} s")
        self.retry_after = retry_after


_END = object()


class Stream:
    """One request's tokens, as the worker makes them. Iterate for the token ids; `finish_reason` is then
    "stop" (EOS or the stop check), "length" (max_new_tokens or the context), "cancelled", or "error".
    close() (or leaving a `with` block, or dropping the iterator) takes the request out of the batch at the
    next step, waiting or active."""

    def __init__(self, prompt: list[int], max_new_tokens: int, temperature: float, top_p: float,
                 logits_hook: LogitsHook | None, stop: StopCheck | None, seed: int | None):
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.temperature, self.top_p = temperature, top_p
        self.logits_hook, self.stop = logits_hook, stop
        self.rng = np.random.default_rng(seed)
        self.answer: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self._tokens: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        # the worker's own bookkeeping
        self.length = 0  # tokens held in its KV row
        self.prefilled = 0  # prompt tokens already run

    def __iter__(self) -> Iterator[int]:
        try:
            while (item := self._tokens.get()) is not _END:
                yield item
            if self.error is not None:
                raise self.error
        finally:
            self.close()

    def close(self) -> None:
        self._cancelled.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _emit(self, token: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._tokens.put(token)

    def _finish(self, reason: str, error: BaseException | None = None) -> None:
        if self.finish_reason is None:
            self.finish_reason, self.error = reason, error
            self._tokens.put(_END)


@dataclass
class _Geometry:
    layers: int
    kv_heads: int
    head_size: int
    context: int
    eos: frozenset
    filename: str
    past: str  # "past_key_values.%d.key" style templates
    past_value: str
    present: str
    present_value: str
    inputs: dict = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> "_Geometry":
        config = json.loads((folder / "genai_config.json").read_text())["model"]
        decoder = config["decoder"]
        eos = config["eos_token_id"]
        return cls(layers=decoder["num_hidden_layers"], kv_heads=decoder["num_key_value_heads"],
                   head_size=decoder["head_size"], context=config["context_length"],
                   eos=frozenset(eos if isinstance(eos, list) else [eos]), filename=decoder["filename"],
                   past=decoder["inputs"]["past_key_names"], past_value=decoder["inputs"]["past_value_names"],
                   present=decoder["outputs"]["present_key_names"],
                   present_value=decoder["outputs"]["present_value_names"], inputs=decoder["inputs"])


# Every decoder is closed before the interpreter ends: a worker still inside ONNX Runtime when the runtime's
# threads are torn down aborts the process ("terminate called without an active exception").
OPEN: "weakref.WeakSet[BatchDecoder]" = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    for decoder in list(OPEN):
        decoder.close()


class BatchDecoder:
    """Decodes up to `max_batch` requests together; up to `max_waiting` more wait (then QueueFull).

    submit() may be called from any thread; the returned Stream is read from any thread. A prompt is run
    `prefill_chunk` tokens at a time, one chunk between two decoding steps."""

    def __init__(self, folder: str | Path, max_batch: int = 8, max_waiting: int = 32, threads: int | None = None,
                 prefill_chunk: int = 128, spinning: bool = True, model_file: str | None = None):
        import onnxruntime as ort
        self.folder = Path(folder)
        self.geometry = g = _Geometry.read(self.folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        # Spinning threads burn a shared core while they wait; on a busy 2-core machine that slows everyone.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        # model_file: e.g. a copy of the graph whose logits are the last position's only (10% faster prefill)
        self.session = ort.InferenceSession(str(self.folder / (model_file or g.filename)), options,
                                            providers=["CPUExecutionProvider"])
        self._ort = ort
        names = {i.name for i in self.session.get_inputs()}
        if "position_ids" in names:
            raise NotImplementedError("models with a position_ids input: give each row its own positions")
        self.kv_type = np.float16 if "float16" in self.session.get_inputs()[2].type else np.float32
        self.max_batch, self.max_waiting, self.prefill_chunk = max_batch, max_waiting, prefill_chunk
        self.capacity = 0
        self.kv: list[np.ndarray] = []  # 2 per layer: key, value; [max_batch, kv_heads, capacity, head_size]
        self._resize(CAPACITY_STEP)
        self.active: list[Stream] = []  # row i of the buffers holds active[i]
        self.prefilling: Stream | None = None  # admitted, its prompt part-way run, in row len(active)
        self.waiting: collections.deque[Stream] = collections.deque()
        self._lock = threading.Condition()
        self._running = True
        self.steps = 0
        self.step_seconds = 0.0
        self._recent = collections.deque(maxlen=32)  # seconds requests took, for Retry-After
        self._worker = threading.Thread(target=self._run, name="batch-decoder", daemon=True)
        self._worker.start()
        OPEN.add(self)

    # -- the public side ---------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0, top_p: float = 0.95,
               logits_hook: LogitsHook | None = None, stop: StopCheck | None = None,
               seed: int | None = None) -> Stream:
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("an empty prompt")
        if len(prompt) + 1 > self.geometry.context:
            raise ValueError(f"the prompt ({len(prompt)} tokens) leaves no room in the {self.geometry.context}-token window")
        max_new = max(1, min(max_new_tokens, self.geometry.context - len(prompt)))
        stream = Stream(prompt, max_new, temperature, top_p, logits_hook, stop, seed)
        with self._lock:
            if not self._running:
                raise RuntimeError("the decoder is closed")
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(self._retry_after())
            self.waiting.append(stream)
            self._lock.notify()
        return stream

    def load(self) -> dict:
        with self._lock:
            return {"active": len(self.active) + (self.prefilling is not None), "waiting": len(self.waiting),
                    "capacity": self.capacity, "steps": self.steps}

    def close(self, drain: bool = False) -> None:
        """Take no more requests. With `drain`, those it has are answered and the worker then ends, while close
        returns at once (a model replaced while a server's requests still stream from it); without, they end
        as cancelled and close waits for the worker."""
        with self._lock:
            self._running = False
            if not drain:
                for stream in [*self.active, *self.waiting, *([self.prefilling] if self.prefilling else [])]:
                    stream.close()
            self._lock.notify()
        if not drain:
            self._worker.join()

    def _retry_after(self) -> int:
        typical = sorted(self._recent)[len(self._recent) // 2] if self._recent else 5.0
        return max(1, round(typical * (1 + len(self.waiting) / self.max_batch)))

    # -- the worker ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._running and not (self.active or self.waiting or self.prefilling):
                    self._lock.wait()
                if not (self.active or self.waiting or self.prefilling):
                    break  # closed, and nothing left to answer
                if self.prefilling is None and self.waiting and len(self.active) < self.max_batch:
                    self.prefilling = self.waiting.popleft()
            try:
                self._drop_ended()
                if self.prefilling is not None:
                    self._prefill_chunk()
                if self.active:
                    self._decode_step()
            except Exception as error:  # a failed run ends every request in it, not the server
                for stream in self.active + ([self.prefilling] if self.prefilling else []):
                    stream._finish("error", error)
                self.active, self.prefilling = [], None
        for stream in self.active + list(self.waiting) + ([self.prefilling] if self.prefilling else []):
            stream._finish("cancelled")

    def _resize(self, capacity: int) -> None:
        g, rows = self.geometry, len(getattr(self, "active", [])) + (getattr(self, "prefilling", None) is not None)
        keep = min(self.capacity, capacity)
        fresh = []
        for old in self.kv or [None] * (2 * g.layers):
            # uninitialised is fine: a row's attention reads only the positions its mask counts
            new = np.empty((self.max_batch, g.kv_heads, capacity, g.head_size), self.kv_type)
            if old is not None and rows:
                new[:rows, :, :keep] = old[:rows, :, :keep]
            fresh.append(new)
        self.kv, self.capacity = fresh, capacity

    def _fit(self, longest: int) -> None:
        """Make the buffers' sequence axis hold `longest` tokens, and no more than a step beyond it."""
        needed = -(-longest // CAPACITY_STEP) * CAPACITY_STEP
        if needed > self.capacity or needed < self.capacity // 2:
            self._resize(needed)

    def _run_model(self, rows: slice, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        g, ort = self.geometry, self._ort
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", mask)
        binding.bind_output("logits", "cpu")  # first: get_outputs() lists outputs in binding order
        for layer in range(g.layers):
            for index, (past, present) in enumerate(((g.past, g.present), (g.past_value, g.present_value))):
                # the same memory as past and present: GroupQueryAttention then writes in place
                value = ort.OrtValue.ortvalue_from_numpy(self.kv[2 * layer + index][rows])
                binding.bind_ortvalue_input(past % layer, value)
                binding.bind_ortvalue_output(present % layer, value)
        self.session.run_with_iobinding(binding)
        # only the logits: copy_outputs_to_cpu() would copy every present buffer too (all the KV cache)
        return binding.get_outputs()[0].numpy()

    def _prefill_chunk(self) -> None:
        stream, row = self.prefilling, len(self.active)
        if stream.cancelled:
            stream._finish("cancelled")
            self.prefilling = None
            return
        start = stream.prefilled
        chunk = stream.prompt[start:start + self.prefill_chunk]
        self._fit(max([s.length + 1 for s in self.active] + [start + len(chunk) + 1]))
        logits = self._run_model(slice(row, row + 1), np.asarray([chunk], np.int64),
                                 np.ones((1, start + len(chunk)), np.int64))
        stream.prefilled = stream.length = start + len(chunk)
        if stream.prefilled == len(stream.prompt):
            self.prefilling = None
            self.active.append(stream)
            self._take(stream, logits[0, -1])

    def _decode_step(self) -> None:
        n = len(self.active)
        longest = max(s.length for s in self.active) + 1
        self._fit(max(longest, self.prefilling.length if self.prefilling else 0))
        mask = np.zeros((n, longest), np.int64)
        for i, s in enumerate(self.active):
            mask[i, :s.length + 1] = 1
        ids = np.asarray([[s.answer[-1]] for s in self.active], np.int64)
        started = time.perf_counter()
        logits = self._run_model(slice(0, n), ids, mask)
        self.steps += 1
        self.step_seconds += time.perf_counter() - started
        for i, s in enumerate(self.active):
            s.length += 1
            self._take(s, logits[i, -1])

    def _take(self, stream: Stream, logits: np.ndarray) -> None:
        """Choose `stream`'s next token from its row of logits; emit it, or end the stream."""
        if stream.cancelled:
            return  # dropped by _drop_ended before the next step
        if stream.logits_hook is not None:
            logits = np.array(logits, dtype=np.float32)  # a copy: the hook changes it in place
            stream.logits_hook(logits, stream.prompt, stream.answer)
        token = self._choose(stream, logits)
        if token in self.geometry.eos:
            stream._finish("stop")
            return
        stream.answer.append(token)
        stream._emit(token)
        if stream.stop is not None and stream.stop(stream.answer):
            stream._finish("stop")
        elif len(stream.answer) >= stream.max_new_tokens or stream.length + 1 >= self.geometry.context:
            stream._finish("length")

    @staticmethod
    def _choose(stream: Stream, logits: np.ndarray) -> int:
        if stream.temperature <= 0:
            return int(np.argmax(logits))
        top = np.argpartition(logits, -TOP_K)[-TOP_K:]
        top = top[np.argsort(logits[top])[::-1]]
        scaled = logits[top].astype(np.float64) / stream.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        keep = int(np.searchsorted(np.cumsum(probs), stream.top_p) + 1)
        probs = probs[:keep] / probs[:keep].sum()
        return int(top[stream.rng.choice(keep, p=probs)])

    def _drop_ended(self) -> None:
        """Take ended and cancelled requests out; the last row moves into each freed slot."""
        i = 0
        while i < len(self.active):
            stream = self.active[i]
            if stream.finish_reason is None and not stream.cancelled:
                i += 1
                continue
            stream._finish("cancelled")
            self._recent.append(time.perf_counter() - stream.submitted)
            last = len(self.active) - 1
            if i != last:
                length = self.active[last].length
                for buffer in self.kv:
                    buffer[i, :, :length] = buffer[last, :, :length]
                self.active[i] = self.active[last]
            self.active.pop()
            # a prompt part-way prefilled sits in the row after the active ones: it moves down one too
            if self.prefilling is not None and self.prefilling.length:
                row, length = len(self.active) + 1, self.prefilling.length
                for buffer in self.kv:
                    buffer[row - 1, :, :length] = buffer[row, :, :length]
