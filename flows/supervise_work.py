"""Whether a supervise pass has work, read cheaply from the state DB without importing Prefect.

`pipewarden supervise` asks before each pass: an idle pass runs inline (no flow run every few seconds in Prefect's
UI, and no Prefect import, which costs seconds), a pass with work runs as the `pipewarden-supervise` flow when a
Prefect API is configured (`flows/supervise.py`).

Public names: `has_work`.
"""

from __future__ import annotations

from pipewarden.store import StateStore


def has_work(store: StateStore | None = None) -> bool:
    """Whether a pass would find something to do: an event pending or claimed (a dead worker's claim is taken over),
    or a proposal whose decision asks for a resume."""
    store = store or StateStore()
    return bool(store.list_events("pending") or store.list_events("claimed") or store.resume_requested())
