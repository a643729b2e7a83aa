"""The composition root of the runtime: `default_runtime()` wires the real implementation of every port.

This is the one module of the kernel that names `flows/`, `agents/`, `tools/`, `policies/` and `inbox/` for the
ports (listed as a composition root in `tests/test_layering.py`). Each port is a small function that imports its
implementation when first called, so building the runtime loads none of them: `pipewarden --help` stays fast and
the web inbox never loads the agents until a resume runs.

Public names: `default_runtime()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from pipewarden.runtime import Runtime

if TYPE_CHECKING:
    from pydantic import BaseModel

    from pipewarden.models import Proposal, RunResult
    from pipewarden.ports import NotifyKind, Step


def default_runtime() -> Runtime:
    """The real parts: the Prefect pipeline, the agents' supervisor, the approval policy, the inbox, Slack."""
    return Runtime(pipeline_runner=run_batch, resumer=resume_proposal, supervisor=supervise_once, dry_runner=redry,
                   admission=admit, proposal_hook=on_proposal_created, notifier=notify)


def run_batch(dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False) -> RunResult:
    from pipewarden.flows.pipeline import run_batch

    return run_batch(dataset, source, load_id=load_id, rerun=rerun)


def resume_proposal(proposal_id: UUID | str) -> Proposal:
    from pipewarden.agents.supervisor import resume_proposal

    return resume_proposal(proposal_id)


def supervise_once(*, step: Step | None = None) -> BaseModel:
    from pipewarden.agents.supervisor import supervise_once

    return supervise_once(step=step)


def redry(proposal: Proposal, change: Any) -> Any:
    from pipewarden.tools.redry import redry

    return redry(proposal, change)


def admit(proposal: Proposal) -> Proposal:
    from pipewarden.policies.approval import admit

    return admit(proposal)


def on_proposal_created(proposal_id: str) -> None:
    from pipewarden.inbox.service import on_proposal_created

    on_proposal_created(proposal_id)


def notify(kind: NotifyKind, proposal_id: str) -> None:
    """Slack, when a bot token is set; otherwise nothing to tell (and Slack's module is never imported)."""
    from pipewarden.settings import get_settings

    if get_settings().slack_bot_token is None:
        return
    from pipewarden.inbox.slack import notify

    notify(kind, proposal_id)
