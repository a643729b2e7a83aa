"""The main job, on a project's own flow: a clean batch, then a drifted one; the agents propose, people approve.

What runs is the project's `[demo]` section (`pipewarden.project.DemoConfig`): the team's own Prefect flow
(`module:function` from the project folder), called in this process with the clean parameters, then with the
drifted ones, whose flow run fails on the halted batch (e.g. the flights example's monthly flow: a clean January,
then a February with schema drift).

With `approve_all`, every proposal is approved by as many eligible approvers as its rule needs (the two-person rule
for a model promotion included), round after round, with a supervisor pass between rounds, until nothing is pending
and no event is left: the drift fix is applied, the batch re-run and verified, and whatever the re-run raised (a
model-drift event, the retrain agent's promotion) is handled too. Otherwise the web inbox is served until Ctrl-C,
with a supervisor (`pipewarden supervise`, its own process) beside it, whose results are printed as they come; a
person approves in the browser or with the printed command, which names the project and the home folder so it works
from any folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipewarden.errors import ConfigError
from pipewarden.settings import get_settings

DEMO_MARKER = ".pipewarden-demo"
MAX_ROUNDS = 6  # approve-all: supervise -> approve rounds (e.g. the flights story needs three)


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
    settings = get_settings()
    project = settings.project_config
    demo = project.config.demo
    if demo is None:
        raise ConfigError(f"{project.file} has no [demo] section: the demo runs the project's own flow",
                          hint="add [demo] with flow = 'module:function', dataset, clean and drifted parameters "
                               "(see examples/flights/pipewarden.toml)")
    if serve and not approve_all:
        from pipewarden.inbox.web import ensure_port_free

        ensure_port_free("127.0.0.1", port)  # before minutes of work, not after
    home = (home or settings.home).resolve()
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
    from pipewarden.ports import supervisor
    from pipewarden.store import StateStore

    flow = project.load_callable(demo.flow, what="demo.flow")
    say(f"[bold]pipewarden demo[/] — project {project.config.name}, state in {home}")
    say("indexing contracts, runbooks and lineage into the knowledge index ...")
    step("index_knowledge", sync_knowledge)

    say(f"the clean batch: {demo.flow}({_params(demo.clean)}) ...")
    clean = step("run_clean", lambda: run_flow(flow, demo.clean, demo.dataset))
    summary.runs.append(clean.model_dump(mode="json"))
    say(f"  {clean.status}: {clean.rows_in} rows, {clean.rows_quarantined} quarantined with reasons")

    say(f"the drifted batch: {demo.flow}({_params(demo.drifted)}) ...")
    drifted = step("run_drifted", lambda: run_flow(flow, demo.drifted, demo.dataset))
    summary.runs.append(drifted.model_dump(mode="json"))
    say(f"  {drifted.status} at {drifted.halted_at}: {len(drifted.events)} event(s) in the outbox"
        + (f" — the flow run failed: {drifted.reason}" if drifted.status == "halted" else ""))

    def supervise(name: str) -> Any:
        report = step(name, lambda: supervisor()())
        for line in report.lines():
            say(f"  {line}")
        return report

    store = StateStore()
    if approve_all:
        for round_no in range(1, MAX_ROUNDS + 1):
            say(f"supervisor (round {round_no}): claiming events, running the agents, resuming decided proposals ...")
            report = supervise(f"supervise_{round_no}")
            pending = store.list_proposals(["pending"])
            for p in pending:
                say(f"approving proposal {p.short_id}: {p.title}")
                outcome = step(f"approve_{p.short_id}", lambda p=p: approve_as_needed(p.id))
                say(f"  approved by {', '.join(outcome[1])}; {outcome[0].proposal.status.value}"
                    + (f": {outcome[0].proposal.status_reason}" if outcome[0].proposal.status_reason else ""))
            if not pending and not report.handled and not getattr(report, "resumed", []):
                break
    else:
        say("supervisor: claiming events and running the agents ...")
        supervise("supervise")
        if serve:
            _serve_with_supervisor(summary, store, port, home, demo.approver, say)
        else:
            say("supervisor: a last pass for events the re-runs raised ...")
            supervise("supervise_after")
    _fill(summary, store)
    say(f"events {summary.events_seen}, proposals {summary.proposals_made}, approved {summary.approved}, "
        f"applied {summary.applied}, verified {summary.verified}, rolled back {summary.rolled_back}; "
        f"audit log {'verifies' if summary.audit_ok else 'is BROKEN'}")
    return summary


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def run_flow(flow: Any, params: dict[str, Any], dataset: str) -> Any:
    """Call the team's flow in this process and describe the batch of `dataset` it landed as a RunResult: completed,
    halted (the flow run Failed on the guard's halt) or failed (it failed for another reason)."""
    from pipewarden.errors import BatchHalted
    from pipewarden.flows.ingest import list_loads
    from pipewarden.flows.pipeline import _quarantined
    from pipewarden.models import RunResult

    before = {row["load_id"] for row in list_loads(dataset)}
    state = flow(**params, return_state=True)
    landed = [row for row in list_loads(dataset) if row["load_id"] not in before]
    load = landed[-1] if landed else {}
    load_id = str(load.get("load_id", ""))
    result = RunResult(dataset=dataset, load_id=load_id, status="completed", rows_in=int(load.get("rows") or 0),
                       rows_quarantined=_quarantined(dataset, load_id) if load_id else 0)
    if state.is_completed():
        out = state.result(raise_on_failure=False)
        if isinstance(out, dict):
            result.events = [str(e) for e in out.get("model_events", [])]
        return result
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BatchHalted) and exc.result is not None:
        guard = exc.result
        result.status, result.halted_at, result.reason = "halted", guard.halted_at, guard.reason
        result.events, result.halt_event = list(guard.event_ids), guard.halt_event_id
        result.rows_quarantined = guard.rows_quarantined
    else:
        result.status, result.halted_at = "failed", "flow"
        result.reason = f"{state.name}: {state.message or exc}"
    return result


