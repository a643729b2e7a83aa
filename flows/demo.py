"""The main job: a clean month of flights, then a month with schema drift; the agent proposes a fix.

With `approve_all`, a demo approver approves every proposal and the story runs to the end (applied,
re-run, verified). Otherwise the web inbox is served until Ctrl-C and a person approves there or with
`pipewarden inbox approve ID`.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipewarden.settings import get_settings

DEMO_APPROVER = "alice"  # the flights owner in examples/flights/approvers.yaml
DEMO_MARKER = ".pipewarden-demo"


class DemoSummary(BaseModel):
    home: str
    events_seen: int = 0
    events: list[dict[str, Any]] = Field(default_factory=list)
    proposals_made: int = 0
    proposals: list[dict[str, Any]] = Field(default_factory=list)
    approved: int = 0
    applied: int = 0
    verified: int = 0
    rolled_back: int = 0
    audit_ok: bool = False
    runs: list[dict[str, Any]] = Field(default_factory=list)
    step_seconds: dict[str, float] = Field(default_factory=dict)
    inbox_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.audit_ok and self.proposals_made > 0


def run_demo(*, approve_all: bool = False, serve: bool = True, port: int = 8765, home: Path | None = None,
             log: Callable[[str], None] | None = None) -> DemoSummary:
    say = log or (lambda _msg: None)
    if serve and not approve_all:
        from pipewarden.inbox.web import ensure_port_free

        ensure_port_free("127.0.0.1", port)  # before minutes of work, not after
    default_home = get_settings().home
    home = (home or default_home).resolve()
    _reset_demo_home(home)
    os.environ["PIPEWARDEN_HOME"] = str(home)
    get_settings.cache_clear()
    summary = DemoSummary(home=str(home))

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        summary.step_seconds[name] = round(time.perf_counter() - t0, 2)
        return out

    from pipewarden.flows.knowledge_sync import sync_knowledge
    from pipewarden.flows.pipeline import prepare_month, run_batch
    from pipewarden.inbox.service import approve
    from pipewarden.ports import supervisor
    from pipewarden.store import StateStore

    say(f"[bold]pipewarden demo[/] — state in {home}")
    say("indexing contracts, runbooks and lineage into the knowledge index ...")
    step("index_knowledge", sync_knowledge)

    say("month 1 (clean): ingest -> validate -> transform -> features -> train -> score ...")
    clean = step("run_clean_month", lambda: run_batch("flights", str(prepare_month(1))))
    summary.runs.append(clean.model_dump(mode="json"))
    say(f"  {clean.status}: {clean.rows_in} rows, {clean.rows_quarantined} quarantined with reasons")

    say("month 2 arrives with schema drift (dep_delay renamed departureDelay, flight numbers as strings) ...")
    drifted = step("run_drifted_month", lambda: run_batch("flights", str(prepare_month(2, drift=True))))
    summary.runs.append(drifted.model_dump(mode="json"))
    say(f"  {drifted.status} at {drifted.halted_at}: {len(drifted.events)} event(s) in the outbox")

    say("supervisor: claiming events and running the agents ...")
    report = step("supervise", lambda: supervisor()())
    for line in report.lines():
        say(f"  {line}")

    store = StateStore()
    pending = store.list_proposals(["pending"])
    if approve_all:
        for p in pending:
            say(f"approving proposal {p.short_id} as {DEMO_APPROVER}: {p.title}")
            outcome = step(f"approve_apply_verify_{p.short_id}",
                           lambda p=p: _approve_by_policy(approve, p.id))
            say(f"  {outcome.proposal.status.value}" + (f": {outcome.proposal.status_reason}"
                                                       if outcome.proposal.status_reason else ""))
    elif serve:
        from pipewarden.inbox.web import serve as serve_web

        summary.inbox_url = f"http://127.0.0.1:{port}/"
        # The inbox needs a signed-in approver: a personal token for the demo's (stored hashed; shown once here).
        token = store.issue_token(DEMO_APPROVER)
        say(f"sign in as {DEMO_APPROVER} (flights owner): {summary.inbox_url}login?token={token}")
        for p in pending:
            say(f"proposal {p.short_id} waits: {p.title}")
            say(f"  approve at {summary.inbox_url}proposals/{p.id}")
            # every path absolute: the line works from any folder (no project lookup, no ./.pipewarden made)
            env = f"PIPEWARDEN_PROJECT={get_settings().project_root} PIPEWARDEN_HOME={home} PIPEWARDEN_USER={DEMO_APPROVER} "
            say(f"  or from another terminal: {env}{Path(sys.argv[0]).resolve()} inbox approve {p.short_id}")
        say(f"serving the web inbox at {summary.inbox_url}; Ctrl-C to stop")
        try:
            serve_web(host="127.0.0.1", port=port)
        except KeyboardInterrupt:
            pass

    if approve_all or not serve:
        say("supervisor: a last pass for events the re-runs raised ...")
        final = step("supervise_after", lambda: supervisor()())
        for line in final.lines():
            say(f"  {line}")
    _fill(summary, store)
    say(f"events {summary.events_seen}, proposals {summary.proposals_made}, approved {summary.approved}, "
        f"applied {summary.applied}, verified {summary.verified}, rolled back {summary.rolled_back}; "
        f"audit log {'verifies' if summary.audit_ok else 'is BROKEN'}")
    return summary


def _approve_by_policy(approve: Callable[..., Any], proposal_id: Any) -> Any:
    """Approve as configured people would: the demo approver if the rule lets them, else the first eligible
    approver; then, while the rule wants more people (two-person rule), the next eligible one."""
    from pipewarden.inbox.service import proposal_view

    people = proposal_view(proposal_id).requirement.eligible_people  # type: ignore[union-attr]
    first = DEMO_APPROVER if DEMO_APPROVER in people or not people else people[0]
    outcome = approve(proposal_id, first, via="cli", reason="demo --approve-all")
    while outcome.proposal.status.value == "pending" and outcome.requirement and outcome.requirement.eligible_people:
        outcome = approve(proposal_id, outcome.requirement.eligible_people[0], via="cli", reason="demo --approve-all")
    return outcome


def _reset_demo_home(home: Path) -> None:
    """Start the story from nothing, but only in a folder the demo made (it carries DEMO_MARKER) or an empty one:
    state the demo did not create is never wiped."""
    from pipewarden.errors import UserError

    if home.exists() and any(home.iterdir()):
        if not (home / DEMO_MARKER).exists():
            raise UserError(
                f"{home} holds pipewarden state the demo did not create; the demo starts from an empty folder",
                hint="run it elsewhere with --home DIR (or PIPEWARDEN_HOME=DIR)",
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / DEMO_MARKER).write_text("made by `pipewarden demo`; the next demo run wipes this folder\n")


def _fill(summary: DemoSummary, store: Any) -> None:
    events = store.list_events()
    summary.events_seen = len(events)
    summary.events = [{"id": e["id"], "kind": e["kind"], "dataset": e["dataset"], "status": e["status"]} for e in events]
    proposals = store.list_proposals()
    summary.proposals_made = len(proposals)
    summary.proposals = []
    for p in proposals:
        entries = store.audit_entries(str(p.id))
        actions = [a.action for a in entries]
        summary.approved += "approved" in actions
        summary.applied += "applied" in actions
        summary.verified += "verified" in actions
        summary.rolled_back += "rolled_back" in actions
        verified = [a.detail for a in entries if a.action == "verified"]
        summary.proposals.append({
            "id": str(p.id), "agent": p.agent, "title": p.title, "status": p.status.value,
            "change": p.change.model_dump(mode="json"), "planner": p.planner,
            "dry_run_heals": bool(p.dry_run and p.dry_run.heals),
            "citations": [{"chunk_id": c.chunk_id, "source": c.source, "kind": c.kind} for c in p.citations],
            "verification": verified[-1] if verified else None,
        })
    summary.audit_ok = store.verify_audit().ok
