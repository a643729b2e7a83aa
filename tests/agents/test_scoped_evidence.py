"""A proposal's proof and evidence involve only the SQL models whose lineage reaches its dataset's raw table
(issue 12: a `customers` proposal's evidence was proven against the flights SQL models)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipewarden.agents.supervisor import supervise_once
from pipewarden.store import StateStore

FLIGHTS_MODELS = ("stg_flights", "carrier_daily", "flights_weather", "route_daily", "features_flights")


@pytest.fixture
def customers() -> pd.DataFrame:
    """A `customers` dataset registered in the flights project from a sample (as `contract init` does); no SQL
    model of the project reads raw_customers."""
    from pipewarden.tools.contract_draft import draft_contract, write_draft

    df = pd.DataFrame({"customer_id": range(1, 61), "email": [f"c{i}@example.com" for i in range(60)],
                       "tier": ["gold", "silver", "bronze"] * 20})
    write_draft(draft_contract("customers", df, source="customers.csv", owner="alice", max_failure_rate=0.05))
    return df


def test_a_customers_drift_proposal_names_no_flights_model(customers: pd.DataFrame, tmp_path: Path) -> None:
    from pipewarden.flows.data import write_batch
    from pipewarden.flows.ingest import ingest
    from pipewarden.flows.validate import validate

    landed = ingest("customers", write_batch(customers.drop(columns=["tier"]), tmp_path / "customers.parquet"))
    assert validate(landed).halted
    report = supervise_once()
    assert [h.status for h in report.handled] == ["pending"]
    (p,) = StateStore().list_proposals()
    assert p.dry_run is not None
    evidence = "\n".join([p.title, p.diagnosis, p.dry_run.model_dump_json()])
    assert [m for m in FLIGHTS_MODELS if m in evidence] == []
    assert "no SQL model reads raw_customers" in evidence
    assert not [k for k in p.dry_run.metrics if k.startswith(("rows_old.", "rows_new."))]


def test_a_flights_proof_still_builds_the_flights_models(february: pd.DataFrame) -> None:
    from pipewarden.tools.sql_patch import draft_drop_patches, prove_drop

    rows = february.head(300).drop(columns=["dep_delay"]).assign(_load_id="dry-run")
    patches = draft_drop_patches("raw_flights", {"dep_delay": "float"})
    null_run, probe_run = prove_drop("raw_flights", {"dep_delay": "float"}, rows, patches)
    assert null_run.ok and probe_run.ok, (null_run.notes(), probe_run.notes())
    assert {m.model for m in null_run.models} == set(FLIGHTS_MODELS)


def test_a_proof_for_another_raw_table_builds_only_the_models_it_reaches() -> None:
    """raw_planes feeds carrier_daily (and what reads it); stg_flights is built beside it but not proven."""
    from pipewarden.tools.lineage import model_dependencies
    from pipewarden.tools.sql_patch import prove_patches

    planes = pd.DataFrame({"tailnum": ["N1"], "seats": [100]})
    proof = prove_patches([], {"raw_planes": planes}, {"raw_planes": planes})
    deps = model_dependencies()
    reached = {"carrier_daily"} | {m for m, ups in deps.items() if "carrier_daily" in ups}
    assert {m.model for m in proof.models} >= {"carrier_daily"}
    assert "stg_flights" not in {m.model for m in proof.models}
    assert {m.model for m in proof.models} <= reached | {m for m, ups in deps.items() if ups & reached}


def test_a_quality_diagnosis_says_no_model_reads_a_dataset_and_still_names_the_flights_models(
    customers: pd.DataFrame,
) -> None:
    """The quality agent's root cause (`tools.quality_fix.root_cause`) ends with its dataset's downstream."""
    from pipewarden.tools.quality_fix import _downstream

    assert _downstream("customers", "tier") == ["downstream: no SQL model reads raw_customers"]
    assert _downstream("customers", None) == ["downstream: no SQL model reads raw_customers"]
    (flights,) = _downstream("flights", "dep_delay")
    assert flights.startswith("downstream: raw_flights.dep_delay feeds stg_flights")
    assert "customers" not in flights
