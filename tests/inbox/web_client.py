"""Helpers for the web inbox tests: sign a TestClient in with a real personal token, read a page's CSRF token,
and snapshot the state DB so a refusal can be shown to change nothing."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from pipewarden import db
from pipewarden.store import StateStore

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a rendered page carries in its forms."""
    match = CSRF_RE.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, name: str, store: StateStore | None = None) -> str:
    """Issue `name` a personal token and sign the client in through the real /login form; returns the token."""
    token = (store or StateStore()).issue_token(name)
    csrf = csrf_of(client.get("/login").text)
    resp = client.post("/login", data={"token": token, "csrf_token": csrf, "next": "/"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    return token


def page_csrf(client: TestClient, path: str) -> str:
    resp = client.get(path)
    assert resp.status_code == 200, resp.text
    return csrf_of(resp.text)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def snapshot(store: StateStore) -> dict[str, Any]:
    """The queue (every proposal row), decisions, versions and the audit log, as plain rows."""
    with store.engine.connect() as conn:
        def rows(table: sa.Table, order: Any) -> list[tuple]:
            return [tuple(r) for r in conn.execute(sa.select(table).order_by(order)).all()]

        return {
            "proposals": rows(db.proposals, db.proposals.c.id),
            "decisions": rows(db.decisions, db.decisions.c.id),
            "versions": rows(db.versions, db.versions.c.id),
            "audit": rows(db.audit_log, db.audit_log.c.seq),
        }


def work_once(store: StateStore, resume: Any = None, *, owner: str = "test-worker", give_up: bool = True) -> list[str]:
    """One pass of a stand-in for the supervisor's worker over the durable hand-off: every proposal whose resume is
    requested are leased, resumed by `resume` (default: the fake resumer: approved -> ... -> verified) and
    released, as `agents.supervisor` does, then the Notifier port is told (`proposal_updated`, so Slack shows the
    outcome). A failure releases the lease as failed (given up when `give_up`, else retried in a minute). Returns
    the ids it resumed."""
    from datetime import timedelta

    from pipewarden.ids import utcnow
    from pipewarden.ports import notify
    from tests.inbox import fake_resumer

    resume = resume or fake_resumer.resume
    done = []
    for pid in store.resume_requested():
        taken = utcnow()
        store.take_proposal_lease(pid, owner, now=taken)
        try:
            resume(pid)
        except Exception as exc:  # the worker records it and goes on
            store.release_proposal_lease(pid, owner, finished=False, error=f"{type(exc).__name__}: {exc}",
                                         retry_at=None if give_up else utcnow() + timedelta(minutes=1))
            continue
        store.release_proposal_lease(pid, owner, finished=True, requested_before=taken)
        notify("proposal_updated", pid)
        done.append(pid)
    return done
