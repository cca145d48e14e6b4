"""The OpenAI-compatible HTTP API, so that the tools people already use (the `openai` client, LangChain,
Open WebUI, editors) can talk to Apprenti.

Chat answers are grounded in the knowledge base as `ask` does: the conversation's last message is the
question, its earlier turns and its system message go into the prompt (and the earlier turns into the
retrieval), the sources come back in an extra field ("sources"), and a question nothing relevant answers is
refused. /v1/completions continues a text as `complete` does. The model "apprenti" is the one in use (the
champion, or the base model with --base); the base model can also be asked for by name, and each model is
loaded on its first request and kept. Concurrent requests are decoded together (the ONNX backend's batch,
inference/batching.py; transformers answers one at a time); when as many wait as its queue holds, a request is
answered 503 with Retry-After; a client that goes away, waiting or streaming, ends its own.

Without an API key, only this machine may call the API: a request must name it in its Host header, so that a
web page that points its own name at 127.0.0.1 (DNS rebinding) is refused. With or without a key, a browser
page of another origin may not post to it.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import ipaddress
import json
import struct
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import AsyncIterator, Awaitable, Callable, Literal, TypeVar, Union
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, model_validator
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from common.config import Settings
from common.errors import ApprentiError
from inference.batching import QueueFull
from rag_module import Answer, Assistant

MAX_BODY_BYTES = 1_000_000  # a question with its history; bigger bodies are refused before they are read
MAX_MESSAGES = 256  # a conversation's messages; the model's window holds far fewer, the latest ones
MODEL_IN_USE = "apprenti"  # the champion, whatever its version id; the base model with --base
READ_ONLY_METHODS = {"GET", "HEAD", "OPTIONS"}

T = TypeVar("T")


def lone_surrogate(data, where: str) -> str | None:
    """Where in `data`, parsed JSON, a text holds a lone UTF-16 surrogate ("\\ud800" in JSON), if anywhere: it
    is no character, which no tokenizer reads and no reply or error message can carry back."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return where
    elif isinstance(data, dict):
        return next((found for key, value in data.items()
                     if (found := lone_surrogate(key, where) or lone_surrogate(value, f"{where}.{key}"))), None)
    elif isinstance(data, list):
        return next((found for number, value in enumerate(data)
                     if (found := lone_surrogate(value, f"{where}[{number}]"))), None)
    return None


class ApiRequest(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def whole_characters(cls, data):
        where = lone_surrogate(data, "body")
        if where:
            raise ValueError(f"{where} holds a lone UTF-16 surrogate (\\ud800 to \\udfff), which is no character")
        return data


class ContentPart(BaseModel):
    type: str  # only "text" is served: `conversation` refuses the others by name
    text: str | None = None


class Message(BaseModel):
    role: str  # which roles are served, `conversation` says
    content: Union[str, list[ContentPart], None] = None
    tool_calls: list | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(ApiRequest):
    model: str = MODEL_IN_USE
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    tools: list | None = None
    rag: bool = True  # an extension: False asks the model alone, without retrieval or refusal


class CompletionRequest(ApiRequest):
    model: str = MODEL_IN_USE
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: Union[str, list[str], None] = None
    suffix: str | None = None
    echo: bool = False
    logprobs: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)


class EmbeddingRequest(ApiRequest):
    model: str = MODEL_IN_USE
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"


class FeedbackRequest(ApiRequest):
    question: str
    answer: str
    rating: Literal["good", "bad"]
    correction: str = ""
    comment: str = ""
    sources: list[str] = []  # the chunk ids of the answer's sources, as the answer gave them
    model: str | None = None
    history: list[dict] = []  # the conversation's turns before the question: {"role": "user" | "assistant", ...}


