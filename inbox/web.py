"""The web inbox: server-rendered pages (FastAPI + Jinja2) and a JSON API over the decision service.

Pages (sign-in required; every form carries the session's CSRF token and every form POST checks it):
`GET /login`, `POST /login` (a personal token -> a server-side session), `POST /logout`; `GET /` (the queue:
filters `agent`, `dataset`, `risk`, `status` as query parameters with counts per facet, 50 per page, newest
first); `GET /proposals/{id}` (diagnosis, the change as a diff, dry-run evidence, citations with provenance
and age, risk, who must approve, decisions, audit trail); `POST /proposals/{id}/approve|reject|edit|resume`.

API (`Authorization: Bearer <personal token>`): `GET /api/proposals` (filters, `limit`/`offset`, counts),
`GET /api/proposals/{id}`, `POST /api/proposals/{id}/decision` with `{"verdict", "reason"}`, and `POST /api/events`
(a `reporter` reports an event from outside a flow: 201 with its id; with an `Idempotency-Key` seen before, 200 with
the first event's id; a bad body is 422 with `loc` and `problem`). Errors are
`{"error", "hint"}` with 401 (no or bad token), 403 (not allowed), 404 (unknown id, or one the person may not
read), 409 (already decided, expired, an edit that does not pass its dry-run), 413 (body over 64 KiB, refused
before parsing), 422 (malformed JSON or fields) and 429 (too many failed sign-ins, with Retry-After). `GET /healthz`
is open. Every answer carries the CSP and anti-framing headers (`SecurityHeaders`).

Deciding stores the decision (with its durable request for a worker to resume the graph, in the same transaction)
and answers at once: nothing is applied, re-run or verified in this process, not even in a background task. The
supervisor's worker (`inbox.worker`, started beside the server by `serve`) does that; the pages and the API show
its progress (`progress`). A person reads only the proposals of datasets they hold a role on.

The deciding person is always the signed-in approver (session, trusted proxy header, or bearer token); there
is no free-text actor. Whether they may decide is `inbox.service.decide`'s call (the approval policy). Editing
a proposal's parameters re-runs its dry-run through the `DryRunner` port and stores the edit (audited); an
edited proposal can be approved only when its new dry-run passes (for a mapping: heals the failing batch). How
each change kind is shown on the page and read from the edit form is declared in `inbox.change_kinds`.

Every template is autoescaped: titles, diagnoses, column names and samples come from data and LLMs.

Public names: `create_app`, `serve`, `ensure_port_free`, `status_code_for`, `invalid_field`, `approvers`,
`parse_filters`, `progress`, `Progress`, `queue_page`, `readable_view`, `check_can_read`, `check_can_resume`,
`NotReadable`, `SecurityHeaders`, `MAX_BODY_BYTES`, `PAGE_SIZE`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipewarden import __version__, runtime
from pipewarden.errors import (
    InvalidTransition,
    NotApproved,
    PipewardenError,
    UnknownNameError,
    UserError,
)
from pipewarden.inbox import auth, change_kinds, render, service
from pipewarden.models import (
    OPEN_STATUSES,
    ProposalStatus,
    Risk,
    Verdict,
)
from pipewarden.store import QUEUE_FACETS, StateStore

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
PAGE_SIZE = 50
API_MAX_LIMIT = 500
MAX_BODY_BYTES = 64 * 1024
SAMPLE_ROWS = 10
REFRESH_SECONDS = 2
EDITED_ACTION = service.EDITED_ACTION
RESUME_REQUESTED_ACTION = "resume_requested"  # audit action: a person asked the worker to apply again
OPEN_FILTER = "open"  # the queue's default status filter: pending and needs_human
ALL_FILTER = "all"

# Fixed flash messages, chosen by a code in the redirect's query string (never free text from the URL).
FLASHES: dict[str, tuple[str, str]] = {
    "approved": ("ok", "Approved. The worker applies the change, re-runs the batch and verifies it; this page "
                       "follows its progress."),
    "applied": ("ok", "Approved, and the agent has finished applying the change."),
    "approval_recorded": ("ok", "Your approval is recorded. The rule wants more approvals before it is applied."),
    "rejected": ("ok", "Rejected. The reason is kept for the next agent."),
    "resuming": ("ok", "Asked the worker to apply it again..."),
    "edited": ("ok", "Edited. The new dry-run passes on the failing batch; the proposal can be approved."),
    "edited_fails": ("error", "Edited, but the new dry-run does not pass on the failing batch: it cannot be "
                              "approved until an edit passes."),
    "signed_in": ("ok", "Signed in."),
}


# The hint an API error carries when the error itself has none.
DEFAULT_HINTS: dict[int, str] = {
    404: "list the proposals with GET /api/proposals (ids may be 4+ character prefixes)",
    409: "GET /api/proposals/{id} shows its status and history",
    403: "GET /api/proposals/{id} shows who may decide it (requirement)",
}


class DecisionBody(BaseModel):
    """The body of `POST /api/proposals/{id}/decision`. The actor is the bearer token's approver."""

    model_config = ConfigDict(extra="forbid")
    verdict: Verdict
    reason: str = Field(default="", max_length=10_000, description="Required to reject.")