def approve_as_needed(proposal_id: Any) -> tuple[Any, list[str]]:
    """Approve as configured people would, until the proposal's rule is met: each round the first eligible
    approver who has not approved yet (the two-person rule takes two). Returns the last outcome and who approved."""
    from pipewarden.inbox.service import approve, proposal_view

    who: list[str] = []
    people = list(proposal_view(proposal_id).requirement.eligible_people)  # type: ignore[union-attr]
    outcome = None
    while people:
        person = people.pop(0)
        outcome = approve(proposal_id, person, via="cli", reason="demo --approve-all")
        who.append(person)
        if outcome.proposal.status.value != "pending":
            break
        people = [p for p in (outcome.requirement.eligible_people if outcome.requirement else []) if p not in who]
    if outcome is None:
        raise ConfigError(f"proposal {proposal_id} has no eligible approver in the project's approvers file",
                          hint="add a person with the role the approval rule needs to approvers.yaml")
    return outcome, who


def _serve_with_supervisor(summary: DemoSummary, store: Any, port: int, home: Path, approver: str | None,
                           say: Callable[[str], None]) -> None:
    """Serve the web inbox until Ctrl-C with a supervisor process beside it, printing what it handles and, for each
    proposal that waits, the commands that approve it."""
    from pipewarden.inbox.web import serve as serve_web

    summary.inbox_url = f"http://127.0.0.1:{port}/"
    pending = store.list_proposals(["pending"])
    tokens = Tokens(store)
    person = approver or _first_approver(pending)
    if person:
        # The inbox needs a signed-in approver: a personal token (stored hashed; shown once here).
        say(f"sign in as {person}: {summary.inbox_url}login?token={tokens.of(person)}")
    for p in pending:
        for line in waiting_lines(p, summary.inbox_url, home, tokens):
            say(line)
    worker = _start_supervisor(say, lambda pid: waiting_lines(store.get_proposal(pid), summary.inbox_url or "",
                                                               home, tokens))
    say(f"serving the web inbox at {summary.inbox_url} with a supervisor beside it; Ctrl-C to stop")
    try:
        serve_web(host="127.0.0.1", port=port, worker=False)  # the supervisor above is the worker, printed here
    except KeyboardInterrupt:
        pass
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