class ApiError(ApprentiError):
    """A request the API does not serve, with the status and error code the OpenAI API would answer."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class ClientGone(Exception):
    """The client hung up: what it asked for is no longer made."""


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The OpenAI API's error format, which its clients turn into their own exceptions."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def api_error(status: int, message: str, **details) -> JSONResponse:
    return JSONResponse(error_body(message, **details), status_code=status)


def on_this_machine(address: str) -> bool:
    """Whether `address`, a Host header ("localhost:8000") or an Origin ("http://127.0.0.1:3000"), names
    this machine: localhost or a loopback address."""
    try:
        name = urlsplit(address if "//" in address else f"//{address}").hostname
        return name == "localhost" or ipaddress.ip_address(name or "").is_loopback
    except ValueError:  # not an address: a malformed header, a name that is no IP address
        return False


class Doorkeeper:
    """Who may call. With a key, whoever brings it (Authorization: Bearer KEY). Without, this machine only, as
    the Host header says: a web page that rebinds its own name to 127.0.0.1 still sends that name. And no
    browser page of another origin may post, key or not: the browser would send its form or fetch (CORS only
    hides the answer), and its feedback would poison the preference data."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        refusal = self.refusal(scope["method"], Headers(scope=scope)) if scope["type"] == "http" else None
        await (refusal or self.app)(scope, receive, send)

    def refusal(self, method: str, headers: Headers) -> JSONResponse | None:
        if self.api_key:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                return api_error(401, "a wrong or missing API key: send the header 'Authorization: Bearer KEY'",
                                 code="invalid_api_key")
        elif not on_this_machine(headers.get("host", "")):
            return api_error(403, f"this API answers only requests addressed to this machine (localhost, 127.0.0.1, "
                                  f"[::1]), not to '{headers.get('host', '')}': serve it with a key "
                                  "(APPRENTI_API_KEY) to accept others", code="host_not_allowed")
        origin = headers.get("origin")
        if method not in READ_ONLY_METHODS and origin is not None and not on_this_machine(origin):
            return api_error(403, f"a web page from {origin} may not post to this API", code="origin_not_allowed")
        return None


class BodyLimit:
    """Refuse a body over `limit` bytes with 413, whether it declares its length or comes in chunks."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await self.too_large(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"the request body is over {self.limit} bytes")
            return message
        await self.app(scope, counted, send)

    async def too_large(self, scope, receive, send):
        await api_error(413, f"the request body is over {self.limit} bytes", code="body_too_large")(scope, receive, send)


@dataclass
class Reply:
    answer: Answer
    finish_reason: str  # as the API says it: "stop" or "length"

    def usage(self) -> dict:
        made, read = self.answer.completion_tokens, self.answer.prompt_tokens
        return {"prompt_tokens": read, "completion_tokens": made, "total_tokens": read + made}


class Generation:
    """One answer made in a thread of its own, so that the event loop goes on serving: its pieces (when
    `streamed`), then its Reply, come out of `next()`. `stop()` ends it at its next piece, or before it starts
    while it waits its turn; whoever started it stops it when done with it, whether the client stayed or not."""

    def __init__(self, work: Callable[["Generation"], Reply], streamed: bool):
        self.loop = asyncio.get_running_loop()
        self.made: asyncio.Queue = asyncio.Queue()
        self.streamed = streamed  # a whole reply wakes the event loop once, not at every piece
        self.stopped = threading.Event()
        threading.Thread(target=self.run, args=(work,), daemon=True).start()

    def run(self, work: Callable[["Generation"], Reply]) -> None:
        try:
            made = work(self)
        except BaseException as error:  # handed to the event loop, which raises it to the request
            made = error
        self.loop.call_soon_threadsafe(self.made.put_nowait, made)

    def on_text(self, piece: str) -> None:
        self.check()
        if self.streamed:
            self.loop.call_soon_threadsafe(self.made.put_nowait, piece)

    def check(self) -> None:
        if self.stopped.is_set():
            raise ClientGone

    async def next(self) -> str | Reply:
        item = await self.made.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stopped.set()


async def unless_client_leaves(request: Request, waited: Awaitable[T]) -> T:
    """What `waited` gives; a client that hangs up first cancels it and ends the request with ClientGone."""
    async def hung_up():
        while (await request.receive())["type"] != "http.disconnect":
            pass
    waiting, leaving = asyncio.ensure_future(waited), asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({waiting, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        leaving.cancel()
    if not waiting.done():
        raise ClientGone
    return waiting.result()


class Answerer:
    """The models, and the requests they answer together. Two assistants at most, each loaded on its first
    question and kept, so that requests alternating between models reload nothing: the one in use (following
    the champion, as `ask` does), and the base model while another one is in use. The lock covers choosing and
    loading them; the answers themselves run at once, and the model decodes them together (the ONNX backend's
    batch, inference/batching.py, whose bounded queue answers 503 when full; transformers answers one at a
    time)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.in_use = Assistant(settings)
        self.base: Assistant | None = None  # made under the lock: finding the base model may ask the hub
        self.lock = threading.Lock()

    def models(self) -> list[str]:
        from inference.versions import BASE, Versions
        in_use = Versions(self.settings).in_use()
        return [MODEL_IN_USE] + [in_use] * (in_use != BASE) + [BASE]

    def version(self, model: str) -> str:
        """The version a model name of `models()` answers with; another name is model_not_found."""
        names = self.models()
        if model not in names:
            raise ApiError(f"no model '{model}': GET /v1/models lists {', '.join(names)}", status=404,
                           param="model", code="model_not_found")
        return names[1] if model == MODEL_IN_USE else model

    def assistant(self, version: str) -> Assistant:
        """The assistant of `version`, one of `models()` (its models not loaded yet)."""
        from inference.versions import BASE, Versions
        with self.lock:
            if version == Versions(self.settings).in_use():
                return self.in_use
            if self.base is None:
                self.base = Assistant(self.settings, source=Versions(self.settings).source(BASE),
                                      knowledge_base=self.in_use.knowledge_base)
            return self.base

    def ready(self, version: str) -> Assistant:
        """The assistant of `version` with its model and embedding model loaded: one request loads them, the
        others wait for it."""
        assistant = self.assistant(version)
        with self.lock:
            assistant.follow_champion()
            assistant.model  # noqa: B018 (loaded once, here)
            if assistant.knowledge_base.count_chunks():
                assistant.knowledge_base.embeddings  # noqa: B018
        return assistant

    def answer(self, version: str, question: str, options: dict, generation: Generation) -> Reply:
        """`options` are those of Assistant.ask."""
        generation.check()  # a client gone while waiting its turn costs nothing more
        assistant = self.ready(version)
        answer = assistant.ask(question, on_text=generation.on_text, **options)
        allowed = min(options["max_new_tokens"] or assistant.answer_tokens, assistant.answer_tokens)
        length_reached = not answer.refused and answer.completion_tokens >= allowed
        return Reply(answer, "length" if length_reached else "stop")

    def complete(self, version: str, text: str, options: dict, generation: Generation) -> Reply:
        """`options` are those of Assistant.complete."""
        generation.check()
        assistant = self.ready(version)
        answer = assistant.complete(text, on_text=generation.on_text, **options)
        allowed = min(options["max_new_tokens"] or assistant.answer_tokens, assistant.answer_tokens)
        return Reply(answer, "length" if answer.completion_tokens >= allowed else "stop")