class BodyTooLarge(StarletteHTTPException):
    """A request body over MAX_BODY_BYTES: 413, raised while the body streams in (no Content-Length)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=f"the request body is larger than {MAX_BODY_BYTES} bytes")


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is refused with 413 before anything parses it.

    A declared Content-Length over the limit is answered at once; a streamed body is counted as it arrives
    and stopped when it passes the limit. `/slack/` has its own checks (signatures) and is left alone.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, skip_prefixes: tuple[str, ...] = ("/slack/",)):
        self.app, self.limit, self.skip_prefixes = app, limit, skip_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") \
                or scope["path"].startswith(self.skip_prefixes):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await too_large_response(scope["path"])(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def too_large_response(path: str) -> Response:
    error = f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB; nothing was read or changed"
    hint = "send a smaller body (a decision is {\"verdict\", \"reason\"})"
    if path.startswith("/api/"):
        return JSONResponse({"error": error, "hint": hint}, status_code=413)
    return HTMLResponse(f"<!doctype html><title>413</title><p>{error}</p>", status_code=413)


def invalid_field(exc: Any) -> JSONResponse:
    """422 for an `InvalidField`: `{"error", "hint", "loc", "problem", "errors"}`, where `loc` is where the bad value
    is, as FastAPI says it (`["body", "stage"]`, `["header", "Idempotency-Key"]`)."""
    def where(loc: Any) -> list[Any]:
        return ["header", "Idempotency-Key"] if list(loc[:1]) == ["idempotency_key"] else ["body", *loc]

    error = f"Idempotency-Key: {exc.problem}" if where(exc.loc)[0] == "header" else exc.message
    return JSONResponse({"error": error, "hint": exc.hint or "", "loc": where(exc.loc), "problem": exc.problem,
                         "errors": [{"loc": where(e["loc"]), "problem": e["problem"]} for e in exc.errors]},
                        status_code=422)


def status_code_for(exc: PipewardenError) -> int:
    """The HTTP status for an error raised on purpose: 401, 429 (too many failed sign-ins), 404, 403 (Forbidden,
    NotApproved), 409 (InvalidTransition, Expired), 400 (other UserError), else 500."""
    if isinstance(exc, auth.SignInRequired):
        return 401
    if isinstance(exc, auth.SignInThrottled):
        return 429
    if isinstance(exc, UnknownNameError):
        return 404
    if isinstance(exc, NotApproved):  # Forbidden and CsrfRejected are NotApproved
        return 403
    if isinstance(exc, InvalidTransition):  # Expired too
        return 409
    return 400 if isinstance(exc, UserError) else 500


def _when(at: datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["age"] = render.age
    env.filters["age_words"] = render.age_words
    env.filters["ago"] = render.ago
    env.filters["when"] = _when
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return Jinja2Templates(env=env)


def _flash(code: str | None) -> dict[str, str] | None:
    if code and code in FLASHES:
        level, text = FLASHES[code]
        return {"level": level, "text": text}
    return None


def _error(exc: PipewardenError) -> dict[str, str | None]:
    return {"message": exc.message, "hint": exc.hint}


def approvers() -> Any:
    """The configured approvers, re-read only when the file changes (`Approvers.current`)."""
    from pipewarden.policies.approvers import Approvers

    return Approvers.current()


# --------------------------------------------------------------------------- filters
def parse_filters(params: Any, *, default_open: bool) -> dict[str, list[str]]:
    """Facet filters from query parameters (each repeatable and/or comma-separated); UserError on a bad value.

    `status=open` is pending + needs_human, `status=all` is no filter; with `default_open`, no status means open.
    """
    filters: dict[str, list[str]] = {}
    for facet in QUEUE_FACETS:
        values = [v.strip() for raw in params.getlist(facet) for v in raw.split(",") if v.strip()]
        filters[facet] = list(dict.fromkeys(values))
    statuses = filters["status"]
    if not statuses and default_open or OPEN_FILTER in statuses:
        statuses = [s for s in statuses if s != OPEN_FILTER] + [s.value for s in OPEN_STATUSES]
    if ALL_FILTER in statuses:
        statuses = []
    known = {s.value for s in ProposalStatus}
    bad = [s for s in statuses if s not in known]
    if bad:
        raise UserError(f"unknown status {bad[0]!r}",
                        hint=f"use one of: {', '.join(sorted(known))}, {OPEN_FILTER} or {ALL_FILTER}")
    filters["status"] = sorted(set(statuses), key=lambda s: [x.value for x in ProposalStatus].index(s))
    risks = {r.value for r in Risk}
    bad = [r for r in filters["risk"] if r not in risks]
    if bad:
        raise UserError(f"unknown risk {bad[0]!r}", hint=f"use one of: {', '.join(r.value for r in Risk)}")
    return filters


def _int_param(params: Any, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise UserError(f"{name}={raw!r} is not a whole number in {bound}", hint=f"pass {name}=N with N {bound}")
    return value


def facet_counts(store: StateStore, filters: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """For each facet, the number of proposals per value under the other facets' filters."""
    return {facet: store.count_proposals_by(facet, filters) for facet in QUEUE_FACETS}