class Tokens:
    """One personal token per demo approver, issued on first use (stored hashed; shown in the terminal once)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.issued: dict[str, str] = {}
        self.lock = threading.Lock()

    def of(self, person: str) -> str:
        with self.lock:
            if person not in self.issued:
                self.issued[person] = self.store.issue_token(person)
            return self.issued[person]


def waiting_lines(proposal: Any, inbox_url: str, home: Path, tokens: Tokens) -> list[str]:
    """What to print for a proposal that waits: its title, its page, and a command per person who may approve it
    (as many as the rule needs, e.g. the ML owner and the dataset's owner for a model promotion)."""
    from pipewarden.inbox.service import proposal_view

    req = proposal_view(proposal.id).requirement
    lines = [f"proposal {proposal.short_id} waits: {proposal.title}",
             f"  approve at {inbox_url}proposals/{proposal.id}"]
    if req is None or not req.eligible_people:
        return lines
    if req.approvals_required > 1:
        lines.append(f"  the rule {req.rule!r} needs {req.approvals_required} people: {req.says or req.missing}")
    project = get_settings().project_root
    for person in req.eligible_people[: max(req.approvals_required, 1) + 1]:
        lines.append(f"  or, as {person}, from any folder: "
                     f"{approve_command(proposal.short_id, project, home, tokens.of(person))}")
    return lines


def approve_command(short_id: str, project: Path, home: Path, token: str) -> str:
    """The command that approves a proposal from any folder: every path absolute (no project lookup, no
    ./.pipewarden made), and the approver's personal token, which proves who decides."""
    return (f"PIPEWARDEN_PROJECT={project} PIPEWARDEN_HOME={home} PIPEWARDEN_TOKEN={token} "
            f"{Path(sys.executable).parent / 'pipewarden'} inbox approve {short_id}")


def _first_approver(pending: list[Any]) -> str | None:
    from pipewarden.inbox.service import proposal_view

    for p in pending:
        req = proposal_view(p.id).requirement
        if req is not None and req.eligible_people:
            return req.eligible_people[0]
    return None


def _start_supervisor(say: Callable[[str], None],
                      on_pending: Callable[[str], list[str]]) -> subprocess.Popen[str]:
    """`pipewarden supervise --json` in its own process (the warehouse and the stores are shared through their
    files, as between any two pipewarden processes); a thread prints every report that did something, and the
    approve commands of each new proposal that waits."""
    proc = subprocess.Popen([sys.executable, "-m", "pipewarden", "supervise", "--json", "--interval", "2"],
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    threading.Thread(target=_relay, args=(proc, say, on_pending), daemon=True).start()
    return proc


def _relay(proc: subprocess.Popen[str], say: Callable[[str], None],
           on_pending: Callable[[str], list[str]]) -> None:
    from pipewarden.agents.supervisor import SuperviseReport

    decoder, buffer = json.JSONDecoder(), ""
    assert proc.stdout is not None
    for line in proc.stdout:
        buffer += line
        while buffer.strip():
            try:
                obj, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                break  # an object not complete yet
            buffer = buffer.lstrip()[end:]
            try:
                report = SuperviseReport.model_validate(obj)
            except ValueError:
                continue
            if report.handled or report.resumed:
                for text in report.lines():
                    say(f"[supervisor] {text}")
            for h in report.handled:
                if h.status == "pending" and h.proposal_id:
                    try:
                        for text in on_pending(h.proposal_id):
                            say(text)
                    except Exception as exc:  # printing help must never stop the relay; say why instead
                        say(f"[supervisor] proposal {h.proposal_id[:8]} waits (cannot show its approvers: {exc})")


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
