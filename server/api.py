"""The OpenAI-compatible HTTP API, so that the tools people already use (the `openai` client, LangChain,
Open WebUI, editors) can talk to Apprenti.

Answers are grounded in the knowledge base as `ask` does: the last user message is the question, the
sources come back in an extra field ("sources"), and a question nothing relevant answers is refused. One
model answers one request at a time: concurrent requests wait their turn (FastAPI runs each in a thread
of its pool, and they queue on the assistant's lock).
"""
from __future__ import annotations

import base64
import hmac
import json
import queue
import struct
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Iterator, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from common.config import Settings
from common.errors import ApprentiError
from rag_module import Answer, Assistant

MAX_BODY_BYTES = 1_000_000  # a question with its history; bigger bodies are refused before they are read
MODEL_IN_USE = "apprenti"  # always answers with the champion, whatever its version id


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    model: str = MODEL_IN_USE
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    rag: bool = True  # an extension: False asks the model alone, without retrieval or refusal


class EmbeddingRequest(BaseModel):
    model: str = ""
    input: Union[str, list[str]]
    encoding_format: Literal["float", "base64"] = "float"


class FeedbackRequest(BaseModel):
    question: str
    answer: str
    rating: Literal["good", "bad"]
    correction: str = ""
    comment: str = ""
    sources: list[str] = []  # the chunk ids of the answer's sources, as the answer gave them
    model: str | None = None


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The OpenAI API's error format, which its clients turn into their own exceptions."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def api_error(status: int, message: str, **details) -> JSONResponse:
    return JSONResponse(error_body(message, **details), status_code=status)


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


class Answerer:
    """The assistant behind a lock: one generation at a time, the others waiting in line."""

    def __init__(self, settings: Settings):
        self.assistant = Assistant(settings)  # the models load on the first question
        self.lock = threading.Lock()

    def models(self) -> list[str]:
        from inference.versions import BASE, Versions
        champion = Versions(self.assistant.settings).champion()
        return [MODEL_IN_USE] + [champion] * (champion != BASE) + [BASE]

    def answer(self, question: str, options: dict) -> Reply:
        """`options` are those of Assistant.ask, and "model": a name of `models()`."""
        from inference.versions import BASE
        options = dict(options)
        model = options.pop("model")
        with self.lock:
            # The base model when asked for by name; the model in use otherwise (which may be the base too).
            self.assistant.settings.use_finetuned = model != BASE
            answer = self.assistant.ask(question, **options)
            return Reply(answer, self.finish_reason(answer, options["max_new_tokens"]))

    def finish_reason(self, answer, max_new_tokens: int | None) -> str:
        """"length" when the answer used all the tokens it was allowed, else "stop"."""
        if answer.refused:
            return "stop"
        allowed = min(max_new_tokens or self.assistant.answer_tokens, self.assistant.answer_tokens)
        return "length" if len(self.assistant.model.text_ids(answer.answer)) >= allowed else "stop"

    def pieces(self, question: str, options: dict) -> Iterator:
        """The answer's pieces as they are made, then the Reply. Generation runs in a thread of its own; a
        client that goes away stops it at the next piece."""
        made, gone = queue.Queue(), threading.Event()

        def on_text(piece: str) -> None:
            if gone.is_set():
                raise ClientGone
            made.put(piece)

        def work() -> None:
            try:
                made.put(self.answer(question, {**options, "on_text": on_text}))
            except BaseException as error:  # handed to the reading side
                made.put(error)

        threading.Thread(target=work, daemon=True).start()
        try:
            while True:
                item = made.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Reply):
                    return
        finally:
            gone.set()


class ClientGone(Exception):
    pass


@dataclass
class Reply:
    answer: Answer
    finish_reason: str  # as the API says it: "stop" or "length"