# --------------------------------------------------------------------------- security headers
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
)


class SecurityHeaders:
    """ASGI middleware: every response (pages, API, static files, Slack, errors) carries the CSP (no inline script
    or style: the pages have none; no framing), X-Frame-Options, Referrer-Policy and X-Content-Type-Options.
    Outermost, so answers made by other middleware (413, 429) carry them too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in SECURITY_HEADERS if k not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


# --------------------------------------------------------------------------- progress after a decision
ProgressStage = Literal["open", "waiting_for_worker", "retry_scheduled", "needs_retry", "applying", "re_running",
                        "verified", "rolled_back", "rejected", "expired"]
IN_FLIGHT_STAGES = frozenset({"waiting_for_worker", "retry_scheduled", "applying", "re_running"})


class Progress(BaseModel):
    """Where a proposal is on its way from the decision to verified, as the pages and the API show it. The web
    server never applies anything itself: the supervisor's worker does, under a lease, and this reads its trace
    (the status, the resume request, the lease, failed attempts)."""

    stage: ProgressStage
    text: str = Field(description="One line for a person.")
    worker: str | None = Field(default=None, description="The worker holding the lease, while one does.")
    attempts: int = Field(default=0, description="Failed attempts to apply so far.")
    next_attempt_at: datetime | None = None
    error: str | None = Field(default=None, description="Why the last attempt failed.")

    @property
    def in_flight(self) -> bool:
        return self.stage in IN_FLIGHT_STAGES


def progress(p: Any, lease: dict[str, Any] | None, error: str | None = None, now: datetime | None = None) -> Progress:
    """The progress of proposal `p` given its lease row (`StateStore.proposal_lease`) and the last failure."""
    now = now or datetime.now(UTC)
    status = p.status
    terminal = {
        ProposalStatus.verified: ("verified", "verified: the re-run passes"),
        ProposalStatus.rolled_back: ("rolled_back", "rolled back" + (f": {p.status_reason}" if p.status_reason else "")),
        ProposalStatus.rejected: ("rejected", "rejected"),
        ProposalStatus.expired: ("expired", "expired without a decision"),
    }
    if status in OPEN_STATUSES:
        return Progress(stage="open", text="waiting for a decision")
    if status in terminal:
        stage, text = terminal[status]
        return Progress(stage=stage, text=text)  # type: ignore[arg-type]
    lease = lease or {}

    def aware(at: Any) -> datetime | None:
        return None if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC))

    owner, until = lease.get("lease_owner"), aware(lease.get("lease_expires_at"))
    attempts = int(lease.get("attempts") or 0)
    next_at, requested = aware(lease.get("next_attempt_at")), lease.get("resume_requested_at")
    base = {"attempts": attempts, "error": error if attempts else None}
    if owner and until is not None and until > now:
        if status == ProposalStatus.applied:
            return Progress(stage="re_running", text=f"applied; re-running the batch and verifying ({owner})",
                            worker=owner, **base)
        return Progress(stage="applying", text=f"applying the change ({owner})", worker=owner, **base)
    if requested is not None and attempts and next_at is not None and next_at > now:
        return Progress(stage="retry_scheduled", next_attempt_at=next_at, **base,
                        text=f"attempt {attempts} failed; the worker tries again at {next_at:%H:%M:%S} UTC")
    if requested is not None:
        what = "re-run and verify it" if status == ProposalStatus.applied else "apply it"
        return Progress(stage="waiting_for_worker", text=f"{status.value}; waiting for the worker to {what}", **base)
    return Progress(stage="needs_retry", attempts=attempts, error=error,
                    text=f"{status.value}, but the worker gave up" + (f" after {attempts} attempts" if attempts else "")
                    + "; a person can ask it to try again")


# --------------------------------------------------------------------------- who may read and resume
def readable_datasets(user: str, datasets: Callable[[], list[str]]) -> list[str] | None:
    """The datasets among `datasets()` (called only when needed) whose proposals `user` may read; None when they
    may read every dataset."""
    person = approvers().get(user)
    if person is None:
        return []
    if "*" in person.datasets and person.may_read("*"):
        return None
    return [d for d in datasets() if person.may_read(d)]


class NotReadable(UnknownNameError):
    """404: no proposal with this id that the person may read. The same answer whether the id does not exist or
    is on a dataset they hold no role on, and it lists no other ids."""

    def __init__(self, ref: str) -> None:
        UserError.__init__(self, f"no proposal {ref!r} that you may read",
                           hint="the queue (/ or GET /api/proposals) lists the proposals you may read: those on "
                                "datasets where approvers.yaml gives you a role")
        self.what, self.name, self.known = "proposal", ref, []


def check_can_read(user: str, p: Any, ref: str | None = None) -> None:
    """NotReadable (404) unless `user` holds a role (any but reporter) on the proposal's dataset."""
    person = approvers().get(user)
    if person is None or not person.may_read(p.dataset):
        raise NotReadable(ref or p.short_id)


