"""The public guard API on a small non-flights project (`orders`): `guard_batch`, the Prefect task `guard`, the
halt as a Failed flow run, `pipewarden run --file F --dataset orders`, and how a halted load is re-run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from pipewarden.errors import BatchHalted, ConfigError
from pipewarden.models import Proposal
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.conftest import CliResult
from tests.flows.orders_project import ORDERS_TOML, epoch_shape, make_orders_project, orders


@pytest.fixture(autouse=True)
def orders_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pw_home: Path) -> Path:
    return make_orders_project(tmp_path / "shop", monkeypatch)


def _quarantine(load_id: str) -> list[tuple[int, str]]:
    from pipewarden.flows.warehouse import connect

    with connect() as con:
        return con.execute("SELECT row_number, reason FROM quarantine WHERE load_id = ? ORDER BY row_number",
                           [load_id]).fetchall()


# --------------------------------------------------------------------------- guard_batch
@pytest.mark.parametrize("kind", ["dataframe", "arrow", "parquet-path", "csv-path"])
def test_a_clean_batch_is_accepted_and_its_rows_returned(kind: str, tmp_path: Path) -> None:
    from pipewarden import guard_batch

    df = orders(30)
    data: Any = {"dataframe": df, "arrow": pa.Table.from_pandas(df, preserve_index=False)}.get(kind)
    if kind == "parquet-path":
        data = tmp_path / "orders.parquet"
        df.to_parquet(data, index=False)
    elif kind == "csv-path":
        data = str(tmp_path / "orders.csv")
        df.to_csv(data, index=False)
    result = guard_batch(data, "orders")
    assert (result.status, result.halted_at, result.rows_in, result.rows_quarantined) == ("accepted", None, 30, 0)
    assert result.rows_accepted == 30 and result.load_id.startswith("orders-") and result.event_ids == []
    got = result.accepted.sort_values("order_id").reset_index(drop=True)
    assert list(got.columns) == ["order_id", "customer", "amount", "ordered_at"]
    assert got["order_id"].tolist() == df["order_id"].tolist()
    assert got["amount"].tolist() == df["amount"].tolist()
    assert (got["ordered_at"] == df["ordered_at"]).all()


def test_the_same_frame_lands_once_under_one_load_id() -> None:
    from pipewarden import guard_batch

    first, again = guard_batch(orders(20), "orders"), guard_batch(orders(20), "orders")
    assert first.load_id == again.load_id and again.rows_accepted == 20


def test_rows_that_break_the_contract_are_quarantined_with_reasons_and_the_rest_returned() -> None:
    from pipewarden import guard_batch

    df = orders(40)
    df.loc[[3, 7], "amount"] = -5.0
    result = guard_batch(df, "orders")
    assert result.status == "accepted" and (result.rows_accepted, result.rows_quarantined) == (38, 2)
    assert sorted(result.accepted["order_id"]) == sorted(set(df["order_id"]) - {4, 8})
    rows = _quarantine(result.load_id)
    assert [r for r, _ in rows] == [3, 7] and all("amount" in reason for _, reason in rows)


def test_a_drifted_batch_halts_with_the_dataset_load_event_and_the_command_to_look() -> None:
    from pipewarden import guard_batch

    with pytest.raises(BatchHalted) as info:
        guard_batch(epoch_shape(orders(30)), "orders")
    err = info.value
    result = err.result
    assert err.exit_code == 3 and result.status == "halted" and result.halted_at == "validate"
    event = StateStore().get_event(result.halt_event_id)
    assert event.kind == "schema_drift" and event.load_id == result.load_id
    assert f"orders load {result.load_id} halted at validate" in err.message
    assert f"event schema_drift {event.id}" in err.message and "ordered_at" in err.message
    assert err.hint == "look at it with `pipewarden inbox list --dataset orders`"
    assert result.accepted.empty and result.rows_accepted == 0


def test_once_a_proposal_exists_the_halt_names_it_and_how_to_show_it() -> None:
    from pipewarden import guard_batch
    from pipewarden.models import NoChange

    drifted = epoch_shape(orders(30))
    with pytest.raises(BatchHalted) as first:
        guard_batch(drifted, "orders")
    event_id = first.value.result.halt_event_id
    p = StateStore().create_proposal(Proposal(
        event_id=event_id, agent="schema-drift", dataset="orders", title="orders: read ordered_at as epoch seconds",
        diagnosis="epoch", change=NoChange(reason="test"), thread_id=f"event-{event_id}"))
    with pytest.raises(BatchHalted) as again:
        guard_batch(drifted, "orders")
    assert f"proposal {p.short_id} (pending): orders: read ordered_at as epoch seconds" in again.value.message
    assert again.value.hint == f"look at it with `pipewarden inbox show {p.short_id}`"


def test_guard_batch_is_exported_lazily_from_the_kernel() -> None:
    import subprocess
    import sys

    code = ("import sys, pipewarden; assert 'pipewarden.flows.guard' not in sys.modules; "
            "f = pipewarden.guard_batch; assert 'pipewarden.flows.guard' in sys.modules; print(f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pipewarden.flows.guard"


# --------------------------------------------------------------------------- the Prefect task
def test_in_a_flow_a_halt_fails_the_run_with_the_event_and_a_clean_batch_completes(prefect_harness: None) -> None:
    from prefect import flow

    from pipewarden.flows.guard import run_context
    from pipewarden.prefect import guard

    @flow(name="orders-pipeline")
    def orders_pipeline(drifted: bool, n: int) -> int:
        df = orders(n)
        accepted = guard(epoch_shape(df) if drifted else df, dataset="orders")
        return len(accepted)

    clean = orders_pipeline(drifted=False, n=25, return_state=True)
    assert clean.is_completed() and clean.result() == 25

    halted = orders_pipeline(drifted=True, n=25, return_state=True)
    assert halted.is_failed() and not halted.is_completed()
    (event,) = [e for e in StateStore().list_events() if e["kind"] == "schema_drift"]
    assert f"event schema_drift {event['id']}" in halted.message and "orders load orders-" in halted.message
    assert str(StateStore().get_event(event["id"]).run_id) == str(halted.state_details.flow_run_id)
    ctx = run_context("orders", StateStore().get_event(event["id"]).load_id)
    assert ctx is not None and ctx["flow_run_id"] == str(halted.state_details.flow_run_id)
    assert ctx["flow_name"] == "orders-pipeline" and ctx["parameters"] == {"drifted": True, "n": 25}
    assert ctx["deployment_id"] is None  # run directly, not from a deployment


def test_the_deployment_id_comes_from_the_flow_runs_context_without_asking_the_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.context
    import prefect.runtime.deployment

    from pipewarden.prefect import _deployment_id

    def no_api() -> None:
        raise AssertionError("read the flow run from the API")

    monkeypatch.setattr(prefect.runtime.deployment, "get_id", no_api)
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID", raising=False)
    for deployed in (DEPLOYED["deployment_id"], None):
        run = SimpleNamespace(flow_run=SimpleNamespace(deployment_id=deployed))
        monkeypatch.setattr(prefect.context.FlowRunContext, "get", classmethod(lambda cls, run=run: run))
        assert _deployment_id() == deployed


def test_events_mirrored_inside_a_flow_run_name_it_as_a_related_resource(prefect_harness: None) -> None:
    from prefect import flow

    from pipewarden.flows.emit import prefect_related

    @flow(name="related-probe")
    def probe() -> list[dict[str, str]]:
        return prefect_related()

    state = probe(return_state=True)
    (run,) = state.result()
    assert run["prefect.resource.id"] == f"prefect.flow-run.{state.state_details.flow_run_id}"
    assert run["prefect.resource.role"] == "flow-run"
    assert prefect_related() == []  # outside a flow run there is nothing to relate


# --------------------------------------------------------------------------- run_batch and `pipewarden run`
def test_run_batch_guards_any_dataset_without_the_flights_stages(prefect_harness: None, tmp_path: Path) -> None:
    from pipewarden.flows.pipeline import ml_models_for, run_batch

    src = tmp_path / "orders.parquet"
    orders(30).to_parquet(src, index=False)
    result = run_batch("orders", str(src))
    assert result.status == "completed" and result.rows_in == 30 and result.rows_quarantined == 0
    assert not [stage for stage in result.timings_ms if stage.startswith("ml:")]
    assert ml_models_for("orders") == []  # no ML model is declared for orders
    assert _run_state(result.flow_run_id).is_completed()


def _run_state(flow_run_id: str | None) -> Any:
    import uuid

    from prefect.client.orchestration import get_client

    assert flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id)).state


def test_run_batch_names_the_halting_event(prefect_harness: None, tmp_path: Path) -> None:
    from pipewarden.flows.pipeline import halted_error, run_batch

    src = tmp_path / "drifted.parquet"
    epoch_shape(orders(30)).to_parquet(src, index=False)
    result = run_batch("orders", str(src))
    assert result.status == "halted" and result.halted_at == "validate" and "ordered_at" in result.reason
    assert StateStore().get_event(result.halt_event).kind == "schema_drift"
    err = halted_error(result)
    assert err.exit_code == 3 and f"event schema_drift {result.halt_event}" in err.message
    state = _run_state(result.flow_run_id)  # Prefect never shows a halted batch as Completed
    assert state.is_failed() and "halted at validate" in state.message




def test_pipewarden_run_takes_any_dataset_and_exits_3_with_the_halt(
    prefect_harness: None, tmp_path: Path, pw: Callable[..., CliResult],
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        res = pw(*args)
        return res.code, res.out, res.err_text
    clean, drifted = tmp_path / "clean.parquet", tmp_path / "drifted.parquet"
    orders(30).to_parquet(clean, index=False)
    epoch_shape(orders(30, start=500)).to_parquet(drifted, index=False)

    code, out, _ = run("run", "--file", str(clean), "--dataset", "orders", "--json")
    assert code == 0 and json.loads(out)["status"] == "completed"

    code, out, err = run("run", "--file", str(drifted), "--dataset", "orders")
    assert code == 3 and "halted orders load orders-" in " ".join(out.split())
    assert "halted at validate" in err and "event schema_drift" in err
    assert "pipewarden inbox list --dataset orders" in err

    code, _, err = run("run", "--file", str(clean))
    assert code == 2 and "Missing option '--dataset'" in err


# --------------------------------------------------------------------------- re-runs after approval
def _set_rerun(root: Path, mode: str, deployment: str | None = None) -> None:
    extra = f'\n[rerun]\nmode = "{mode}"\n' + (f'deployment = "{deployment}"\n' if deployment else "")
    (root / "pipewarden.toml").write_text(ORDERS_TOML + extra, encoding="utf-8")
    get_settings.cache_clear()


def _halted_load(run: dict[str, Any] | None = None) -> str:
    from pipewarden.flows.guard import guard_batch

    with pytest.raises(BatchHalted) as info:
        guard_batch(epoch_shape(orders(30)), "orders", run=run)
    return info.value.result.load_id


DEPLOYED = {"flow_run_id": "11111111-1111-1111-1111-111111111111", "flow_name": "orders-pipeline",
            "parameters": {"day": "2024-06-01"}, "deployment_id": "22222222-2222-2222-2222-222222222222",
            "deployment_name": "nightly"}


def test_a_load_guarded_in_a_deployment_is_rerun_through_it_with_the_same_parameters() -> None:
    from pipewarden.flows.pipeline import rerun_route

    assert rerun_route("orders", _halted_load(DEPLOYED)) == (
        "deployment", DEPLOYED["deployment_id"], {"day": "2024-06-01"})


def test_a_load_from_outside_a_deployment_is_rechecked() -> None:
    from pipewarden.flows.pipeline import rerun_route

    assert rerun_route("orders", _halted_load()) == ("recheck", None, {})
    assert rerun_route("orders", _halted_load({**DEPLOYED, "deployment_id": None,
                                               "deployment_name": None})) == ("recheck", None, {})


def test_rerun_mode_recheck_and_deployment_are_honoured(orders_project: Path) -> None:
    from pipewarden.flows.pipeline import rerun_route

    load_id = _halted_load(DEPLOYED)
    _set_rerun(orders_project, "recheck")
    assert rerun_route("orders", load_id) == ("recheck", None, {})


def test_rerun_mode_deployment_without_one_is_a_config_error(orders_project: Path) -> None:
    from pipewarden.flows.pipeline import rerun_route

    load_id = _halted_load()
    _set_rerun(orders_project, "deployment")
    with pytest.raises(ConfigError, match=r"\[rerun\] deployment"):
        rerun_route("orders", load_id)
    _set_rerun(orders_project, "deployment", "orders-pipeline/nightly")
    assert rerun_route("orders", load_id) == ("deployment", "orders-pipeline/nightly", {})


def test_a_rerun_through_the_deployment_is_judged_by_the_rechecked_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment is faked (a worker would run the team's flow); what it does is what that flow does: guard the
    same batch again, now under the approved fix."""
    import prefect.deployments

    from pipewarden.flows.guard import recheck_batch
    from pipewarden.flows.pipeline import run_batch
    from pipewarden.models import ColumnMapping, ColumnTransform
    from tests.flows.orders_project import approve

    load_id = _halted_load(DEPLOYED)
    calls: list[dict[str, Any]] = []

    def fake_run_deployment(*, name: str, parameters: dict[str, Any], timeout: float, tags: list[str]) -> Any:
        calls.append({"name": name, "parameters": parameters})
        checked = recheck_batch("orders", load_id)
        state = SimpleNamespace(is_completed=lambda: not checked.halted, name="Completed" if not checked.halted
                                else "Failed")
        return SimpleNamespace(id="33333333", state=state)

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    before = run_batch("orders", "", load_id=load_id, rerun=True)
    assert before.status == "halted" and "halted_schema again" in before.reason

    event = [e for e in StateStore().list_events() if e["kind"] == "schema_drift"][0]
    fp = StateStore().get_event(event["id"]).schema_fingerprint
    approve(event["id"], ColumnMapping(dataset="orders", transforms=[ColumnTransform(column="ordered_at", kind="epoch")],
                                       source_fingerprint=fp))
    after = run_batch("orders", "", load_id=load_id, rerun=True)
    assert after.status == "completed" and after.rows_in == 30 and after.rows_quarantined == 0
    assert after.flow_run_id == "33333333"  # the proposal page links the re-run's results to this flow run
    assert calls == [{"name": DEPLOYED["deployment_id"], "parameters": {"day": "2024-06-01"}}] * 2


def test_a_recheck_rerun_heals_the_landed_batch_once_the_fix_is_active(prefect_harness: None) -> None:
    from pipewarden.flows.pipeline import run_batch
    from pipewarden.models import ColumnMapping, ColumnTransform
    from tests.flows.orders_project import approve

    load_id = _halted_load()
    event = [e for e in StateStore().list_events() if e["kind"] == "schema_drift"][0]
    fp = StateStore().get_event(event["id"]).schema_fingerprint
    approve(event["id"], ColumnMapping(dataset="orders", transforms=[ColumnTransform(column="ordered_at", kind="epoch")],
                                       source_fingerprint=fp))
    result = run_batch("orders", "", load_id=load_id, rerun=True)
    assert result.status == "completed" and result.rows_in == 30 and result.rows_quarantined == 0
    assert result.flow_run_id  # the re-check ran as a Prefect flow run, which the proposal page links to
