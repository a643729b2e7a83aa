"""The narrow interfaces through which lower layers reach higher ones without importing them.

The kernel, `tools/` and `inbox/` never import `flows/` or `agents/`. When a tool must re-run the pipeline, or
the inbox must resume an agent's graph after a decision, they call these ports; the implementation is found by
the import path in settings (`PIPEWARDEN_PIPELINE_RUNNER`, `PIPEWARDEN_RESUMER`), so tests can swap it.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from pydantic import BaseModel

from pipewarden.errors import ConfigError
from pipewarden.models import Proposal, RunResult
from pipewarden.settings import get_settings


@runtime_checkable
class PipelineRunner(Protocol):
    def __call__(self, dataset: str, source: str, *, load_id: str | None = None, rerun: bool = False) -> RunResult:
        """Run the pipeline on one batch file; `rerun` re-runs an already landed batch under its load id."""
        ...


@runtime_checkable
class Resumer(Protocol):
    def __call__(self, proposal_id: UUID | str) -> Proposal:
        """Resume the agent graph waiting on this (decided) proposal; returns the proposal as it ends."""
        ...


def _load(path: str, what: str) -> Any:
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load the {what} {path!r}: {exc}", hint="check the setting's module:attribute path") from exc


@runtime_checkable
class Supervisor(Protocol):
    def __call__(self) -> BaseModel:
        """Claim pending events, run their agents up to a decision, resume decided proposals; return a report."""
        ...


def supervisor() -> Supervisor:
    return _load(get_settings().supervisor, "supervisor")


def pipeline_runner() -> PipelineRunner:
    return _load(get_settings().pipeline_runner, "pipeline runner")


def resumer() -> Resumer:
    return _load(get_settings().resumer, "resumer")


@runtime_checkable
class Embedder(Protocol):
    """Turns short texts into unit-length vectors. Real: MiniLM (`knowledge.embedder`); fake: hashing."""

    dim: int
    name: str

    def embed(self, texts: list[str]) -> list[list[float]]:
        ...