def readable_view(ref: str, user: str, store: StateStore) -> service.ProposalView:
    """The proposal's view when `user` may read it; NotReadable (404) when it does not exist or is not theirs."""
    try:
        v = service.proposal_view(ref, store=store)
    except UnknownNameError:
        raise NotReadable(ref) from None
    check_can_read(user, v.proposal, ref)
    return v


def queue_page(store: StateStore, user: str, filters: dict[str, list[str]], limit: int, offset: int
               ) -> tuple[int, list[Any], dict[str, dict[str, int]]]:
    """(total, rows, facet counts) of the queue as `user` may see it: only proposals on datasets they hold a role
    on, counted the same way (a dataset they cannot read is not even named in the counts)."""
    readable = readable_datasets(user, lambda: list(store.count_proposals_by("dataset", {})))
    scoped = dict(filters)
    if readable is not None:
        wanted = filters.get("dataset") or readable
        scoped["dataset"] = [d for d in wanted if d in readable]
        if not scoped["dataset"]:
            return 0, [], {facet: {} for facet in QUEUE_FACETS}
    counts = facet_counts(store, scoped)
    if readable is not None:  # the dataset facet is counted without its own filter: keep the readable ones
        counts["dataset"] = {d: n for d, n in counts["dataset"].items() if d in readable}
    return store.count_proposals(scoped), store.find_proposals(scoped, limit=limit, offset=offset), counts


def retry_after(exc: PipewardenError) -> dict[str, str] | None:
    """The Retry-After header of a 429 (throttled sign-ins)."""
    return {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, auth.SignInThrottled) else None


def check_can_resume(user: str, p: Any) -> None:
    """Forbidden unless `user` holds, on the proposal's dataset, a role its approval rule accepts: only someone
    who could have approved it may ask the worker to apply it again."""
    from pipewarden.errors import Forbidden
    from pipewarden.policies.approval import rule_for
    from pipewarden.policies.approvers import REPORTER_ROLE

    person = approvers().get(user)
    rule = rule_for(p)
    held = set(person.roles_for(p.dataset)) - {REPORTER_ROLE} if person else set()
    if not held & set(rule.roles):
        has = f"{', '.join(person.roles)} on {', '.join(person.datasets)}" if person else "no entry in approvers.yaml"
        raise Forbidden(f"{user} cannot retry applying proposal {p.short_id}: that needs {' or '.join(rule.roles)} "
                        f"of {p.dataset}; {user} has {has}", hint="ask one of the people who may approve it")


