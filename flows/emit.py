"""Emitting a pipeline event: durable in the outbox first, then mirrored as a Prefect event.

The outbox write is the event (invariant 5: durable before acted on). The Prefect mirror, on by default and
off with `PIPEWARDEN_EMIT_PREFECT_EVENTS=false`, lets Prefect automations and the UI see the same event under
the same id; a failure to mirror is logged and never loses the event. What happens to the event afterwards (the
proposal drafted for it, approved, applied, verified, rolled back) reaches Prefect as `pipewarden.proposal.*`
events on the same dataset resource, mirrored from the audit log by `flows.prefect_story.LifecycleMirror`.
"""

from __future__ import annotations

import logging
from typing import Any

from pipewarden.events import Event
from pipewarden.settings import get_settings
from pipewarden.store import StateStore

log = logging.getLogger(__name__)


def emit(event: Event, *, store: StateStore | None = None) -> bool:
    """Append `event` to the outbox, then mirror it to Prefect if the settings say so.

    Returns True if the event is new, False if the outbox already held an event with this id (then it is not
    mirrored again: emitting the same event twice is emitting it once).
    """
    appended = (store or StateStore()).append_event(event)
    if appended and get_settings().emit_prefect_events:
        mirror_to_prefect(event)
    return appended


def prefect_resource(event: Event) -> dict[str, str]:
    """The Prefect resource an event concerns: the dataset, labelled with the load and the event kind."""
    resource = {
        "prefect.resource.id": event.resource_id,
        "prefect.resource.name": event.dataset,
        "pipewarden.dataset": event.dataset,
        "pipewarden.kind": event.kind,
    }
    if event.load_id:
        resource["pipewarden.load_id"] = event.load_id
    return resource


def prefect_related() -> list[dict[str, str]]:
    """The flow run and deployment the event was emitted in, as Prefect related resources (empty outside a run)."""
    from prefect.runtime import deployment, flow_run

    related: list[dict[str, str]] = []
    if flow_run.id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                        "prefect.resource.role": "flow-run", "prefect.resource.name": str(flow_run.name or "")})
    if deployment.id:
        related.append({"prefect.resource.id": f"prefect.deployment.{deployment.id}",
                        "prefect.resource.role": "deployment", "prefect.resource.name": str(deployment.name or "")})
    return related


def mirror_to_prefect(event: Event) -> Any:
    """Send `event` to Prefect with `prefect.events.emit_event` under the outbox id.

    Returns the Prefect Event that was sent, or None when Prefect is not emitting events (no API configured,
    events disabled) or the mirror failed; a failure is logged with the event id, never raised.
    """
    from prefect.events import emit_event
    from prefect.exceptions import EventTooLarge

    try:
        return emit_event(
            event=event.name,
            resource=prefect_resource(event),
            occurred=event.occurred,
            payload=event.model_dump(mode="json"),
            id=event.id,
            related=prefect_related(),
        )
    except (EventTooLarge, ValueError, TypeError, OSError, RuntimeError) as exc:
        log.warning("event %s (%s) is in the outbox but was not mirrored to Prefect: %s", event.id, event.name, exc)
        return None
