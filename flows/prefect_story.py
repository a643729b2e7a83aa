"""What an on-call engineer sees of pipewarden in Prefect's UI: named runs, artifacts, lifecycle events, re-run links.

- A guarded flow run is named after its dataset and load (`orders: load 3f2a9c1b0d4e`, `run_name`), renamed from
  the guard task through Prefect's client (`name_current_run`), and carries a markdown artifact saying what the
  guard did: the rows, and for a halt the event, the proposal once there is one, else the command to look at it
  (`guard_artifact`).
- The proposal's life (proposed, approved, rejected, applied, verified, rolled back, re-opened, expired) is emitted
  as Prefect events (`LIFECYCLE_EVENTS`) on the dataset's resource, with the proposal, the flow run that saw the
  fault and its deployment as related resources. `LifecycleMirror` follows the audit log (every transition is an
  audit entry, whichever process made it: the inbox, Slack, the CLI or the worker) from a cursor kept in the home,
  so it needs no hook in the store and loses nothing to a crash: an entry is mirrored at least once, under an id
  derived from its hash (Prefect's server drops a second copy). When a proposal appears, the flow run that saw its
  fault gets a link artifact to it.
- A re-run after approval is linked to the run it repairs: the tag `pipewarden-repairs:<flow run id>`
  (`repair_tags`), a name that says so, and an artifact linking the original run and the proposal
  (`mark_repair_run`).

Everything here is best effort: Prefect being unreachable is logged, never raised, and never changes what the guard
or the supervisor decides. Hand-written over Prefect's client and `emit_event`; nothing in Prefect follows an
external log.

Public names: `run_name`, `name_current_run`, `guard_artifact`, `LIFECYCLE_EVENTS`, `LifecycleMirror`,
`Repair`, `repair_for`, `repair_tags`, `mark_repair_run`, `link_repair_run`, `tell_pipeline_run`, `proposal_url`, `prefect_configured`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipewarden.audit import AuditEntry
from pipewarden.models import Proposal, ProposalStatus
from pipewarden.settings import get_settings
from pipewarden.store import StateStore

log = logging.getLogger(__name__)

REPAIRS_TAG = "pipewarden-repairs:"
RERUN_TAG = "pipewarden-rerun"
LIFECYCLE_EVENTS: dict[str, str] = {
    "proposed": "pipewarden.proposal.proposed",
    ProposalStatus.approved.value: "pipewarden.proposal.approved",
    ProposalStatus.rejected.value: "pipewarden.proposal.rejected",
    ProposalStatus.applied.value: "pipewarden.proposal.applied",
    ProposalStatus.verified.value: "pipewarden.proposal.verified",
    ProposalStatus.rolled_back.value: "pipewarden.proposal.rolled-back",
    ProposalStatus.pending.value: "pipewarden.proposal.reopened",  # only ever entered again after a rollback
    ProposalStatus.expired.value: "pipewarden.proposal.expired",
}
"""Audit action -> Prefect event name: the proposal's life as Prefect events (nothing else in the log is mirrored)."""
EVENT_NS = uuid.UUID("0b7e3f0e-5a51-4c8e-b1c4-7c1f3d6a9e21")
CURSOR_FILE = "prefect-lifecycle.cursor"
_PAGE = 500


def prefect_configured() -> bool:
    """Whether a Prefect API is configured (PREFECT_API_URL): a running server, Cloud, or a test harness's."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def proposal_url(proposal_id: object) -> str:
    """The proposal's page in the web inbox."""
    return f"{get_settings().public_url.rstrip('/')}/proposals/{proposal_id}"


def _short_load(dataset: str, load_id: str) -> str:
    return load_id.removeprefix(f"{dataset}-") or load_id


def run_name(dataset: str, load_id: str, *, repairing: str | None = None) -> str:
    """A guarded flow run's name: `orders: load 3f2a9c1b0d4e`, and `... (re-run for proposal 1a2b3c4d)`."""
    name = f"{dataset}: load {_short_load(dataset, load_id)}"
    return f"{name} (re-run for proposal {repairing[:8]})" if repairing else name


