"""A recording pass-through to a live OpenAI-compatible endpoint, for `pipewarden eval --llm openai`: the planner
talks to it on 127.0.0.1, it forwards each request unchanged (Authorization included) to the upstream base URL
and counts the calls and the tokens the upstream's `usage` reports, so live runs are scored like mock ones.

Public names: `RecordingProxy`.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class RecordingProxy:
    """Forward `/v1/...` to `upstream` (a base URL ending in `/v1` or not); count calls and tokens."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", timeout_s: float = 120.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.timeout_s = timeout_s
        self.port: int | None = None
        self.calls = 0
        self.requests_seen = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the recording proxy is not started; use it as a context manager")
        return f"http://{self.host}:{self.port}/v1"

    def _target(self, path: str) -> str:
        rest = path.split("/v1", 1)[1] if "/v1" in path else path
        base = self.upstream if self.upstream.endswith("/v1") else self.upstream + "/v1"
        return base + rest

    def _app(self) -> Any:
        import httpx
        from fastapi import FastAPI
        from fastapi.responses import Response

        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        proxy = self

        async def forward(request: Any) -> Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type",
                                                                               "openai-organization", "openai-project")}
            async with httpx.AsyncClient(timeout=proxy.timeout_s) as client:
                upstream = await client.request(request.method, proxy._target(request.url.path),
                                                content=await request.body(), headers=headers)
            try:
                usage = upstream.json().get("usage") if upstream.status_code == 200 else None
            except ValueError:
                usage = None
            with proxy._lock:
                if request.url.path.rstrip("/").endswith("/chat/completions"):
                    proxy.requests_seen += 1
                if upstream.status_code != 200:
                    proxy.errors.append(f"HTTP {upstream.status_code}")
                if isinstance(usage, dict):
                    proxy.calls += 1
                    proxy.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    proxy.completion_tokens += int(usage.get("completion_tokens") or 0)
            return Response(upstream.content, status_code=upstream.status_code,
                            media_type=upstream.headers.get("content-type", "application/json"))

        app.add_route("/{path:path}", forward, methods=["GET", "POST"])
        return app

    def __enter__(self) -> RecordingProxy:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self._app(), log_level="warning", access_log=False,
                                                     lifespan="off", timeout_graceful_shutdown=1,
                                                     log_config=None))  # as mock_llm: no dictConfig
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name=f"eval-proxy-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the recording proxy on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
