"""A fake of Slack's Web API for tests and the benchmark, and the signed requests Slack would send us.

`FakeSlack` is a real HTTP server on 127.0.0.1 (a thread): the real `slack_sdk.WebClient(base_url=fake.url)`
talks to it. It implements `auth.test`, `chat.postMessage`, `chat.update`, `chat.postEphemeral` and `views.open`
the way Slack answers them (`{"ok": true, ...}`, channel names resolved to channel ids, message timestamps), checks
the bot token, records every call (`calls`, `wait_for`) and keeps each message as it now reads (`messages`), so a
test can assert on what a person would see. `fail(method, error)` makes the next calls of a method answer
`{"ok": false, "error": ...}`.

The other half, Slack calling us: `block_actions_payload` / `view_submission_payload` build interaction payloads,
`signed_headers` signs a body with a signing secret (HMAC-SHA256, `v0:{timestamp}:{body}`), and `form_body`
encodes a payload the way Slack posts it (`payload=<json>`, form-urlencoded).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

TEAM_ID = "T0PIPEWARD"
BOT_USER_ID = "U0PWBOT"
BOT_ID = "B0PWBOT"


@dataclass
class SlackCall:
    """One Web API call as the fake received it."""

    method: str
    args: dict[str, Any]
    token: str | None


@dataclass
class SlackMessage:
    """A message as it now reads in its channel (after any `chat.update`)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: int = 0