def _artifact_key(*parts: str) -> str:
    """An artifact key Prefect accepts: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:120]


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


# --------------------------------------------------------------------------- the guarded run
def name_current_run(dataset: str, load_id: str) -> str | None:
    """Rename the flow run (and the guard's task run) this code runs in after the dataset and load; a re-run
    tagged `pipewarden-repairs:` says so. Returns the name, or None outside a flow run or when Prefect refused."""
    from prefect.runtime import flow_run, task_run

    if not flow_run.id:
        return None
    tags = list(flow_run.tags or [])
    repairing = next((t.removeprefix(REPAIRS_TAG).split(":")[0] for t in tags if t.startswith(REPAIRS_TAG)), None)
    name = run_name(dataset, load_id, repairing=repairing)
    try:
        with _client() as client:
            client.update_flow_run(uuid.UUID(str(flow_run.id)), name=name)
            if task_run.id:
                client.set_task_run_name(uuid.UUID(str(task_run.id)), f"pipewarden-guard {name}")
    except Exception as exc:  # Prefect unreachable: the guard's verdict stands; only the name is missing
        log.warning("could not name flow run %s %r: %s", flow_run.id, name, exc)
        return None
    return name


def guard_markdown(result: Any, *, message: str = "", hint: str = "", store: StateStore | None = None) -> str:
    """What the guard did, for the flow run's artifact: rows, and for a halt the event and the proposal (its page)
    once there is one, else the command to see the event."""
    lines = [f"# {result.dataset}: load `{result.load_id}` {'halted' if result.halted else 'accepted'}", "",
             "| rows in | accepted | quarantined |", "|---|---|---|",
             f"| {result.rows_in} | {result.rows_accepted} | {result.rows_quarantined} |", ""]
    if not result.halted:
        return "\n".join(lines)
    lines += [f"**Halted at {result.halted_at}:** {result.reason or 'see the event'}", ""]
    if result.halt_event_id:
        store = store or StateStore()
        event = store.get_event(result.halt_event_id)
        lines.append(f"- event: `{event.kind}` `{result.halt_event_id}`")
        proposal = store.proposal_for_event(result.halt_event_id)
        if proposal is not None:
            lines.append(f"- proposal [{proposal.short_id}]({proposal_url(proposal.id)}) ({proposal.status.value}): "
                         f"{proposal.title}")
            lines.append(f"- `pipewarden inbox show {proposal.short_id}`")
        else:
            lines.append("- no proposal yet: the supervisor drafts one (`pipewarden supervise --once`), and this "
                         "run gets a link to it")
            lines.append(f"- `pipewarden inbox list --dataset {result.dataset}`")
    if message:
        lines += ["", f"> {message}"]
    if hint:
        lines += ["", hint]
    return "\n".join(lines)


def guard_artifact(result: Any, *, message: str = "", hint: str = "") -> Any:
    """Attach the guard's markdown artifact to the current flow and task run; None outside a run or on failure."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    if not flow_run.id:
        return None
    try:
        return create_markdown_artifact(
            markdown=guard_markdown(result, message=message, hint=hint),
            key=_artifact_key("pipewarden", result.dataset, "guard"),
            description=f"pipewarden guard: {result.dataset} load {result.load_id} {result.status}",
        )
    except Exception as exc:  # Prefect unreachable: the guard's verdict stands
        log.warning("could not attach the guard's artifact to flow run %s: %s", flow_run.id, exc)
        return None


def _link_artifact(client: Any, flow_run_id: str, key: str, link: str, text: str, description: str) -> bool:
    """A link artifact on `flow_run_id` (another run than the current one), once per key: False if it was there."""
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id = uuid.UUID(flow_run_id)
    there = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                                                 flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    if there:
        return False
    client.create_artifact(ArtifactCreate(key=key, type="markdown", flow_run_id=run_id, description=description,
                                          data=f"[{text}]({link})"))
    return True


# --------------------------------------------------------------------------- the proposal's life
class LifecycleMirror:
    """Mirror the proposals' transitions from the audit log to Prefect events, from a cursor kept in the home.

    `send` is `prefect.events.emit_event` (injected for tests); `cursor_path` defaults to
    `<home>/prefect-lifecycle.cursor` (the last audit seq mirrored, for the state DB it was counted in).
    `pump()` mirrors every entry after the cursor and moves it on.
    """

    def __init__(self, store: StateStore | None = None, *, send: Callable[..., Any] | None = None,
                 cursor_path: Path | None = None, link_runs: bool = True) -> None:
        self.store = store or StateStore()
        self.send = send
        self.cursor_path = cursor_path or get_settings().home / CURSOR_FILE
        self.link_runs = link_runs

    # -- the cursor
    def _state(self) -> str:
        """Which state DB the cursor counts in (a hash of its URL): a cursor of another DB starts over."""
        import hashlib

        return hashlib.sha256(str(self.store.url).encode()).hexdigest()[:16]

    def cursor(self) -> int:
        try:
            saved = json.loads(self.cursor_path.read_text(encoding="utf-8"))
            return int(saved["seq"]) if saved.get("state") == self._state() else 0
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # damaged: start over (Prefect drops dups)
            log.warning("unreadable %s (%s): mirroring the proposal lifecycle from the start", self.cursor_path, exc)
            return 0

    def _save(self, seq: int) -> None:
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"seq": seq, "state": self._state()}), encoding="utf-8")
        os.replace(tmp, self.cursor_path)

    # -- one entry
    def event_for(self, entry: AuditEntry, proposal: Proposal) -> dict[str, Any]:
        """The keyword arguments of `emit_event` for one lifecycle entry."""
        event = self.store.get_event(proposal.event_id)
        resource = {"prefect.resource.id": event.resource_id, "prefect.resource.name": proposal.dataset,
                    "pipewarden.dataset": proposal.dataset, "pipewarden.proposal.id": str(proposal.id)}
        if event.load_id:
            resource["pipewarden.load_id"] = event.load_id
        related = [{"prefect.resource.id": f"pipewarden.proposal.{proposal.id}", "prefect.resource.role": "proposal",
                    "prefect.resource.name": proposal.title[:200]}]
        run = _original_run(event)
        if run.get("flow_run_id"):
            related.append({"prefect.resource.id": f"prefect.flow-run.{run['flow_run_id']}",
                            "prefect.resource.role": "flow-run"})
        if run.get("deployment_id"):
            related.append({"prefect.resource.id": f"prefect.deployment.{run['deployment_id']}",
                            "prefect.resource.role": "deployment",
                            "prefect.resource.name": str(run.get("deployment_name") or "")})
        payload = {"proposal_id": str(proposal.id), "short_id": proposal.short_id, "title": proposal.title,
                   "agent": proposal.agent, "change": proposal.change.kind, "risk": proposal.risk.value,
                   "status": entry.action if entry.action != "proposed" else str(entry.detail.get("status", "")),
                   "actor": entry.actor, "reason": str(entry.detail.get("reason", ""))[:1000],
                   "event_id": str(proposal.event_id), "event_kind": event.kind, "url": proposal_url(proposal.id),
                   "audit_seq": entry.seq}
        return {"event": LIFECYCLE_EVENTS[entry.action], "resource": resource, "related": related,
                "payload": payload, "occurred": entry.at, "id": uuid.uuid5(EVENT_NS, entry.hash)}

    def pump(self) -> list[Any]:
        """Mirror every lifecycle entry after the cursor; return what `send` returned for each. Never raises for
        Prefect: a failed send is logged and the cursor stays before it (it is sent again next time)."""
        send = self.send
        if send is None:
            from prefect.events import emit_event as send
        sent: list[Any] = []
        cursor = self.cursor()
        while True:
            entries = self.store.audit_after(cursor, LIFECYCLE_EVENTS, limit=_PAGE)
            for entry in entries:
                try:
                    proposal = self.store.get_proposal(entry.proposal_id or "")
                    kwargs = self.event_for(entry, proposal)
                    sent.append(send(**kwargs))
                    if entry.action == "proposed" and self.link_runs:
                        link_proposal_to_run(proposal, store=self.store)
                except Exception as exc:  # Prefect (or one entry) failed: keep the cursor before it, try next pass
                    log.warning("proposal lifecycle entry %s (%s) not mirrored to Prefect: %s",
                                entry.seq, entry.action, exc)
                    self._save(cursor)
                    return sent
                cursor = entry.seq
            self._save(cursor)
            if len(entries) < _PAGE:
                return sent