def conversation(messages: list[Message]) -> tuple[str | None, list[dict], str]:
    """The client's system instructions, the earlier turns and the question, as `Assistant.ask` takes them.
    What it cannot serve (tool calls, images, a conversation that does not end with the user) is refused."""
    if len(messages) > MAX_MESSAGES:
        raise ApiError(f"messages: {len(messages)} messages; at most {MAX_MESSAGES} are served (the model reads "
                       "only the latest turns): send the latest ones", param="messages")
    system, turns = [], []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if message.role in ("tool", "function") or message.tool_calls:
            raise ApiError(f"{where}: tool messages are not supported (Apprenti calls no tools)", param=where)
        if message.role not in ("system", "developer", "user", "assistant"):
            raise ApiError(f"{where}: no role '{message.role}': use system, developer, user or assistant",
                           param=where)
        if isinstance(message.content, list):
            others = [part.type for part in message.content if part.type != "text"]
            if others:
                raise ApiError(f"{where}: only text is served, not a part of type '{others[0]}'", param=where)
            text = "".join(part.text or "" for part in message.content)
        else:
            text = message.content or ""
        if not text.strip():
            raise ApiError(f"{where}: the {message.role} message is empty: give it text or leave it out",
                           param=where)
        if message.role in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"role": message.role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise ApiError("messages: the last message must be the question, a user message (a conversation that "
                       "ends with the assistant is not continued)", param="messages")
    return "\n\n".join(system) or None, turns[:-1], turns[-1]["content"]


def one_choice(n: int) -> None:
    if n != 1:
        raise ApiError(f"n: one choice per request is served, not {n}: send the request {n} times", param="n")


def given_text(given: Union[str, list], what: str) -> list[str]:
    """The texts of a prompt or an input, which the API allows as token ids too: not here, where the ids
    would be read with another tokenizer than the client's."""
    texts = [given] if isinstance(given, str) else given
    if any(not isinstance(text, str) for text in texts):
        raise ApiError(f"{what}: token ids are not served (the models here have tokenizers of their own): send "
                       "the text", param=what)
    if not texts or not all(text.strip() for text in texts):
        raise ApiError(f"{what}: give one text or more, none of them empty", param=what)
    return texts