def create_app(settings: Settings, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="Apprenti", description=__doc__)
    answerer = Answerer(settings)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return api_error(401, "a wrong or missing API key (Authorization: Bearer KEY)",
                                 code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:])
        return api_error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return api_error(error.status_code, str(error.detail))

    @app.exception_handler(ApprentiError)
    async def refused(request: Request, error: ApprentiError):
        return api_error(400, str(error))

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception):
        from common.crash import log_crash
        return api_error(500, log_crash(settings.log_file, "serve", error), kind="server_error")

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "apprenti"}
                                           for name in answerer.models()]}

    @app.post("/v1/chat/completions")
    def chat_completions(request: ChatRequest):
        question = next((m.text() for m in reversed(request.messages) if m.role == "user"), "").strip()
        if not question:
            raise ApprentiError("messages: there is no user message with text to answer")
        options = {"use_rag": request.rag, "temperature": request.temperature or 0.0,
                   "max_new_tokens": request.max_completion_tokens or request.max_tokens,
                   "stop": [request.stop] if isinstance(request.stop, str) else request.stop or []}
        if request.model not in answerer.models():
            raise HTTPException(404, f"no model '{request.model}': GET /v1/models lists "
                                     f"{', '.join(answerer.models())}")
        options["model"] = request.model
        reply = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": request.model}
        if not request.stream:
            done = answerer.answer(question, options)
            return {**reply, "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": done.answer.answer},
                                 "finish_reason": done.finish_reason}],
                    **extras(done.answer)}
        return StreamingResponse(events(answerer, question, options, reply), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    def embeddings(request: EmbeddingRequest):
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or not all(text.strip() for text in texts):
            raise ApprentiError("input: give one text or more, none of them empty")
        with answerer.lock:  # the knowledge base and its model are shared with the answers
            vectors = answerer.assistant.knowledge_base.embeddings.embed_documents(texts)
        as_base64 = request.encoding_format == "base64"
        return {"object": "list", "model": request.model or settings.embedding_model,
                "data": [{"object": "embedding", "index": index,
                          "embedding": packed(vector) if as_base64 else vector}
                         for index, vector in enumerate(vectors)],
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    @app.post("/v1/feedback")
    def feedback(request: FeedbackRequest):
        from feedback.records import Feedback, append
        context = []
        if request.sources:
            with answerer.lock:
                context = [{"id": chunk_id, "text": text}
                           for chunk_id, text in answerer.assistant.knowledge_base.passages(request.sources)]
        entry = Feedback(question=request.question, answers=[{"text": request.answer, "model": request.model}],
                         choice=request.rating, source="api", context=context, correction=request.correction,
                         comment=request.comment)
        append(settings.feedback_file, entry)
        return {"object": "feedback", "id": entry.id}

    return BodyLimit(app, MAX_BODY_BYTES)


def events(answerer: Answerer, question: str, options: dict, reply: dict) -> Iterator[str]:
    """The answer as server-sent events, in the API's chunks; the last one carries the sources."""

    def event(delta: dict, finish: str | None = None, **more) -> str:
        chunk = {**reply, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
        for item in answerer.pieces(question, options):
            if isinstance(item, Reply):
                yield event({}, item.finish_reason, **extras(item.answer))
            else:
                yield event({"content": item})
    except ApprentiError as error:  # the response has begun: the error goes in the stream
        yield f"data: {json.dumps(error_body(str(error)))}\n\n"
    except Exception as error:
        from common.crash import log_crash
        message = log_crash(answerer.assistant.settings.log_file, "serve", error)
        yield f"data: {json.dumps(error_body(message, kind='server_error'))}\n\n"
    yield "data: [DONE]\n\n"


def extras(answer) -> dict:
    """Apprenti's additions to a completion: where the answer came from, and whether it was refused."""
    return {"sources": [asdict(source) for source in answer.sources], "refused": answer.refused}


def packed(vector: list[float]) -> str:
    """A vector as the API's base64 form: little-endian float32 (what the openai client asks for)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
