"""One test per schema-drift style through the real graph (supervise_once): real validation, matcher, MiniLM,
DuckDB proofs, checkpoints and store; only the pipeline re-run after approval is the fake runner.

January's accepted rows are the matcher's reference (a unit change is only visible against real values)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.agents.supervisor import supervise_once
from pipewarden.evals.flights_data import month_batch
from pipewarden.flows.data import inject_date_format, inject_drift, inject_drop, inject_unit_change, write_batch
from pipewarden.inbox.service import approve
from pipewarden.models import ProposalStatus
from pipewarden.store import StateStore
from tests.agents.conftest import SAMPLE_ROWS


@pytest.fixture(scope="module")
def january() -> pd.DataFrame:
    return month_batch(1).sample(SAMPLE_ROWS, random_state=3).reset_index(drop=True)


@pytest.fixture
def reference(january: pd.DataFrame, tmp_path: Path) -> None:
    """January validated and accepted into raw_flights: the reference the matcher compares values with."""
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate

    outcome = validate(ingest("flights", write_batch(january, tmp_path / "jan.parquet")))
    assert not outcome.halted and outcome.rows_accepted > 0


def drift(df: pd.DataFrame, tmp_path: Path) -> str:
    """Land and validate a drifted batch; its SchemaDrift event waits in the outbox. Returns the load id."""
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate

    outcome = validate(ingest("flights", write_batch(df, tmp_path / "drifted.parquet")))
    assert outcome.halted and outcome.event_ids, outcome.reason
    return outcome.load_id


def proposal():
    (p,) = StateStore().list_proposals()
    return p


def test_a_rename_a_retype_and_a_unit_change_in_one_batch(
    february: pd.DataFrame, tmp_path: Path, reference: None
) -> None:
    bad = inject_unit_change(february, "dep_delay", 60, rename="dep_delay_sec")
    bad = inject_drift(bad, renames={"tailnum": "tail_number"}, to_string=["flight"])
    drift(bad, tmp_path)
    supervise_once()
    p = proposal()
    assert p.status == ProposalStatus.pending and p.change.kind == "column_mapping"
    assert p.change.renames == {"dep_delay_sec": "dep_delay", "tail_number": "tailnum"}
    assert p.change.casts == {"flight": "integer"}
    ((t),) = p.change.transforms
    assert (t.column, t.kind) == ("dep_delay", "unit_scale") and t.factor == pytest.approx(1 / 60)
    assert p.dry_run.heals
    assert p.dry_run.metrics["distribution_match.dep_delay"] >= 0.8  # scaled back, it looks like January
    assert any(n.startswith("dep_delay: after the scale") for n in p.dry_run.notes)
    assert approve(p.id, "alice").proposal.status == ProposalStatus.verified
    stored = StateStore().active_version(p.change.target).content
    assert stored["transforms"][0]["kind"] == "unit_scale"


@pytest.mark.parametrize(("fmt", "kind"), [("%m/%d/%Y %H:%M", "date_format"), ("epoch", "epoch")])
def test_a_date_written_another_way_gets_a_parse_transform(
    february: pd.DataFrame, tmp_path: Path, fmt: str, kind: str
) -> None:
    drift(inject_date_format(february, "time_hour", fmt), tmp_path)
    supervise_once()
    p = proposal()
    assert p.status == ProposalStatus.pending and p.change.kind == "column_mapping"
    assert [(t.column, t.kind) for t in p.change.transforms] == [("time_hour", kind)]
    assert p.change.casts == {} and p.change.renames == {}
    assert p.dry_run.heals
    assert any("time_hour" in e for e in p.dry_run.before.schema_errors)
    assert str(p.dry_run.sample[0]["time_hour"]).startswith("2013-02")


def test_a_dropped_column_is_a_high_risk_contract_change_with_proven_sql_patches(
    february: pd.DataFrame, tmp_path: Path
) -> None:
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate
    from pipewarden.tools.contracts import active_contract

    load_id = drift(inject_drop(february, ["dep_delay"]), tmp_path)
    supervise_once()
    p = proposal()
    assert p.status == ProposalStatus.pending and p.risk == "high"
    contract_change, patch = p.change.changes
    assert contract_change.kind == "contract_change" and contract_change.loosens
    assert contract_change.contract["version"] == 2
    assert patch.kind == "sql_model_patch" and patch.model == "stg_flights"
    assert "CAST(NULL AS DOUBLE)" in patch.sql and "f.dep_delay" in patch.base_sql and "f.dep_delay" not in patch.sql
    assert p.dry_run.heals
    notes = "\n".join(p.dry_run.notes)
    assert "[dep_delay as null] stg_flights (patched)" in notes and "values equal in every column" in notes
    assert "route_daily (unchanged SQL)" in notes and "avg_dep_delay (downstream of the dropped column" in notes
    assert p.dry_run.metrics["sql_models_patched[dep_delay as null]"] == 1.0

    decided = approve(p.id, "alice").proposal
    if decided.status == ProposalStatus.pending:  # a loosening change: the approval rules also want a steward
        decided = approve(p.id, "bob").proposal
    assert decided.status == ProposalStatus.verified, decided.status_reason
    assert StateStore().active_version("contract:flights").number == 1
    assert StateStore().active_version("sql:stg_flights").content["sql"] == patch.sql
    assert active_contract("flights").version_tag == "flights@v2"
    # validate now holds the batch to the active contract: the same file passes
    again = validate(ingest("flights", write_batch(inject_drop(february, ["dep_delay"]), tmp_path / "again.parquet"),
                            load_id=load_id + "-again"))
    assert not again.halted and again.contract_version == "flights@v2"


def test_a_dropped_column_that_filters_rows_needs_a_human(february: pd.DataFrame, tmp_path: Path) -> None:
    drift(inject_drop(february, ["arr_delay"]), tmp_path)
    supervise_once()
    p = proposal()
    assert p.status == ProposalStatus.needs_human and p.change.kind == "no_change"
    assert "SQL patches are not proven" in p.change.reason and "stg_flights" in p.change.reason


def test_an_extra_column_alone_is_noted_and_kept_out_not_drift(february: pd.DataFrame, tmp_path: Path) -> None:
    from pipewarden.flows.data import inject_added
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate

    landed = ingest("flights", write_batch(inject_added(february, {"gate": "B12"}), tmp_path / "extra.parquet"))
    outcome = validate(landed)
    assert not outcome.halted and outcome.event_ids == []
    assert outcome.notes == ["column 'gate' (string) is not in the contract; kept out of the accepted rows"]
    from pipewarden.flows.warehouse import connect

    with connect() as con:
        cols = [r[0] for r in con.execute("select column_name from information_schema.columns "
                                          "where table_name = 'raw_flights'").fetchall()]
    assert "gate" not in cols
