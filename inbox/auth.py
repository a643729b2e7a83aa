"""Who is signed in to the web inbox, and proof that a form came from the inbox's own pages.

Owns:
- the session secret: `settings.session_secret`, or else one generated once and kept in
  `PIPEWARDEN_HOME/session_secret` (mode 0600), so sessions survive a restart of `pipewarden serve`;
- sign-in with a personal token (`pipewarden approvers token NAME` prints one; the state DB keeps only its
  hash) into a signed session cookie (Starlette's `SessionMiddleware`, signed with itsdangerous);
- the trusted proxy header (`settings.trusted_user_header`, e.g. `X-Forwarded-User`), believed only when it is set;
- a CSRF token per session, carried by every form and checked on every form POST;
- bearer tokens (`Authorization: Bearer <token>`) for `/api/*`.

Who may decide what is not decided here: `inbox.service.decide` checks the signed-in approver against the
approval policy. This module only says who is asking.

Public names: `install(app)`, `session_secret()`, `page_user(request)`, `sign_in(request, token, store)`,
`sign_out(request)`, `csrf_token(request)`, `check_csrf(request, submitted)`, `bearer_actor(request, store)`,
`safe_next(url)`, `SignInRequired`, `CsrfRejected`, `CSRF_FIELD`, `SESSION_COOKIE`.
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

    from pipewarden.store import StateStore

SESSION_COOKIE = "pw_session"
SESSION_MAX_AGE_S = 12 * 3600
SECRET_FILE = "session_secret"
CSRF_FIELD = "csrf_token"
USER_KEY = "user"
CSRF_KEY = "csrf"
VIA_KEY = "via"
TOKEN_HINT = "ask for a personal token (`pipewarden approvers token NAME` prints one) and sign in with it"


class SignInRequired(UserError):
    """No identity, or one that is not believed (unknown or revoked token). HTTP 401. Nothing was changed."""


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
def page_user(request: Request) -> str | None:
    """The signed-in approver for a page: the trusted proxy header when configured and present, else the session."""
    header = get_settings().trusted_user_header
    if header:
        value = request.headers.get(header, "").strip()
        if value:
            return value
    user = request.session.get(USER_KEY)
    return str(user) if user else None


def sign_in(request: Request, token: str, store: StateStore) -> str:
    """Exchange a personal token for a fresh session (a new CSRF token too: no session fixation)."""
    token = token.strip()
    name = store.approver_for_token(token) if token else None
    if not name:
        raise SignInRequired("that token is unknown or has been revoked; you are not signed in", hint=TOKEN_HINT)
    request.session.clear()
    request.session[USER_KEY] = name
    request.session[VIA_KEY] = "token"
    request.session[CSRF_KEY] = secrets.token_urlsafe(32)
    return name


def sign_out(request: Request) -> None:
    request.session.clear()


def bearer_actor(request: Request, store: StateStore) -> str:
    """The approver a `/api/*` request speaks for, from `Authorization: Bearer <token>`; SignInRequired if none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise SignInRequired("the API needs a personal token: no `Authorization: Bearer <token>` header",
                             hint=f"send `Authorization: Bearer <token>`; {TOKEN_HINT}")
    name = store.approver_for_token(token)
    if not name:
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