def create_app() -> FastAPI:
    """The inbox app. Deciding stores the decision and answers at once; the supervisor's worker applies it."""
    app = FastAPI(title="pipewarden inbox", version=__version__)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    from pipewarden.inbox.slack import mount_slack  # POST /slack/events (503 saying what to set while Slack is off)

    mount_slack(app)
    auth.install(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries the headers
    templates = _templates()
    # The agent filter lists the registered agents (`runtime.agents()`, which imports them once, about a second):
    # read in the background now, so the first queue page does not wait for it.
    threading.Thread(target=_facet_values, args=("agent", {}), name="pw-agent-registry", daemon=True).start()

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> Response:
        return too_large_response(request.url.path)

    # ------------------------------------------------------------------ page helpers
    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200,
             headers: dict[str, str] | None = None) -> HTMLResponse:
        base = {"flash": None, "error": None, "user": auth.page_user(request), "csrf": auth.csrf_token(request),
                "csrf_field": auth.CSRF_FIELD}
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code,
                                          headers=headers)

    def error_page(request: Request, exc: PipewardenError, code: int | None = None) -> HTMLResponse:
        code = code or status_code_for(exc)
        return page(request, "error.html", {"error": _error(exc), "status_code": code}, code,
                    headers=retry_after(exc))

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def form_user(request: Request, form: Any) -> str:
        """The signed-in person behind a form POST: 401 when nobody is, 403 without this session's CSRF token."""
        user = auth.page_user(request)
        if not user:
            raise auth.SignInRequired("you are not signed in; nothing was changed",
                                      hint="sign in at /login with your personal token, then submit again")
        auth.check_csrf(request, form.get(auth.CSRF_FIELD))
        return user

    def permission(user: str, v: service.ProposalView, verdict: Verdict) -> str | None:
        """Why `user` may not give `verdict` now (shown beside the button), or None."""
        from pipewarden.policies.approval import check_can_decide

        try:
            check_can_decide(user, v.proposal, verdict, approvers(), decisions=v.decisions)
        except PipewardenError as exc:
            return exc.message + (f" ({exc.hint})" if exc.hint else "")
        return None

    def resume_permission(user: str, p: Any) -> str | None:
        try:
            check_can_resume(user, p)
        except PipewardenError as exc:
            return exc.message + (f" ({exc.hint})" if exc.hint else "")
        return None

    def detail_page(
        request: Request, ref: str, *, flash: dict[str, str] | None = None, error: PipewardenError | None = None,
        status_code: int = 200, flash_code: str | None = None,
    ) -> HTMLResponse:
        store = StateStore()
        user = auth.page_user(request) or ""
        try:
            v = readable_view(ref, user, store)
        except PipewardenError as exc:
            return error_page(request, exc)
        p = v.proposal
        sample = p.dry_run.sample if p.dry_run else []
        prog = progress(p, store.proposal_lease(p.id) if p.status in service.IN_FLIGHT_STATUSES else None,
                        v.resume_error)
        pending = p.status == ProposalStatus.pending
        edit_block = service.edit_refusal(p, v.audit)
        if flash_code in ("approved", "resuming") and p.status in (ProposalStatus.applied, ProposalStatus.verified):
            flash = _flash("applied")  # the page refreshed itself until the worker finished
        whole, changes = change_kinds.page_views(p.change, store, p.id)
        context = {
            "p": p, "event": v.event, "decisions": v.decisions, "audit": v.audit, "need": v.requirement,
            "open": p.status in OPEN_STATUSES, "can_approve": pending and not edit_block,
            "approve_block": edit_block or (permission(user, v, Verdict.approve) if pending else None),
            "reject_block": permission(user, v, Verdict.reject) if p.status in OPEN_STATUSES else None,
            "editable": pending and change_kinds.editable(p.change),
            "set_editable": any(change_kinds.editable(c) for c in change_kinds.leaves(p.change)),
            "whole": whole, "changes": changes, "edited": service.edited_entry(v.audit),
            "progress": prog, "refresh": REFRESH_SECONDS if prog.in_flight else None,
            "retryable": prog.stage in ("needs_retry", "retry_scheduled"),
            "resume_block": resume_permission(user, p) if prog.stage in ("needs_retry", "retry_scheduled") else None,
            "sample_rows": sample[:SAMPLE_ROWS], "sample_cols": render.sample_columns(sample[:SAMPLE_ROWS]),
            "proposed": render.proposed_line(p.change),
            "rerun": render.rerun_view(v.audit, render.prefect_ui_url(os.environ)),
            "citations": render.citations_by_relevance(p.citations, p.dataset),
            "occurrences": v.occurrences,
            "flash": flash, "error": _error(error) if error else None,
            "now": datetime.now(UTC),
        }
        return page(request, "proposal.html", context, status_code)

    def after_decision(pid: str, flash: str) -> RedirectResponse:
        return RedirectResponse(f"/proposals/{pid}?flash={quote(flash)}", status_code=303)

    def decide_now(ref: str, verdict: Verdict, user: str, reason: str) -> service.DecisionOutcome:
        """Decide as `user`, after checking they may read the proposal. The store keeps the decision and, in the
        same transaction, the durable request for the worker to resume the graph: nothing else runs here."""
        store = StateStore()
        try:
            p = store.get_proposal(ref)
        except UnknownNameError:
            raise NotReadable(ref) from None
        check_can_read(user, p, ref)
        return service.decide(str(p.id), verdict, user, reason, via="web", resume=False, store=store,
                              approvers=approvers())

    # ------------------------------------------------------------------ sign-in
    @app.get("/login", response_class=HTMLResponse, name="login")
    def login_page(request: Request, next: str = "/", token: str = "") -> HTMLResponse:
        return page(request, "login.html", {"next": auth.safe_next(next), "token": token})

    @app.post("/login", name="login_post")
    async def login_post(request: Request) -> Response:
        form = await request.form()
        nxt = auth.safe_next(str(form.get("next") or "/"))
        try:
            auth.check_csrf(request, form.get(auth.CSRF_FIELD))
            await run_in_threadpool(auth.sign_in, request, str(form.get("token") or ""), StateStore())
        except PipewardenError as exc:
            return await run_in_threadpool(page, request, "login.html",
                                           {"next": nxt, "token": "", "error": _error(exc)},
                                           status_code_for(exc), retry_after(exc))
        return RedirectResponse(nxt, status_code=303)

    @app.post("/logout", name="logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        try:
            auth.check_csrf(request, form.get(auth.CSRF_FIELD))
        except PipewardenError as exc:
            return await run_in_threadpool(error_page, request, exc)
        await run_in_threadpool(auth.sign_out, request)
        return RedirectResponse("/login", status_code=303)

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse, name="index")
    def index(request: Request) -> Response:
        user = auth.page_user(request)
        if not user:
            return to_login(request)
        store = StateStore()
        params = request.query_params
        try:
            filters = parse_filters(params, default_open=True)
            page_no = _int_param(params, "page", 1, 1)
        except UserError as exc:
            return error_page(request, exc, 422)
        total, rows, counts = queue_page(store, user, filters, PAGE_SIZE, (page_no - 1) * PAGE_SIZE)
        return page(request, "index.html", {
            "rows": rows, "total": total, "page_no": page_no, "page_size": PAGE_SIZE,
            "facets": _facet_links(params, filters, counts),
            "prev_href": _href(params, page=page_no - 1) if page_no > 1 else None,
            "next_href": _href(params, page=page_no + 1) if page_no * PAGE_SIZE < total else None,
            "first": (page_no - 1) * PAGE_SIZE + 1 if total else 0,
            "last": min(page_no * PAGE_SIZE, total),
            "status_label": _status_label(params),
        })

    @app.get("/proposals/{ref}", response_class=HTMLResponse, name="proposal_page")
    def proposal_page(request: Request, ref: str, flash: str | None = None) -> Response:
        if not auth.page_user(request):
            return to_login(request)
        return detail_page(request, ref, flash=_flash(flash), flash_code=flash)

    @app.post("/proposals/{ref}/approve", name="approve_form")
    async def approve_form(request: Request, ref: str) -> Response:
        return await _decision_form(request, ref, Verdict.approve)

    @app.post("/proposals/{ref}/reject", name="reject_form")
    async def reject_form(request: Request, ref: str) -> Response:
        return await _decision_form(request, ref, Verdict.reject)

    async def _decision_form(request: Request, ref: str, verdict: Verdict) -> Response:
        form = await request.form()
        try:
            user = await run_in_threadpool(form_user, request, form)
        except PipewardenError as exc:
            return await run_in_threadpool(error_page, request, exc)
        reason = str(form.get("reason") or "")
        try:
            outcome = await run_in_threadpool(decide_now, ref, verdict, user, reason)
        except PipewardenError as exc:
            return await run_in_threadpool(detail_page, request, ref, error=exc, status_code=status_code_for(exc))
        pid = str(outcome.proposal.id)
        if verdict == Verdict.reject:
            return after_decision(pid, "rejected")
        if outcome.proposal.status in OPEN_STATUSES:
            return after_decision(pid, "approval_recorded")
        return after_decision(pid, "approved")

    @app.post("/proposals/{ref}/edit", name="edit_form")
    async def edit_form(request: Request, ref: str) -> Response:
        form = await request.form()
        try:
            user = await run_in_threadpool(form_user, request, form)
        except PipewardenError as exc:
            return await run_in_threadpool(error_page, request, exc)

        def edit() -> str:
            from pipewarden.policies.approval import check_can_decide
            from pipewarden.ports import dry_runner, notify

            store = StateStore()
            v = readable_view(ref, user, store)
            p = v.proposal
            if p.status != ProposalStatus.pending:
                raise InvalidTransition(f"proposal {p.short_id} is {p.status.value}; only a pending proposal can be "
                                        "edited", hint="see its history below")
            check_can_decide(user, p, Verdict.approve, approvers(), decisions=v.decisions)  # an editor may approve
            kind = change_kinds.kind_of(p.change)
            change = change_kinds.parse_form(p.change, form)
            if change.model_dump(mode="json") == p.change.model_dump(mode="json"):
                raise UserError("the edit changes nothing", hint="change a target, a cast or the SQL, then submit")
            try:
                dry = dry_runner()(p, change)
            except UnknownNameError as exc:  # a bad column name in the edit is bad input here, not a missing page
                raise UserError(exc.message, hint=exc.hint) from exc
            if kind.from_redry is not None:  # what the new dry-run measured (a quarantine's rows taken out)
                change = kind.from_redry(change, dry)
            title = kind.retitle(change, p) if kind.retitle is not None else None
            store.edit_proposal(p.id, change, dry, user, title=title, via="web")
            notify("proposal_updated", str(p.id))
            return "edited" if dry.after.passed else "edited_fails"

        try:
            flash = await run_in_threadpool(edit)
        except PipewardenError as exc:
            code = status_code_for(exc)
            if type(exc) is UserError or code == 400:
                code = 422
            return await run_in_threadpool(detail_page, request, ref, error=exc, status_code=code)
        return RedirectResponse(f"/proposals/{ref}?flash={flash}", status_code=303)

    @app.post("/proposals/{ref}/resume", name="resume_form")
    async def resume_form(request: Request, ref: str) -> Response:
        """Ask the worker to apply an approved proposal again (after it gave up, or to skip its backoff). Only
        someone with a role the proposal's rule accepts may; nothing is applied in this process."""
        form = await request.form()
        try:
            user = await run_in_threadpool(form_user, request, form)
        except PipewardenError as exc:
            return await run_in_threadpool(error_page, request, exc)

        def resume() -> str:
            store = StateStore()
            p = readable_view(ref, user, store).proposal
            check_can_resume(user, p)
            if p.status not in service.IN_FLIGHT_STATUSES:
                raise InvalidTransition(f"proposal {p.short_id} is {p.status.value}; only an approved proposal that "
                                        "has not finished applying can be applied again", hint="see its history below")
            store.request_resume(p.id, actor=user)
            store.record(RESUME_REQUESTED_ACTION, user, {"via": "web"}, proposal_id=str(p.id))
            return str(p.id)

        try:
            pid = await run_in_threadpool(resume)
        except PipewardenError as exc:
            return await run_in_threadpool(detail_page, request, ref, error=exc, status_code=status_code_for(exc))
        return RedirectResponse(f"/proposals/{pid}?flash=resuming", status_code=303)

    # ------------------------------------------------------------------ JSON API
    def api_error(exc: PipewardenError, code: int | None = None) -> JSONResponse:
        code = code or status_code_for(exc)
        return JSONResponse({"error": exc.message, "hint": exc.hint or DEFAULT_HINTS.get(code, "")}, status_code=code,
                            headers=retry_after(exc))

    @app.get("/api/proposals")
    def api_list(request: Request) -> Response:
        store = StateStore()
        try:
            actor = auth.bearer_actor(request, store)
            params = request.query_params
            filters = parse_filters(params, default_open=False)
            limit = _int_param(params, "limit", PAGE_SIZE, 1, API_MAX_LIMIT)
            offset = _int_param(params, "offset", 0, 0)
        except PipewardenError as exc:
            return api_error(exc, 422 if type(exc) is UserError else None)
        total, rows, counts = queue_page(store, actor, filters, limit, offset)
        return JSONResponse({
            "count": total, "limit": limit, "offset": offset,
            "filters": {k: v for k, v in filters.items() if v},
            "facets": counts,
            "proposals": [render.proposal_json(p) for p in rows],
        })

    @app.get("/api/proposals/{ref}")
    def api_get(request: Request, ref: str) -> Response:
        store = StateStore()
        try:
            actor = auth.bearer_actor(request, store)
            v = readable_view(ref, actor, store)
        except PipewardenError as exc:
            return api_error(exc)
        body = render.proposal_detail_json(v.proposal, v.decisions, v.audit, event=v.event)
        body["requirement"] = v.requirement.model_dump(mode="json") if v.requirement else None
        body["approvable"] = service.edit_refusal(v.proposal, v.audit) is None
        in_flight = v.proposal.status in service.IN_FLIGHT_STATUSES
        body["progress"] = progress(v.proposal, store.proposal_lease(v.proposal.id) if in_flight else None,
                                    v.resume_error).model_dump(mode="json")
        return JSONResponse(body)

    @app.post("/api/proposals/{ref}/decision")
    async def api_decide(request: Request, ref: str) -> Response:
        raw = await request.body()  # BodyLimit stops it past 64 KiB (413)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            data, bad_json = None, exc
        else:
            bad_json = None

        def decide() -> Response:
            """Everything that touches the state DB, in one worker thread: who asks, then the decision."""
            store = StateStore()
            try:
                actor = auth.bearer_actor(request, store)
            except PipewardenError as exc:
                return api_error(exc)
            if bad_json is not None:
                return JSONResponse({"error": f"the body is not valid JSON: {bad_json}",
                                     "hint": 'send {"verdict": "approve"} or {"verdict": "reject", "reason": "why"}'},
                                    status_code=422)
            try:
                body = DecisionBody.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "body"
                hint = ("the deciding person is the token's approver; drop `actor`" if "actor" in first["loc"]
                        else 'send {"verdict": "approve"|"reject", "reason": "..."}')
                return JSONResponse({"error": f"{where}: {first['msg']}", "hint": hint}, status_code=422)
            if body.verdict == Verdict.reject and not body.reason.strip():
                return JSONResponse({"error": "a rejection needs a reason", "hint": 'add "reason": "why"'},
                                    status_code=422)
            try:
                outcome = decide_now(ref, body.verdict, actor, body.reason)
            except PipewardenError as exc:
                return api_error(exc)
            out = render.outcome_json(outcome)
            out["requirement"] = outcome.requirement.model_dump(mode="json") if outcome.requirement else None
            # Just committed with its resume request: the worker has not had it yet (GET shows it move on).
            out["progress"] = progress(outcome.proposal, {"resume_requested_at": outcome.decision.decided_at},
                                       ).model_dump(mode="json")
            return JSONResponse(out)

        return await run_in_threadpool(decide)

    @app.post("/api/events", status_code=201)
    async def api_report(request: Request) -> Response:
        """An event reported from outside a flow, by a reporter's token: 201 with its id; 200 with the first
        event's id when this reporter sent the same `Idempotency-Key` before (nothing more is stored)."""
        from pipewarden.errors import InvalidField
        from pipewarden.policies.approvers import check_can_report
        from pipewarden.report import reported_event

        store = StateStore()

        def reporter() -> str:
            actor = auth.bearer_actor(request, store)
            check_can_report(actor, approvers())
            return actor

        try:
            actor = await run_in_threadpool(reporter)
        except PipewardenError as exc:
            return api_error(exc)
        raw = await request.body()  # BodyLimit stops it past 64 KiB (413)
        key = request.headers.get("idempotency-key")

        def report() -> tuple[str, bool]:
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InvalidField((), f"the body is not valid JSON: {exc}",
                                   hint='send one event as a JSON object: {"kind": ..., "dataset": ..., ...}') from None
            event = reported_event(data)
            check_can_report(actor, approvers(), event.dataset)
            return store.report_event(event, actor, idempotency_key=key, via="api")

        try:
            event_id, created = await run_in_threadpool(report)
        except InvalidField as exc:
            return invalid_field(exc)
        except PipewardenError as exc:
            return api_error(exc)
        return JSONResponse({"id": event_id, "created": created}, status_code=201 if created else 200)

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            StateStore().count_proposals()
        except SQLAlchemyError as exc:
            return JSONResponse({"status": "error", "error": f"state DB unreachable: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app


# --------------------------------------------------------------------------- page views
def _href(params: Any, **changes: Any) -> str:
    """The queue URL with `changes` applied to the current query (a None value removes the parameter)."""
    query: dict[str, str] = {k: v for k, v in params.items() if k != "page"}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = str(value)
    if query.get("page") == "1":
        query.pop("page")
    return "/" + (f"?{urlencode(query)}" if query else "")


def _status_label(params: Any) -> str:
    raw = params.get("status") or OPEN_FILTER
    return {OPEN_FILTER: "open: pending or needs a human", ALL_FILTER: "any status"}.get(raw, raw)


def _facet_values(facet: str, counted: dict[str, int]) -> list[str]:
    """A facet's values in the order the page lists them: for `agent`, every registered agent (the registry's order,
    read through the runtime, so a new agent is offered before its first proposal), then any other name the queue
    holds; for the others, the values present, sorted."""
    if facet != "agent":
        return sorted(counted)
    try:
        registered = list(runtime.current().agents())
    except Exception:  # the queue page never fails for a filter's options: the names the queue holds still show
        log.exception("could not read the agent registry for the inbox's agent filter")
        registered = []
    return [*registered, *sorted(set(counted) - set(registered))]


def _facet_links(params: Any, filters: dict[str, list[str]], counts: dict[str, dict[str, int]]) -> list[dict]:
    """Each facet with its values, counts, whether selected, and the link that selects (or clears) it."""
    out = []
    for facet in QUEUE_FACETS:
        values = []
        current = params.get(facet)
        if facet == "status":
            open_n = sum(counts["status"].get(s.value, 0) for s in OPEN_STATUSES)
            values.append({"value": OPEN_FILTER, "count": open_n, "selected": current in (None, OPEN_FILTER),
                           "href": _href(params, status=None)})
            order = [s.value for s in ProposalStatus]
            for value in sorted(counts["status"], key=order.index):
                values.append({"value": value, "count": counts["status"][value], "selected": current == value,
                               "href": _href(params, status=value)})
            values.append({"value": ALL_FILTER, "count": sum(counts["status"].values()),
                           "selected": current == ALL_FILTER, "href": _href(params, status=ALL_FILTER)})
        else:
            for value in _facet_values(facet, counts[facet]):
                selected = value in filters[facet]
                values.append({"value": value, "count": counts[facet].get(value, 0), "selected": selected,
                               "href": _href(params, **{facet: None if selected else value})})
        out.append({"name": facet, "options": values, "active": bool(filters[facet]) and facet != "status",
                    "clear": _href(params, **{facet: None})})
    return out


def ensure_port_free(host: str, port: int) -> None:
    """Fail early, with what to do, when the address is taken (before any long work that ends in serving)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot serve the inbox on {host}:{port}: {exc.strerror}",
                            hint=f"another program uses port {port}; pass --port N") from exc


def serve(host: str = "127.0.0.1", port: int = 8765, *, worker: bool = True,
          extend: Callable[[FastAPI], None] | None = None) -> None:
    """Serve the inbox with uvicorn until interrupted; prints the URL and how to sign in first. `extend` adds to
    the app before it serves (the CLI mounts the MCP server at /mcp with it). With `worker` (the default), a
    supervisor worker runs beside it in a child process (`inbox.worker`) and stops with it: the web server only
    stores decisions, the worker applies them."""
    import uvicorn

    from pipewarden.inbox.worker import SupervisorWorker
    from pipewarden.settings import get_settings

    ensure_port_free(host, port)
    app = create_app()
    if extend is not None:
        extend(app)
    print(f"pipewarden inbox: http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    header = get_settings().trusted_user_header
    if header:
        print(f"  signed-in person: the {header} header set by your authentication proxy, or a personal token",
              flush=True)
    else:
        print("  sign in with a personal token: pipewarden approvers token NAME", flush=True)
    supervisor = SupervisorWorker().start() if worker else None
    if supervisor is not None:
        print(f"  supervisor worker (pid {supervisor.pid}) applies approved decisions; --no-worker if you run "
              "`pipewarden supervise` yourself", flush=True)
    else:
        print("  no worker: approved decisions wait for a `pipewarden supervise` you run", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if supervisor is not None:
            supervisor.stop()
