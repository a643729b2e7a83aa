"""The web inbox: server-rendered pages (FastAPI + Jinja2) and a small JSON API over the decision service.

Pages: `GET /` (the queue), `GET /proposals/{id}` (one proposal with its evidence, decision forms and audit
trail), `POST /proposals/{id}/approve|reject|resume`. API: `GET /api/proposals[?status=]`,
`GET /api/proposals/{id}`, `POST /api/proposals/{id}/decision`. `GET /healthz`.

Every template is autoescaped: titles, diagnoses and samples come from data and LLMs. Deciders type their name
into the form for now (sign-in comes later); the store still refuses system identities.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import BackgroundTasks, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from inbox import render, service
from pipewarden import __version__
from pipewarden.errors import InvalidTransition, NotApproved, PipewardenError, UnknownNameError, UserError
from pipewarden.models import OPEN_STATUSES, ProposalStatus, Verdict
from pipewarden.store import StateStore

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
RECENT_DECIDED = 50
SAMPLE_ROWS = 10
REFRESH_SECONDS = 2
ACTOR_COOKIE = "pw_actor"

# Fixed flash messages, chosen by a code in the redirect's query string (never free text from the URL).
FLASHES: dict[str, tuple[str, str]] = {
    "approved": ("ok", "Approved. The agent is applying the change..."),
    "applied": ("ok", "Approved, and the agent has finished applying the change."),
    "resume_failed": ("error", "Approved, but applying failed; the decision is stored and applying can be retried."),
    "rejected": ("ok", "Rejected. The reason is kept for the next agent."),
    "resuming": ("ok", "Applying again..."),
}


class DecisionRequest(BaseModel):
    """The body of `POST /api/proposals/{id}/decision`."""

    verdict: Verdict
    actor: str = Field(min_length=1, description="The deciding person's name.")
    reason: str = Field(default="", description="Required to reject.")


def status_code_for(exc: PipewardenError) -> int:
    """The HTTP status for an error the service raised on purpose."""
    if isinstance(exc, UnknownNameError):
        return 404
    if isinstance(exc, NotApproved):
        return 403
    if isinstance(exc, InvalidTransition):
        return 409
    return 400 if exc.exit_code == 2 else 500


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
    env.filters["when"] = _when
    return Jinja2Templates(env=env)


def _flash(code: str | None) -> dict[str, str] | None:
    if code and code in FLASHES:
        level, text = FLASHES[code]
        return {"level": level, "text": text}
    return None


def _error(exc: PipewardenError) -> dict[str, str | None]:
    return {"message": exc.message, "hint": exc.hint}


def _resume_in_background(proposal_id: str) -> None:
    """Run after the response is sent. Resume failures are audited by the service; here only races remain."""
    try:
        service.resume_decided(proposal_id)
    except PipewardenError as exc:  # e.g. the supervisor resumed and finished it first
        log.warning("background resume of proposal %s skipped: %s", proposal_id[:8], exc)


def create_app(*, resume_in_background: bool = True) -> FastAPI:
    """The inbox app. With `resume_in_background`, approving answers at once and the graph resumes after."""
    app = FastAPI(title="pipewarden inbox", version=__version__)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    templates = _templates()

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        base = {"flash": None, "error": None}
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)

    def error_page(request: Request, exc: PipewardenError) -> HTMLResponse:
        code = status_code_for(exc)
        return page(request, "error.html", {"error": _error(exc), "status_code": code}, code)

    def detail_page(
        request: Request, ref: str, *, flash: dict[str, str] | None = None, error: PipewardenError | None = None,
        status_code: int = 200, actor: str = "",
    ) -> HTMLResponse:
        try:
            v = service.view(ref)
        except PipewardenError as exc:
            return error_page(request, exc)
        p = v.proposal
        sample = p.dry_run.sample if p.dry_run else []
        in_flight = p.status in service.IN_FLIGHT_STATUSES
        resume_error = v.resume_error
        context = {
            "p": p, "event": v.event, "decisions": v.decisions, "audit": v.audit,
            "open": p.status in OPEN_STATUSES, "can_approve": p.status == ProposalStatus.pending,
            "refresh": REFRESH_SECONDS if in_flight and not resume_error else None,
            "resume_error": resume_error,
            "sample_rows": sample[:SAMPLE_ROWS], "sample_cols": render.sample_columns(sample[:SAMPLE_ROWS]),
            "flash": flash, "error": _error(error) if error else None,
            "actor": actor or request.cookies.get(ACTOR_COOKIE, ""),
        }
        return page(request, "proposal.html", context, status_code)

    def after_decision(pid: str, flash: str, actor: str) -> RedirectResponse:
        resp = RedirectResponse(f"/proposals/{pid}?flash={quote(flash)}", status_code=303)
        resp.set_cookie(ACTOR_COOKIE, actor, max_age=30 * 86400, httponly=True, samesite="lax")
        return resp

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse, name="index")
    def index(request: Request) -> HTMLResponse:
        proposals = service.queue()
        counts = Counter(p.status.value for p in proposals)
        ordered = [(s.value, counts[s.value]) for s in ProposalStatus if counts[s.value]]
        return page(request, "index.html", {
            "counts": ordered,
            "open": [p for p in proposals if p.status in OPEN_STATUSES],
            "decided": [p for p in proposals if p.status not in OPEN_STATUSES][:RECENT_DECIDED],
        })

    @app.get("/proposals/{ref}", response_class=HTMLResponse, name="proposal_page")
    def proposal_page(request: Request, ref: str, flash: str | None = None) -> HTMLResponse:
        return detail_page(request, ref, flash=_flash(flash))

    @app.post("/proposals/{ref}/approve", name="approve_form")
    def approve_form(
        request: Request, ref: str, background: BackgroundTasks, actor: str = Form(""), reason: str = Form(""),
    ) -> Response:
        try:
            outcome = service.approve(ref, actor, via="web", reason=reason, resume=not resume_in_background)
        except PipewardenError as exc:
            return detail_page(request, ref, error=exc, status_code=status_code_for(exc), actor=actor)
        pid = str(outcome.proposal.id)
        if resume_in_background:
            background.add_task(_resume_in_background, pid)
            flash = "approved"
        else:
            flash = "resume_failed" if outcome.resume == "failed" else "applied"
        return after_decision(pid, flash, outcome.decision.actor)

    @app.post("/proposals/{ref}/reject", name="reject_form")
    def reject_form(request: Request, ref: str, actor: str = Form(""), reason: str = Form("")) -> Response:
        try:
            outcome = service.reject(ref, actor, reason, via="web")
        except PipewardenError as exc:
            return detail_page(request, ref, error=exc, status_code=status_code_for(exc), actor=actor)
        return after_decision(str(outcome.proposal.id), "rejected", outcome.decision.actor)

    @app.post("/proposals/{ref}/resume", name="resume_form")
    def resume_form(request: Request, ref: str, background: BackgroundTasks) -> Response:
        try:
            if resume_in_background:
                pid = str(service.view(ref).proposal.id)
                background.add_task(_resume_in_background, pid)
                flash = "resuming"
            else:
                outcome = service.resume_decided(ref)
                pid = str(outcome.proposal.id)
                flash = "resume_failed" if outcome.resume == "failed" else "applied"
        except PipewardenError as exc:
            return detail_page(request, ref, error=exc, status_code=status_code_for(exc))
        return RedirectResponse(f"/proposals/{pid}?flash={flash}", status_code=303)

    # ------------------------------------------------------------------ JSON API
    def api_error(exc: PipewardenError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status_code_for(exc))

    @app.get("/api/proposals")
    def api_list(status: str | None = None) -> Response:
        statuses: list[str] | None = None
        if status:
            statuses = [s.strip() for s in status.split(",") if s.strip()]
            known = [s.value for s in ProposalStatus]
            bad = [s for s in statuses if s not in known]
            if bad:
                return JSONResponse(
                    {"error": f"unknown status {bad[0]!r}", "hint": f"use one of: {', '.join(known)}"},
                    status_code=400,
                )
        proposals = service.queue() if statuses is None else StateStore().list_proposals(statuses)
        return JSONResponse(render.proposals_json(proposals))

    @app.get("/api/proposals/{ref}")
    def api_get(ref: str) -> Response:
        try:
            v = service.view(ref)
        except PipewardenError as exc:
            return api_error(exc)
        return JSONResponse(render.proposal_detail_json(v.proposal, v.decisions, v.audit, event=v.event))

    @app.post("/api/proposals/{ref}/decision")
    def api_decide(ref: str, body: DecisionRequest, background: BackgroundTasks) -> Response:
        try:
            if body.verdict == Verdict.approve:
                outcome = service.approve(
                    ref, body.actor, via="web", reason=body.reason, resume=not resume_in_background
                )
                if resume_in_background:
                    background.add_task(_resume_in_background, str(outcome.proposal.id))
                    outcome = outcome.model_copy(update={"resume": "scheduled"})
            else:
                outcome = service.reject(ref, body.actor, body.reason, via="web")
        except PipewardenError as exc:
            return api_error(exc)
        return JSONResponse(render.outcome_json(outcome))

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            StateStore().list_proposals(limit=1)
        except SQLAlchemyError as exc:
            return JSONResponse({"status": "error", "error": f"state DB unreachable: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app


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


def serve(host: str = "127.0.0.1", port: int = 8765, *, resume_in_background: bool = True) -> None:
    """Serve the inbox with uvicorn until interrupted; prints the URL first."""
    import uvicorn

    ensure_port_free(host, port)
    print(f"pipewarden inbox: http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    uvicorn.run(create_app(resume_in_background=resume_in_background), host=host, port=port, log_level="warning")