def _original_run(event: Any) -> dict[str, Any]:
    """The Prefect run that saw `event`'s fault: the load's recorded run context, else the event's run id."""
    ctx: dict[str, Any] = {}
    if event.load_id:
        from pipewarden.flows.guard import run_context

        try:
            ctx = run_context(event.dataset, event.load_id) or {}
        except Exception as exc:  # the landed batch is gone or unreadable: the event's own run id still says it
            log.debug("no run context for %s load %s: %s", event.dataset, event.load_id, exc)
    if not ctx.get("flow_run_id") and event.run_id:
        ctx = {**ctx, "flow_run_id": event.run_id}
    return ctx


def link_proposal_to_run(proposal: Proposal, *, store: StateStore | None = None) -> bool:
    """Give the flow run that saw the proposal's fault a link artifact to the proposal (once). False when there is
    no such run or the link was already there."""
    store = store or StateStore()
    run = _original_run(store.get_event(proposal.event_id))
    if not run.get("flow_run_id"):
        return False
    with _client() as client:
        return _link_artifact(client, str(run["flow_run_id"]), _artifact_key("pipewarden-proposal", proposal.short_id),
                              proposal_url(proposal.id), f"proposal {proposal.short_id}: {proposal.title}",
                              f"pipewarden proposal for this run's {proposal.dataset} fault")


