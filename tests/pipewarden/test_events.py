from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipewarden.events import EVENT_NAMES, CheckFailed, Event, FailedCheck, parse_event
from tests.pipewarden.factories import drift_event


def test_events_round_trip_through_the_discriminated_union() -> None:
    ev = drift_event()
    back = parse_event(ev.model_dump_json())
    assert type(back).__name__ == "SchemaDrift"
    assert back == ev
    assert back.name == "pipewarden.schema.drift"
    assert back.resource_id == "pipewarden.dataset.flights"


def test_every_kind_has_a_dotted_name() -> None:
    from typing import get_args

    members = get_args(get_args(Event)[0])
    kinds = {m.model_fields["kind"].default for m in members}
    assert kinds == set(EVENT_NAMES)
    assert all(name.startswith("pipewarden.") and name.count(".") == 2 for name in EVENT_NAMES.values())


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event({"kind": "meteor_strike", "dataset": "flights"})


def test_event_ids_are_time_ordered() -> None:
    a = CheckFailed(dataset="d", batch_path="p", failed=[FailedCheck(check="not_null", failed_rows=1)],
                    failure_rate=0.5, threshold=0.1)
    b = CheckFailed(dataset="d", batch_path="p", failed=[], failure_rate=0.5, threshold=0.1)
    assert str(a.id) < str(b.id)