@dataclass
class FakeSlack:
    """Slack's Web API on loopback. Use as a context manager, or `start()` / `stop()`."""

    token: str = "xoxb-fake-bot-token"
    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[tuple[str, str], SlackMessage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._failures: dict[str, list[str]] = {}
        self._channels: dict[str, str] = {}
        self._ts = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-slack", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The Web API base URL, for `WebClient(base_url=...)` / `PIPEWARDEN_SLACK_API_URL`."""
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/"

    # ------------------------------------------------------------------ test helpers
    def fail(self, method: str, error: str = "internal_error", times: int = 1) -> None:
        """Make the next `times` calls of `method` answer `{"ok": false, "error": error}`."""
        with self._cond:
            self._failures.setdefault(method, []).extend([error] * times)

    def channel_id(self, name: str) -> str:
        """The id the fake gives a channel name (`#flights-data` -> `C...`); ids are returned unchanged."""
        name = name.lstrip("#")
        if name.startswith("C") and name.upper() == name:
            return name
        with self._cond:
            if name not in self._channels:
                self._channels[name] = "C" + hashlib.sha1(name.encode()).hexdigest()[:9].upper()
            return self._channels[name]

    def calls_to(self, method: str) -> list[SlackCall]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[SlackCall]:
        """Block until `method` was called at least `count` times (raises AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [c for c in self.calls if c.method == method]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [c.method for c in self.calls]
                    raise AssertionError(f"{method} called {len(got)} times, wanted {count} (calls: {seen})")
                self._cond.wait(left)

    def wait_until(self, predicate: Any, what: str, timeout: float = 10.0) -> None:
        """Block until `predicate(fake)` holds, re-checked after every call (AssertionError naming `what`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what} (calls: {[c.method for c in self.calls]})")
                self._cond.wait(left)

    def message(self, channel: str, ts: str) -> SlackMessage:
        with self._cond:
            return self.messages[(self.channel_id(channel), ts)]

    def top_level(self) -> list[SlackMessage]:
        """Messages posted to a channel, not in a thread."""
        with self._cond:
            return [m for m in self.messages.values() if m.thread_ts is None]

    # ------------------------------------------------------------------ the API
    def _next_ts(self) -> str:
        self._ts += 1
        return f"1700000000.{self._ts:06d}"

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        method = parts.path.rsplit("/", 1)[-1]
        args: dict[str, Any] = dict(parse_qsl(parts.query))
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        ctype = req.headers.get("Content-Type", "")
        if raw:
            if "json" in ctype:
                args.update(json.loads(raw))
            else:
                args.update(parse_qsl(raw.decode()))
        auth = req.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
        with self._cond:
            self.calls.append(SlackCall(method, args, token))
            answer = self._answer(method, args, token)
            self._cond.notify_all()
        body = json.dumps(answer).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        if token != self.token:
            return {"ok": False, "error": "not_authed" if not token else "invalid_auth"}
        if self._failures.get(method):
            return {"ok": False, "error": self._failures[method].pop(0)}
        if method == "auth.test":
            return {"ok": True, "url": "https://pipewarden-test.slack.com/", "team": "pipewarden-test",
                    "user": "pipewarden", "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID}
        if method == "chat.postMessage":
            return self._post(args)
        if method == "chat.update":
            return self._update(args)
        if method == "chat.postEphemeral":
            if not args.get("channel") or not args.get("user"):
                return {"ok": False, "error": "invalid_arguments"}
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "views.open":
            view = args.get("view")
            if not args.get("trigger_id") or not view:
                return {"ok": False, "error": "invalid_arguments"}
            view = json.loads(view) if isinstance(view, str) else view
            return {"ok": True, "view": {**view, "id": "V0REJECT" + self._next_ts()[-4:]}}
        return {"ok": False, "error": "unknown_method"}

    def _post(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        channel = self.channel_id(str(args["channel"]))
        thread_ts = args.get("thread_ts")
        if thread_ts and (channel, thread_ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        ts = self._next_ts()
        blocks = _blocks(args.get("blocks"))
        self.messages[(channel, ts)] = SlackMessage(channel, ts, str(args.get("text", "")), blocks, thread_ts)
        message = {"type": "message", "text": args.get("text", ""), "blocks": blocks, "ts": ts, "bot_id": BOT_ID}
        if thread_ts:
            message["thread_ts"] = thread_ts
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        msg = self.messages.get((channel, ts))  # like Slack: an id, not a #name
        if msg is None:
            return {"ok": False, "error": "message_not_found" if channel.startswith("C") else "channel_not_found"}
        msg.text = str(args.get("text", msg.text))
        if "blocks" in args:
            msg.blocks = _blocks(args["blocks"])
        msg.updates += 1
        return {"ok": True, "channel": channel, "ts": ts, "text": msg.text}


def _blocks(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    return json.loads(value) if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------- Slack calling us
def signature(secret: str, timestamp: str, body: str | bytes) -> str:
    """Slack's request signature: `v0=` + HMAC-SHA256(secret, `v0:{timestamp}:{body}`)."""
    raw = body if isinstance(body, bytes) else body.encode()
    base = b"v0:" + timestamp.encode() + b":" + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: str | bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request body, signed with `secret` at `timestamp` (default: now)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(secret, ts, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form_body(payload: dict[str, Any]) -> str:
    """An interaction payload encoded the way Slack posts it."""
    return urlencode({"payload": json.dumps(payload)})


def block_actions_payload(
    *, user_id: str, action_id: str, value: str, channel: str, message_ts: str, trigger_id: str = "1337.42.trigger",
) -> dict[str, Any]:
    """A button click (`block_actions`) on a message, as Slack sends it."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0PIPEWARD",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "pipewarden-test"},
        "channel": {"id": channel, "name": "flights-data"},
        "message": {"type": "message", "ts": message_ts, "bot_id": BOT_ID, "text": ""},
        "response_url": "https://hooks.invalid/actions/T0/1/abc",
        "actions": [{
            "action_id": action_id, "block_id": "decide", "value": value, "type": "button",
            "text": {"type": "plain_text", "text": action_id.title()}, "action_ts": f"{time.time():.6f}",
        }],
    }


def view_submission_payload(
    *, user_id: str, view: dict[str, Any], values: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """A modal's submission (`view_submission`): `view` as we opened it, `values` as block_id -> action_id -> value."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "pipewarden-test"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0PIPEWARD",
        "token": "legacy-verification-token",
        "trigger_id": "1337.43.trigger",
        "view": {
            **view, "id": "V0REJECT", "team_id": TEAM_ID, "app_id": "A0PIPEWARD", "bot_id": BOT_ID,
            "state": {"values": values}, "hash": "1700000000.abc",
        },
        "response_urls": [],
    }
