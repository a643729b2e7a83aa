"""A scripted, OpenAI-compatible chat endpoint for tests and offline evals: no network, no model.

A script is a list of steps; each request to `POST /v1/chat/completions` takes the next one:

- `answer(obj)`: a JSON content answer (the object is serialized into `message.content`);
- `text(s)`: raw content, e.g. invalid JSON;
- `refusal(s)`: a refusal (`message.refusal`, no content);
- `tool_call(name, arguments)`: a function tool call instead of content;
- `http_error(status, message)`: an HTTP error with an OpenAI-shaped error body;
- `delay(seconds, then=step)`: wait, then answer with `then` (to trigger client timeouts).

Steps are pydantic models discriminated by `kind`, so a scenario file can hold them as plain dicts. When the
script runs out, the endpoint answers HTTP 500 "script exhausted". Every response carries `usage` token counts
(about 4 characters per token). Every request is recorded (`.requests`), so a test can read the prompts sent.

Two ways to serve a script:

- `MockLLMServer(script)`: a real HTTP server (FastAPI + uvicorn) on 127.0.0.1 and a free port, in a background
  thread; a context manager; point the client at `.base_url` (ends in `/v1`).
- `mock_transport(script)`: an `httpx.MockTransport` to inject with `openai.OpenAI(http_client=httpx.Client(
  transport=...))`; no socket. A delay step longer than the request's read timeout raises `httpx.ReadTimeout`.

Public names: `Step`, `Answer`, `Text`, `Refusal`, `ToolCall`, `HttpError`, `Delay`, `answer`, `text`, `refusal`,
`tool_call`, `http_error`, `delay`, `RecordedRequest`, `ScriptedLLM`, `MockLLMServer`, `mock_transport`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MOCK_MODEL = "mock-model"


# --------------------------------------------------------------------------- script steps
class Answer(BaseModel):
    """Answer with this JSON value as the message content."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["answer"] = "answer"
    content: Any


class Text(BaseModel):
    """Answer with this raw text as the message content (invalid JSON, prose, an empty string)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["text"] = "text"
    text: str


class Refusal(BaseModel):
    """Refuse: `message.refusal` is set and `message.content` is null."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["refusal"] = "refusal"
    refusal: str = "I'm sorry, I can't help with that."


class ToolCall(BaseModel):
    """Answer with one function tool call instead of content."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tool_call"] = "tool_call"
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class HttpError(BaseModel):
    """Fail with this HTTP status and an OpenAI-shaped error body."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["http_error"] = "http_error"
    status: int = 500
    message: str = "mock server error"


class Delay(BaseModel):
    """Wait `seconds`, then reply with `then` (default: the text 'late answer')."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["delay"] = "delay"
    seconds: float
    then: Step | None = None


Step = Annotated[Answer | Text | Refusal | ToolCall | HttpError | Delay, Field(discriminator="kind")]
Delay.model_rebuild()
StepAdapter: TypeAdapter[Step] = TypeAdapter(Step)


def answer(content: Any) -> Answer:
    """A JSON content answer (a dict, list, or a pydantic model, dumped to JSON)."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return Answer(content=content)


def text(s: str) -> Text:
    return Text(text=s)


def refusal(s: str = "I'm sorry, I can't help with that.") -> Refusal:
    return Refusal(refusal=s)


def tool_call(name: str, arguments: dict[str, Any] | str | None = None) -> ToolCall:
    return ToolCall(name=name, arguments=arguments if arguments is not None else {})


def http_error(status: int = 500, message: str = "mock server error") -> HttpError:
    return HttpError(status=status, message=message)


def delay(seconds: float, then: Step | None = None) -> Delay:
    return Delay(seconds=seconds, then=then)