# --------------------------------------------------------------------------- re-runs
class Repair(BaseModel):
    """The proposal a re-run verifies and the flow run it repairs."""

    model_config = ConfigDict(frozen=True)
    proposal_id: str
    """The applied proposal the re-run verifies."""
    short_id: str
    title: str
    dataset: str
    load_id: str
    original_flow_run_id: str | None = None
    """The flow run that saw the fault (None when the load was not guarded in a flow run)."""


def repair_for(dataset: str, load_id: str, *, store: StateStore | None = None) -> Repair | None:
    """The proposal being verified by re-running `load_id` (applying or applied, its event on that load), if any."""
    store = store or StateStore()
    for p in store.list_proposals([ProposalStatus.applying.value, ProposalStatus.applied.value]):
        if p.dataset != dataset:
            continue
        event = store.get_event(p.event_id)
        if event.load_id == load_id:
            run = _original_run(event)
            return Repair(proposal_id=str(p.id), short_id=p.short_id, title=p.title, dataset=dataset,
                          load_id=load_id, original_flow_run_id=run.get("flow_run_id"))
    return None


def repair_tags(repair: Repair | None) -> list[str]:
    """The tags of a re-run: `pipewarden-rerun`, and `pipewarden-repairs:<proposal>:<original flow run>`."""
    if repair is None:
        return [RERUN_TAG]
    return [RERUN_TAG, f"{REPAIRS_TAG}{repair.short_id}:{repair.original_flow_run_id or 'none'}"]


def _repair_markdown(repair: Repair) -> str:
    lines = [f"# Re-run of {repair.dataset} load `{repair.load_id}`", "",
             f"- verifies proposal [{repair.short_id}]({proposal_url(repair.proposal_id)}): {repair.title}"]
    if repair.original_flow_run_id:
        lines.append(f"- repairs flow run `{repair.original_flow_run_id}` "
                     f"(tag `{REPAIRS_TAG}{repair.short_id}:{repair.original_flow_run_id}`)")
    return "\n".join(lines)


def link_repair_run(flow_run_id: object, repair: Repair) -> bool:
    """Give a re-run's flow run (another process's, e.g. started by `run_deployment`) the artifact linking it to the
    run it repairs and the proposal. Never raises; False when it could not."""
    from prefect.client.schemas.actions import ArtifactCreate

    try:
        with _client() as client:
            client.create_artifact(ArtifactCreate(
                key=_artifact_key("pipewarden-repair", repair.short_id), type="markdown",
                flow_run_id=uuid.UUID(str(flow_run_id)), data=_repair_markdown(repair),
                description=f"re-run for proposal {repair.short_id}"))
        return True
    except Exception as exc:
        log.warning("could not link re-run %s to proposal %s: %s", flow_run_id, repair.short_id, exc)
        return False


def tell_pipeline_run(dataset: str, load_id: str, *, rerun: bool) -> None:
    """Inside `pipewarden-pipeline`: a re-run is named after the proposal it verifies and linked to the run it
    repairs (`mark_repair_run`); any other run is named after its dataset and load."""
    if not (rerun and mark_repair_run(dataset, load_id)):
        name_current_run(dataset, load_id)


def mark_repair_run(dataset: str, load_id: str) -> Repair | None:
    """Inside a re-check flow run: name it after the proposal it verifies, tag it with the run it repairs, and
    attach the artifact linking both. Returns the repair, or None outside a run or when no proposal is verified."""
    from prefect.runtime import flow_run

    if not flow_run.id:
        return None
    repair = repair_for(dataset, load_id)
    if repair is None:
        return None
    try:
        with _client() as client:
            run_id = uuid.UUID(str(flow_run.id))
            tags = sorted(set(flow_run.tags or []) | set(repair_tags(repair)))
            client.update_flow_run(run_id, name=f"re-check for proposal {repair.short_id}: "
                                                 f"{run_name(dataset, load_id)}", tags=tags)
    except Exception as exc:
        log.warning("could not name re-check run %s for proposal %s: %s", flow_run.id, repair.short_id, exc)
    link_repair_run(flow_run.id, repair)
    return repair
