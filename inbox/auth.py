"""Who is signed in to the web inbox, and proof that a form came from the inbox's own pages.

Owns:
- the session secret: `settings.session_secret`, or else one generated once and kept in
  `PIPEWARDEN_HOME/session_secret` (mode 0600), so sessions survive a restart of `pipewarden serve`;
- sign-in with a personal token (`pipewarden approvers token NAME` prints one; the state DB keeps only its
  hash) into a server-side session (`pipewarden.sessions`): the signed cookie (Starlette's `SessionMiddleware`,
  itsdangerous) carries only a random session key and the CSRF token; who is signed in is read from the state DB
  on every request, so signing out or revoking the token ends the session at once, in every server process;
- throttling and auditing failed sign-ins (the login form and bearer tokens): counted per client address and per
  account, refused with HTTP 429 and `Retry-After` past the limit (`SignInThrottled`), each failure audited as
  `sign_in_failed` and each block as `sign_in_throttled`;
- the trusted proxy header (`settings.trusted_user_header`, e.g. `X-Forwarded-User`), believed only when it is set;
- a CSRF token per session, carried by every form and checked on every form POST;
- bearer tokens (`Authorization: Bearer <token>`) for `/api/*`.

Who may decide what is not decided here: `inbox.service.decide` checks the signed-in approver against the
approval policy. This module only says who is asking.

Public names: `install(app)`, `session_secret()`, `page_user(request)`, `sign_in(request, token, store)`,
`sign_out(request)`, `csrf_token(request)`, `check_csrf(request, submitted)`, `bearer_actor(request, store)`,
`client_address(request)`, `safe_next(url)`, `SignInRequired`, `SignInThrottled`, `CsrfRejected`, `CSRF_FIELD`,
`SESSION_COOKIE`, `SIGN_IN_FAILED`, `SIGN_IN_THROTTLED`.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipewarden.errors import Forbidden, UserError
from pipewarden.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from pipewarden.sessions import SessionStore
    from pipewarden.store import StateStore

SESSION_COOKIE = "pw_session"
SESSION_MAX_AGE_S = 12 * 3600
SECRET_FILE = "session_secret"
CSRF_FIELD = "csrf_token"
SESSION_KEY = "sid"  # the random key of the server-side session (the state DB keeps its sha256)
CSRF_KEY = "csrf"
TOKEN_HINT = "ask for a personal token (`pipewarden approvers token NAME` prints one) and sign in with it"
SIGN_IN_FAILED = "sign_in_failed"  # audit action of a refused token (login form or bearer)
SIGN_IN_THROTTLED = "sign_in_throttled"  # audit action when failures start being refused (429)
ANONYMOUS = "anonymous"  # the audit actor of a failed sign-in whose token names nobody


class SignInRequired(UserError):
    """No identity, or one that is not believed (unknown or revoked token). HTTP 401. Nothing was changed."""


class SignInThrottled(UserError):
    """Too many failed sign-ins from this address (or for this account): HTTP 429 with Retry-After. The token was
    not even looked at. Nothing was changed."""

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed sign-ins from here; try again in {retry_after_s} s",
                         hint="check that you paste the whole token; an admin can issue a new one with "
                              "`pipewarden approvers token NAME`")


class CsrfRejected(Forbidden):
    """A form POST without the CSRF token of the session that rendered the form. HTTP 403. Nothing was changed."""


# --------------------------------------------------------------------------- the session secret
def session_secret(settings: Settings | None = None) -> str:
    """The key that signs session cookies: the setting, or a random one generated once into home."""
    settings = settings or get_settings()
    if settings.session_secret is not None and settings.session_secret.get_secret_value().strip():
        return settings.session_secret.get_secret_value()
    path = settings.ensure_home() / SECRET_FILE
    if not path.exists():
        _write_once(path, secrets.token_urlsafe(48))
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < 32:
        raise UserError(f"{path}: the session secret is too short ({len(secret)} characters)",
                        hint=f"delete {path} to have a new one generated, or set PIPEWARDEN_SESSION_SECRET")
    return secret


def _write_once(path: Path, content: str) -> None:
    """Write `path` atomically unless another process won the race (then its secret is used)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content + "\n")
        try:
            os.link(tmp, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def install(app: FastAPI, settings: Settings | None = None) -> None:
    """Add the signed session cookie to `app` (HttpOnly, SameSite=Lax; Secure when served over https)."""
    from starlette.middleware.sessions import SessionMiddleware

    settings = settings or get_settings()
    public_url = str(getattr(settings, "public_url", "") or "")
    app.add_middleware(
        SessionMiddleware, secret_key=session_secret(settings), session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S, same_site="lax", https_only=public_url.startswith("https://"),
    )


# --------------------------------------------------------------------------- who is asking
def _sessions(store: StateStore | None = None) -> SessionStore:
    from pipewarden.sessions import SessionStore
    from pipewarden.store import StateStore

    return SessionStore((store or StateStore()).engine)


def client_address(request: Request) -> str:
    """The client's address as the server sees it (uvicorn applies X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client else "unknown"


def page_user(request: Request) -> str | None:
    """The signed-in approver for a page: the trusted proxy header when configured and present, else the live
    server-side session named by the cookie (read once per request)."""
    header = get_settings().trusted_user_header
    if header:
        value = request.headers.get(header, "").strip()
        if value:
            return value
    cached = getattr(request.state, "pw_user", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    key = request.session.get(SESSION_KEY)
    user = _sessions().approver_for(str(key)) if key else None
    if key and user is None:  # ended, expired or revoked: forget it, so the browser is asked to sign in again
        request.session.pop(SESSION_KEY, None)
    request.state.pw_user = user
    return user


def _throttle_keys(request: Request, account: str | None = None) -> list[str]:
    return [f"address:{client_address(request)}"] + ([f"account:{account}"] if account else [])


def _check_throttle(request: Request, sessions: SessionStore) -> None:
    wait = sessions.retry_after(_throttle_keys(request))
    if wait is not None:
        raise SignInThrottled(wait)


def _failed(request: Request, token: str, store: StateStore, sessions: SessionStore, via: str) -> None:
    """Audit a refused token and count it against the client's address (and the account, for a revoked token of
    a known approver); the failure that starts a block is audited too."""
    owner = sessions.revoked_owner(token) if token else None
    address = client_address(request)
    reason = "no token" if not token else ("revoked token" if owner else "unknown token")
    store.record(SIGN_IN_FAILED, owner or ANONYMOUS, {"address": address, "via": via, "reason": reason})
    blocked = sessions.record_failure(_throttle_keys(request, owner))
    if blocked:
        store.record(SIGN_IN_THROTTLED, owner or ANONYMOUS,
                     {"address": address, "via": via, "blocked": blocked})


def sign_in(request: Request, token: str, store: StateStore) -> str:
    """Exchange a personal token for a fresh server-side session (a new CSRF token too: no session fixation).

    SignInThrottled (429) while this address or account is blocked; SignInRequired (401, audited, counted) for
    an unknown or revoked token."""
    sessions = _sessions(store)
    _check_throttle(request, sessions)
    token = token.strip()
    started = sessions.start(token, SESSION_MAX_AGE_S) if token else None
    if started is None:
        _failed(request, token, store, sessions, "web")
        raise SignInRequired("that token is unknown or has been revoked; you are not signed in", hint=TOKEN_HINT)
    old = request.session.get(SESSION_KEY)
    if old:
        sessions.end(str(old))
    request.session.clear()
    request.session[SESSION_KEY] = started.key
    request.session[CSRF_KEY] = secrets.token_urlsafe(32)
    request.state.pw_user = started.approver
    return started.approver


def sign_out(request: Request) -> None:
    """End the server-side session (the old cookie is refused from now on) and clear the cookie."""
    key = request.session.get(SESSION_KEY)
    if key:
        _sessions().end(str(key))
    request.session.clear()
    request.state.pw_user = None


def bearer_actor(request: Request, store: StateStore) -> str:
    """The approver a `/api/*` request speaks for, from `Authorization: Bearer <token>`; SignInRequired if none,
    SignInThrottled while the client's address is blocked after failed tokens."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise SignInRequired("the API needs a personal token: no `Authorization: Bearer <token>` header",
                             hint=f"send `Authorization: Bearer <token>`; {TOKEN_HINT}")
    sessions = _sessions(store)
    _check_throttle(request, sessions)
    name = store.approver_for_token(token)
    if not name:
        _failed(request, token, store, sessions, "api")
        raise SignInRequired("the bearer token is unknown or has been revoked", hint=TOKEN_HINT)
    return name


# --------------------------------------------------------------------------- CSRF
def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use; every form renders it in a hidden `csrf_token` field."""
    token = request.session.get(CSRF_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_KEY] = token
    return str(token)


def check_csrf(request: Request, submitted: Any) -> None:
    """Refuse (CsrfRejected, 403) a form POST whose token is missing or is not this session's."""
    expected = request.session.get(CSRF_KEY)
    if not isinstance(submitted, str) or not submitted or not expected \
            or not hmac.compare_digest(str(expected).encode(), submitted.encode()):
        raise CsrfRejected(
            "this form was refused because it carries no valid CSRF token; nothing was changed",
            hint="forms are accepted only from the inbox's own pages: reload the page and submit it again "
                 "(a form older than your sign-in is stale too)",
        )


def safe_next(url: str | None) -> str:
    """A local path to go to after signing in; anything else (another host, `//x`, `javascript:`) becomes `/`."""
    if not url or not url.startswith("/") or url.startswith("//") or url.startswith("/\\"):
        return "/"
    return url