class ChatForm:
    """A chat completion as the API writes it: whole, or in chunks."""

    def __init__(self, model: str):
        self.head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model}

    def whole(self, reply: Reply) -> dict:
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.answer.answer},
                             "finish_reason": reply.finish_reason}],
                "usage": reply.usage(), **extras(reply.answer)}

    def chunk(self, item: str | Reply | None) -> dict:
        """The opening chunk (None), a piece, or the last chunk, which carries the sources."""
        if isinstance(item, Reply):
            choice, more = {"delta": {}, "finish_reason": item.finish_reason}, extras(item.answer)
        else:
            delta = {"role": "assistant", "content": ""} if item is None else {"content": item}
            choice, more = {"delta": delta, "finish_reason": None}, {}
        return {**self.head, "object": "chat.completion.chunk", "choices": [{"index": 0, **choice}], **more}

    def usage_chunk(self, reply: Reply) -> dict:
        return {**self.head, "object": "chat.completion.chunk", "choices": [], "usage": reply.usage()}


class CompletionForm:
    """A plain completion as the API writes it: whole, or in chunks."""

    def __init__(self, model: str):
        self.head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
                     "created": int(time.time()), "model": model}

    def whole(self, reply: Reply) -> dict:
        return {**self.head, "choices": [self.choice(reply.answer.answer, reply.finish_reason)],
                "usage": reply.usage()}

    def chunk(self, item: str | Reply | None) -> dict:
        """The opening chunk (None, empty), a piece, or the last chunk."""
        text, finish = ("", item.finish_reason) if isinstance(item, Reply) else (item or "", None)
        return {**self.head, "choices": [self.choice(text, finish)]}

    def usage_chunk(self, reply: Reply) -> dict:
        return {**self.head, "choices": [], "usage": reply.usage()}

    @staticmethod
    def choice(text: str, finish: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def create_app(settings: Settings, api_key: str | None = None):
    app = FastAPI(title="Apprenti", description=__doc__)
    answerer = Answerer(settings)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        if first.get("type") == "json_invalid":
            return api_error(400, f"the body is not JSON: {first.get('ctx', {}).get('error')} at character "
                                  f"{first['loc'][-1]}")
        where = ".".join(str(part) for part in first.get("loc", ())[1:])
        message = first.get("msg", "invalid request").removeprefix("Value error, ")
        return api_error(400, f"{where}: {message}" if where else message, param=where or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return api_error(error.status_code, str(error.detail), code={413: "body_too_large"}.get(error.status_code))

    @app.exception_handler(ApiError)
    async def not_served(request: Request, error: ApiError):
        return api_error(error.status, str(error), param=error.param, code=error.code)

    @app.exception_handler(ApprentiError)
    async def refused(request: Request, error: ApprentiError):
        return api_error(400, str(error))

    @app.exception_handler(QueueFull)
    async def busy(request: Request, error: QueueFull):
        response = api_error(503, str(error), kind="server_busy", code="queue_full")
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone):
        return Response(status_code=499)  # nginx's "client closed request": no one reads it

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception):
        from common.crash import log_crash
        return api_error(500, log_crash(settings.log_file, "serve", error), kind="server_error")

    async def respond(request: Request, work: Callable[[Generation], Reply], form, stream: bool,
                      stream_options: StreamOptions | None):
        """The reply `work` makes, whole or streamed. A stream begins with its first piece, so that an error
        met before (a prompt that does not fit, a model that cannot load) is an HTTP error, not a broken stream."""
        generation = Generation(work, streamed=stream)
        if not stream:
            try:
                return form.whole(await unless_client_leaves(request, generation.next()))
            finally:
                generation.stop()
        try:
            first = await unless_client_leaves(request, generation.next())
        except BaseException:
            generation.stop()
            raise
        with_usage = bool(stream_options and stream_options.include_usage)
        return StreamingResponse(events(first, generation, form, with_usage), media_type="text/event-stream")

    async def events(first: str | Reply, generation: Generation, form, with_usage: bool) -> AsyncIterator[str]:
        """The reply as server-sent events. A client that hangs up cancels this at its next wait, which stops the
        generation."""
        try:
            yield sse(form.chunk(None))
            item = first
            while not isinstance(item, Reply):
                yield sse(form.chunk(item))
                item = await generation.next()
            yield sse(form.chunk(item))
            if with_usage:
                yield sse(form.usage_chunk(item))
        except ApprentiError as error:  # the response has begun: the error goes in the stream
            yield sse(error_body(str(error)))
        except Exception as error:
            from common.crash import log_crash
            yield sse(error_body(log_crash(settings.log_file, "serve", error), kind="server_error"))
        finally:
            generation.stop()
        yield "data: [DONE]\n\n"

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "apprenti"}
                                           for name in answerer.models()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        one_choice(body.n)
        if body.tools:
            raise ApiError("tools: tool calling is not supported (Apprenti calls no tools)", param="tools")
        system, history, question = conversation(body.messages)
        version = answerer.version(body.model)
        options = {"use_rag": body.rag, "temperature": body.temperature or 0.0,
                   "max_new_tokens": body.max_completion_tokens or body.max_tokens,
                   "stop": stop_texts(body.stop),
                   "history": history, "system": system}
        work = functools.partial(answerer.answer, version, question, options)
        return await respond(request, work, ChatForm(body.model), body.stream, body.stream_options)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        one_choice(body.n)
        texts = given_text(body.prompt, "prompt")
        if len(texts) > 1:
            raise ApiError(f"prompt: one prompt per request is served, not {len(texts)}", param="prompt")
        unserved = [name for name, given in [("suffix", bool(body.suffix)), ("echo", body.echo),
                                             ("logprobs", body.logprobs is not None)] if given]
        if unserved:
            raise ApiError(f"{', '.join(unserved)}: not served by /v1/completions: leave "
                           f"{'them' if len(unserved) > 1 else 'it'} out", param=unserved[0])
        options = {"temperature": body.temperature or 0.0, "max_new_tokens": body.max_tokens,
                   "stop": stop_texts(body.stop)}
        work = functools.partial(answerer.complete, answerer.version(body.model), texts[0], options)
        return await respond(request, work, CompletionForm(body.model), body.stream, body.stream_options)

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingRequest):
        texts = given_text(body.input, "input")
        if body.model != settings.embedding_model:
            answerer.version(body.model)  # the chat models' names are the knowledge base's too
        with answerer.lock:  # the knowledge base and its model are shared with the answers
            embedder = answerer.in_use.knowledge_base.embeddings
            lengths, limit = embedding_lengths(embedder, texts)
            too_long = [number for number, length in enumerate(lengths) if length > limit]
            if too_long:
                raise ApiError(f"input[{too_long[0]}]: {lengths[too_long[0]]} tokens, but the embedding model "
                               f"reads {limit} at most (it would ignore the rest): split the text", param="input")
            vectors = embedder.embed_documents(texts)
        as_base64 = body.encoding_format == "base64"
        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": index,
                          "embedding": packed(vector) if as_base64 else vector}
                         for index, vector in enumerate(vectors)],
                "usage": {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}}

    @app.post("/v1/feedback")
    def feedback(body: FeedbackRequest):
        from feedback.records import Feedback, append
        context = []
        if body.sources:
            with answerer.lock:
                context = [{"id": chunk_id, "text": text}
                           for chunk_id, text in answerer.in_use.knowledge_base.passages(body.sources)]
        entry = Feedback(question=body.question, answers=[{"text": body.answer, "model": body.model}],
                         choice=body.rating, source="api", context=context, correction=body.correction,
                         comment=body.comment, history=body.history)
        append(settings.feedback_file, entry)
        return {"object": "feedback", "id": entry.id}

    return Doorkeeper(BodyLimit(app, MAX_BODY_BYTES), api_key)


def embedding_lengths(embedder, texts: list[str]) -> tuple[list[int], int]:
    """Each text's length in the embedding model's tokens, as it reads them, and how many it reads at most."""
    return embedder.token_counts(texts), embedder.max_tokens


def stop_texts(stop: Union[str, list[str], None]) -> list[str]:
    """The API's `stop`, one text or a list, as a list."""
    return [stop] if isinstance(stop, str) else stop or []


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def extras(answer: Answer) -> dict:
    """Apprenti's additions to a completion: where the answer came from, and whether it was refused."""
    return {"sources": [asdict(source) for source in answer.sources], "refused": answer.refused}


def packed(vector: list[float]) -> str:
    """A vector as the API's base64 form: little-endian float32 (what the openai client asks for)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
