"""The fault signature of an event: what makes two events the same fault, so that while a proposal for it is open
a repeat attaches to that proposal as an occurrence instead of making a new one (see `StateStore.attach_occurrence`).

A signature is the event's dataset, its kind, and what failed: for schema drift the fingerprint of the drifted
schema as it landed; for failed row checks the set of failing checks (check and column); for a quality anomaly its
check and column; for a cost regression the SQL model and the cost measure that regressed (`route_daily:
rows_scanned`); for model drift the scoring model's version and the metric (`delay@v3:psi`). Events with nothing
that names the fault (a schema drift without a fingerprint, a failed run) have no signature and always get their
own proposal. The same signature is how the agents find past decisions on a fault (`agents.precedent`).

Public names: `FaultSignature`, `fault_signature`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from pipewarden.events import CheckFailed, CostRegression, Event, ModelDrift, QualityAnomaly, SchemaDrift

__all__ = ["FaultSignature", "fault_signature"]


class FaultSignature(BaseModel):
    """Dataset + kind + what failed (a schema fingerprint or the failing checks)."""

    model_config = ConfigDict(frozen=True)
    dataset: str
    kind: str
    fault: str
    """The drifted schema's fingerprint, or the failing check(s) as `check[:column]`, sorted and comma-joined."""

    @property
    def key(self) -> str:
        """A fixed-length key for the state DB (sha256 of the three parts)."""
        text = json.dumps([self.dataset, self.kind, self.fault])
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.kind}: {self.fault}"


def _check(check: str, column: str | None) -> str:
    return f"{check}:{column}" if column else check


def _drift(ev: SchemaDrift) -> str | None:
    return ev.schema_fingerprint or None


def _checks(ev: CheckFailed) -> str | None:
    return ",".join(sorted({_check(f.check, f.column) for f in ev.failed})) or None


def _anomaly(ev: QualityAnomaly) -> str | None:
    return _check(ev.check, ev.column)


def _cost(ev: CostRegression) -> str | None:
    return f"{ev.model}:{ev.metric}"


def _model_drift(ev: ModelDrift) -> str | None:
    return f"{ev.model}:{ev.metric}"


# One entry per event kind that names its fault; a kind not listed has no signature.
_FAULT_OF: dict[str, Callable[..., str | None]] = {
    "schema_drift": _drift,
    "check_failed": _checks,
    "quality_anomaly": _anomaly,
    "cost_regression": _cost,
    "model_drift": _model_drift,
}


def fault_signature(event: Event) -> FaultSignature | None:
    """The event's fault signature, or None when its kind (or this event) does not name the fault."""
    of = _FAULT_OF.get(event.kind)
    fault = of(event) if of is not None else None
    return FaultSignature(dataset=event.dataset, kind=event.kind, fault=fault) if fault else None