# --------------------------------------------------------------------------- recording
class RecordedRequest(BaseModel):
    """One request the mock received; the Authorization header is redacted."""

    method: str
    path: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return self.body["messages"]
        return []

    def contents(self, role: str) -> list[str]:
        """The text of every message with this role, in order."""
        out: list[str] = []
        for m in self.messages:
            if m.get("role") != role:
                continue
            c = m.get("content")
            if isinstance(c, str):
                out.append(c)
            elif isinstance(c, list):  # content parts
                out.append("".join(p.get("text", "") for p in c if isinstance(p, dict)))
        return out

    @property
    def system_prompt(self) -> str:
        return "\n".join(self.contents("system") + self.contents("developer"))

    @property
    def user_text(self) -> str:
        return "\n".join(self.contents("user"))


class _Reply(BaseModel):
    status: int
    payload: dict[str, Any]
    delay_s: float = 0.0


def _tokens(s: str) -> int:
    return max(1, len(s) // 4) if s else 0


class ScriptedLLM:
    """The script and the request log, shared by the HTTP server and the mock transport. Thread-safe."""

    def __init__(self, script: Iterable[Step | dict[str, Any]]) -> None:
        self.script: list[Step] = [s if isinstance(s, BaseModel) else StepAdapter.validate_python(s) for s in script]
        self.requests: list[RecordedRequest] = []
        self.calls = 0  # chat completions answered with a reply (not an error)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._next = 0
        self._lock = threading.Lock()

    @property
    def requests_seen(self) -> int:
        """Chat completion requests received, whatever the reply (an error or a timeout included)."""
        return len(self.chat_requests)

    @property
    def total_tokens(self) -> int:
        """Tokens of every reply the mock sent, as its `usage` reported them."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def remaining(self) -> int:
        return len(self.script) - self._next

    def handle(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> _Reply:
        """Record one request and produce its reply (with the delay to wait before sending it)."""
        body: Any = None
        bad_json = False
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body, bad_json = raw_body.decode("utf-8", "replace"), True
        redacted = {k.lower(): ("***" if k.lower() == "authorization" else v) for k, v in headers.items()}
        path = "/" + path.lstrip("/")
        with self._lock:
            self.requests.append(RecordedRequest(method=method.upper(), path=path, headers=redacted, body=body))
            if method.upper() == "GET" and path.rstrip("/").endswith("/v1/models"):
                return _Reply(status=200, payload={"object": "list", "data": [_model_card()]})
            if method.upper() != "POST" or not path.rstrip("/").endswith("/v1/chat/completions"):
                return _error(404, f"the mock serves POST /v1/chat/completions and GET /v1/models, not {method} {path}")
            if bad_json or not isinstance(body, dict):
                return _error(400, "the request body is not a JSON object")
            if body.get("stream"):
                return _error(400, "the mock does not stream; call without stream=True")
            if self._next >= len(self.script):
                return _error(500, f"mock script exhausted after {len(self.script)} steps", code="script_exhausted")
            step = self.script[self._next]
            n = self._next
            self._next += 1
        reply = _reply_for(step, body, n)
        usage = reply.payload.get("usage")
        if isinstance(usage, dict):
            with self._lock:
                self.calls += 1
                self.prompt_tokens += int(usage.get("prompt_tokens", 0))
                self.completion_tokens += int(usage.get("completion_tokens", 0))
        return reply


def _model_card() -> dict[str, Any]:
    return {"id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "pipewarden-evals"}


def _error(status: int, message: str, code: str | None = None) -> _Reply:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _Reply(status=status, payload={"error": {"message": message, "type": kind, "param": None, "code": code}})


def _reply_for(step: Step, body: dict[str, Any], n: int, waited: float = 0.0) -> _Reply:
    if isinstance(step, Delay):
        then = step.then if step.then is not None else Text(text="late answer")
        return _reply_for(then, body, n, waited + step.seconds)
    if isinstance(step, HttpError):
        return _error(step.status, step.message).model_copy(update={"delay_s": waited})
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    finish = "stop"
    if isinstance(step, Answer):
        message["content"] = json.dumps(step.content)
    elif isinstance(step, Text):
        message["content"] = step.text
    elif isinstance(step, Refusal):
        message["refusal"] = step.refusal
    elif isinstance(step, ToolCall):
        args = step.arguments if isinstance(step.arguments, str) else json.dumps(step.arguments)
        message["tool_calls"] = [
            {"id": f"call_mock_{n}", "type": "function", "function": {"name": step.name, "arguments": args}}
        ]
        finish = "tool_calls"
    prompt = "".join(json.dumps(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict))
    produced = (message["content"] or "") + (message["refusal"] or "") + (json.dumps(message["tool_calls"]) if "tool_calls" in message else "")
    prompt_tokens, completion_tokens = _tokens(prompt), _tokens(produced)
    payload = {
        "id": f"chatcmpl-mock-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or MOCK_MODEL),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return _Reply(status=200, payload=payload, delay_s=waited)


# --------------------------------------------------------------------------- the mock transport
def mock_transport(script: Iterable[Step | dict[str, Any]] | ScriptedLLM) -> httpx.MockTransport:
    """An `httpx.MockTransport` serving the script; `transport.llm` is the ScriptedLLM (its `.requests`)."""
    llm = script if isinstance(script, ScriptedLLM) else ScriptedLLM(script)

    def handler(request: httpx.Request) -> httpx.Response:
        reply = llm.handle(request.method, request.url.path, dict(request.headers), request.read())
        if reply.delay_s:
            read_timeout = (request.extensions.get("timeout") or {}).get("read")
            if read_timeout is not None and reply.delay_s >= read_timeout:
                time.sleep(read_timeout)
                raise httpx.ReadTimeout(f"mock: the reply takes {reply.delay_s}s, over the {read_timeout}s read timeout", request=request)
            time.sleep(reply.delay_s)
        return httpx.Response(reply.status, json=reply.payload)

    transport = httpx.MockTransport(handler)
    transport.llm = llm  # type: ignore[attr-defined]
    return transport


# --------------------------------------------------------------------------- the HTTP server
class MockLLMServer:
    """The script served over HTTP on 127.0.0.1 (a free port) by uvicorn in a background thread.

    >>> with MockLLMServer([answer({"renames": [], "casts": [], "rationale": "", "cited_chunks": []})]) as srv:
    ...     client = openai.OpenAI(api_key="x", base_url=srv.base_url)
    """

    def __init__(self, script: Iterable[Step | dict[str, Any]] | ScriptedLLM, *, host: str = "127.0.0.1") -> None:
        self.llm = script if isinstance(script, ScriptedLLM) else ScriptedLLM(script)
        self.host = host
        self.port: int | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the mock LLM server is not started; use it as a context manager or call start()")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.llm.requests

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return self.llm.chat_requests

    def _app(self) -> Any:
        import asyncio

        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        app = FastAPI(title="pipewarden mock LLM", docs_url=None, redoc_url=None, openapi_url=None)

        async def serve(request: Any) -> JSONResponse:
            llm = self.llm  # the script loaded when the request arrived (`load`)
            reply = llm.handle(request.method, request.url.path, dict(request.headers), await request.body())
            deadline = time.monotonic() + reply.delay_s
            while time.monotonic() < deadline:  # wait, but stop early once the client has hung up
                if await request.is_disconnected():
                    break
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            return JSONResponse(reply.payload, status_code=reply.status)

        # a raw (Starlette) route: every path and method reaches `handle`, which records it and answers 404s
        app.add_route("/{path:path}", serve, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        return app

    def load(self, script: Iterable[Step | dict[str, Any]] | ScriptedLLM) -> ScriptedLLM:
        """Serve `script` from now on, with a fresh log (the eval runner keeps one server per process and loads
        each scenario's script: starting and stopping uvicorn took 0.15-0.2 s per scenario). A request that arrived
        before keeps the script it was answered from."""
        self.llm = script if isinstance(script, ScriptedLLM) else ScriptedLLM(script)
        return self.llm

    def start(self) -> MockLLMServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        # log_config=None: uvicorn's default logging config goes through logging.config.dictConfig, which shuts
        # down every handler the process has; with Prefect loaded that flushes its API log handler, a 5 s wait
        # per server start (per eval scenario), and leaves Prefect's handlers closed
        config = uvicorn.Config(
            self._app(), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1,
            log_config=None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"mock-llm-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the mock LLM server on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self.port = None

    def __enter__(self) -> MockLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
