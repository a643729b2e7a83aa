"""An approved column mapping applies only to batches in the drifted shape it was proven on.

The June case: an epoch-to-timestamp fix approved for one drifted source used to become THE mapping of the
dataset, so the next clean batch (already timestamps) had every row quarantined. Now a mapping is versioned under
`mapping:<dataset>@<schema fingerprint>`: a batch in the contract's shape passes untouched, and two sources in
different drifted shapes each keep their own fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipewarden.errors import BatchHalted
from pipewarden.events import SchemaDrift
from pipewarden.models import ColumnMapping, ColumnTransform
from pipewarden.store import StateStore
from tests.flows.orders_project import approve, epoch_shape, make_orders_project, orders, renamed_shape


@pytest.fixture(autouse=True)
def orders_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Path:
    return make_orders_project(tmp_path / "shop", monkeypatch)


def halted_drift(df) -> SchemaDrift:  # type: ignore[no-untyped-def]
    from pipewarden import guard_batch

    with pytest.raises(BatchHalted) as info:
        guard_batch(df, "orders")
    event = StateStore().get_event(info.value.result.halt_event_id)
    assert isinstance(event, SchemaDrift)
    return event


def epoch_fix(event: SchemaDrift) -> ColumnMapping:
    return ColumnMapping(dataset="orders", transforms=[ColumnTransform(column="ordered_at", kind="epoch")],
                         source_fingerprint=event.schema_fingerprint)


def test_the_drift_event_carries_the_fingerprint_the_batch_landed_with() -> None:
    from pipewarden.flows.ingest import read_landed

    event = halted_drift(epoch_shape(orders(20)))
    _, landed = read_landed("orders", event.load_id, columns=[])
    assert event.schema_fingerprint == landed.schema_fingerprint
    assert epoch_fix(event).target == f"mapping:orders@{landed.schema_fingerprint}"


def test_june_a_clean_batch_after_an_approved_epoch_fix_passes_untouched() -> None:
    from pipewarden import guard_batch

    event = halted_drift(epoch_shape(orders(30)))
    approve(event.id, epoch_fix(event))
    clean = guard_batch(orders(30, start=1000), "orders")
    assert (clean.status, clean.rows_accepted, clean.rows_quarantined) == ("accepted", 30, 0)
    assert clean.accepted["ordered_at"].notna().all()


def test_a_batch_in_the_fixed_shape_still_gets_its_fix() -> None:
    from pipewarden import guard_batch

    event = halted_drift(epoch_shape(orders(30)))
    approve(event.id, epoch_fix(event))
    fresh = orders(30, start=2000)
    again = guard_batch(epoch_shape(fresh), "orders")
    assert (again.status, again.rows_accepted, again.rows_quarantined) == ("accepted", 30, 0)
    got = again.accepted.sort_values("order_id")["ordered_at"].reset_index(drop=True)
    assert (got == fresh["ordered_at"]).all()


def test_two_drifted_shapes_each_keep_their_own_fix() -> None:
    from pipewarden import guard_batch

    a = halted_drift(epoch_shape(orders(30)))
    approve(a.id, epoch_fix(a))
    b = halted_drift(renamed_shape(orders(30, start=100)))  # A's fix does not touch shape B: it still halts
    assert b.schema_fingerprint != a.schema_fingerprint
    approve(b.id, ColumnMapping(dataset="orders", renames={"total": "amount"}, source_fingerprint=b.schema_fingerprint))

    in_a = guard_batch(epoch_shape(orders(30, start=3000)), "orders")
    in_b = guard_batch(renamed_shape(orders(30, start=4000)), "orders")
    clean = guard_batch(orders(30, start=5000), "orders")
    for result in (in_a, in_b, clean):
        assert (result.status, result.rows_accepted, result.rows_quarantined) == ("accepted", 30, 0)
    assert StateStore().active_version(f"mapping:orders@{a.schema_fingerprint}").content["transforms"]
    assert StateStore().active_version(f"mapping:orders@{b.schema_fingerprint}").content["renames"] == {
        "total": "amount"}


def test_an_unscoped_mapping_from_before_still_heals_drifted_batches_but_not_clean_ones() -> None:
    """Versions written before mappings were scoped live at `mapping:<dataset>`; they apply to drifted batches only."""
    import uuid

    from pipewarden import guard_batch

    StateStore().activate_new_version("mapping:orders", ColumnMapping(
        dataset="orders", transforms=[ColumnTransform(column="ordered_at", kind="epoch")]).model_dump(mode="json"),
        proposal_id=uuid.uuid4(), actor="test")
    assert guard_batch(epoch_shape(orders(30)), "orders").rows_accepted == 30
    clean = guard_batch(orders(30, start=700), "orders")
    assert (clean.rows_accepted, clean.rows_quarantined) == (30, 0)
