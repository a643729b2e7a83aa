"""Editing a proposal's parameters in the web inbox: the edited change is proved again by the real DryRunner
(`tools.redry`: the contract checks on a real failing batch; SQL run read-only on a real DuckDB warehouse), stored
with who edited it (audited), and the proposal can be approved only when the new dry-run passes."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from pipewarden.events import ColumnSpec, CostRegression, SchemaDrift
from pipewarden.inbox.web import create_app
from pipewarden.models import CheckResult, ColumnMapping, DryRun, Proposal, ProposalStatus, SqlModelPatch
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.inbox.web_client import csrf_of, page_csrf, sign_in, snapshot

OLD_SQL = "SELECT origin, count(*) AS n\nFROM flights\nGROUP BY origin\n"
NEW_SQL = "SELECT origin, dest, count(*) AS n\nFROM flights\nGROUP BY origin, dest\n"


@pytest.fixture(autouse=True)
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract's rules on the pandas engine (same rules as GX, no GX start-up in this file)."""
    monkeypatch.setenv("PIPEWARDEN_CHECK_ENGINE", "pandas")
    get_settings.cache_clear()


@pytest.fixture
def client(store: StateStore) -> TestClient:
    c = TestClient(create_app())
    sign_in(c, "alice", store)
    return c


def drifted_batch(path: Path) -> Path:
    """A February flights batch whose dep_delay arrives as departureDelay (as in the demo)."""
    rows = [dict(year=2013, month=2, day=1 + i, dep_time=517 + i, sched_dep_time=515, departureDelay=2.0 + i,
                 arr_time=830, sched_arr_time=819, arr_delay=11.0, carrier="UA", flight=1545 + i, tailnum="N14228",
                 origin="EWR", dest="IAH", air_time=227.0, distance=1400, hour=5, minute=15,
                 time_hour="2013-02-01 10:00:00+00:00") for i in range(8)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def mapping_proposal(store: StateStore, batch: Path) -> Proposal:
    ev = SchemaDrift(dataset="flights", load_id="feb", batch_path=str(batch), contract_version="flights@v1",
                     added=[ColumnSpec(name="departureDelay", type="float")],
                     dropped=[ColumnSpec(name="dep_delay", type="float")])
    store.append_event(ev)
    change = ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"})
    return store.create_proposal(Proposal(
        event_id=ev.id, agent="schema_drift", dataset="flights", title="flights: map departureDelay -> dep_delay, "
        "cast flight to integer", diagnosis="renamed", change=change, thread_id=f"t-{ev.id}",
        dry_run=DryRun(before=CheckResult(passed=False, rows=8, schema_errors=["dep_delay missing"]),
                       after=CheckResult(passed=True, rows=8))))


def edit(client: TestClient, pid: object, **form: object):
    csrf = page_csrf(client, f"/proposals/{pid}")
    return client.post(f"/proposals/{pid}/edit", data={"csrf_token": csrf, **form}, follow_redirects=False)


def mapping_form(renames: dict[str, str], casts: dict[str, str]) -> dict[str, list[str]]:
    return {"rename_from": list(renames), "rename_to": list(renames.values()),
            "cast_column": list(casts), "cast_type": list(casts.values())}


# --------------------------------------------------------------------------- column mappings
def test_the_page_offers_each_renames_target_and_each_cast(client: TestClient, store: StateStore,
                                                           tmp_path: Path) -> None:
    p = mapping_proposal(store, drifted_batch(tmp_path / "feb.csv"))
    html = client.get(f"/proposals/{p.id}").text
    assert 'id="edit-form"' in html
    assert '<option value="dep_delay" selected>dep_delay (float)</option>' in html  # the target, with the choices
    assert '<option value="arr_delay">arr_delay (float)</option>' in html
    assert '<option value="integer" selected>integer</option>' in html  # the cast of flight


def test_an_edit_that_breaks_the_mapping_is_stored_but_cannot_be_approved_until_fixed(
    client: TestClient, store: StateStore, tmp_path: Path, resumer: list[str]
) -> None:
    p = mapping_proposal(store, drifted_batch(tmp_path / "feb.csv"))

    # drop the rename: the real dry-run on the batch fails (dep_delay is missing); the edit is kept and audited
    resp = edit(client, p.id, **mapping_form({"departureDelay": ""}, {"flight": "integer"}))
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=edited_fails")
    edited = store.get_proposal(p.id)
    assert edited.change.renames == {} and edited.status == ProposalStatus.pending
    assert edited.dry_run is not None and not edited.dry_run.after.passed
    assert any("dep_delay" in e for e in edited.dry_run.after.schema_errors)
    assert edited.title == "flights: map cast flight to integer"
    entry = [e for e in store.audit_entries(str(p.id)) if e.action == "edited"][-1]
    assert entry.actor == "alice" and entry.detail["heals"] is False
    assert entry.detail["from"]["renames"] == {"departureDelay": "dep_delay"} and entry.detail["to"]["renames"] == {}
    assert store.verify_audit().ok

    page = client.get(resp.headers["location"]).text
    assert "does not pass on the failing batch" in page and "Edited by <strong>alice</strong>" in page
    assert 'id="approve-form"' not in page  # no approve button while the edit fails
    before = snapshot(store)
    resp = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf_of(page)})
    assert resp.status_code == 409 and "cannot be approved" in resp.text
    assert snapshot(store) == before and resumer == []
    api = client.post(f"/api/proposals/{p.id}/decision", json={"verdict": "approve"},
                      headers={"Authorization": f"Bearer {store.issue_token('carol')}"})
    assert api.status_code == 409 and "cannot be approved" in api.json()["error"]

    # map it again, now without the cast: the dry-run heals the batch, and it can be approved
    resp = edit(client, p.id, **mapping_form({"departureDelay": "dep_delay"}, {}))
    assert resp.headers["location"].endswith("flash=edited")
    healed = store.get_proposal(p.id)
    assert healed.change == ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={})
    assert healed.dry_run is not None and healed.dry_run.heals
    assert healed.dry_run.sample and healed.dry_run.sample[0]["dep_delay"] == 2.0  # rows after the change
    page = client.get(f"/proposals/{p.id}").text
    assert 'id="approve-form"' in page
    resp = client.post(f"/proposals/{p.id}/approve", data={"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert resp.status_code == 303 and store.get_proposal(p.id).status == ProposalStatus.approved
    assert [a.action for a in store.audit_entries(str(p.id))].count("edited") == 2


@pytest.mark.parametrize(("form", "words"), [
    (mapping_form({"departureDelay": "arrival_delay"}, {}), "unknown contract column of flights"),
    (mapping_form({"departureDelay": "arr_delay"}, {}), "already has a column 'arr_delay'"),
    (mapping_form({"nosuchcolumn": "dep_delay"}, {}), "unknown incoming column"),
    (mapping_form({"departureDelay": "dep_delay"}, {"flight": "decimal"}), "not a contract type"),
    (mapping_form({"departureDelay": "dep_delay"}, {"flight": "integer"}), "the edit changes nothing"),
    ({"rename_from": ["departureDelay"], "rename_to": []}, "incomplete"),
])
def test_an_invalid_edit_is_422_and_changes_nothing(
    client: TestClient, store: StateStore, tmp_path: Path, form: dict, words: str
) -> None:
    p = mapping_proposal(store, drifted_batch(tmp_path / "feb.csv"))
    before = snapshot(store)
    resp = edit(client, p.id, **form)
    assert resp.status_code == 422, resp.text
    assert str(escape(words)) in resp.text
    assert snapshot(store) == before


def test_only_someone_who_may_approve_can_edit(store: StateStore, tmp_path: Path) -> None:
    p = mapping_proposal(store, drifted_batch(tmp_path / "feb.csv"))
    dave = TestClient(create_app())
    sign_in(dave, "dave", store)  # an engineer
    before = snapshot(store)
    resp = edit(dave, p.id, **mapping_form({"departureDelay": ""}, {}))
    assert resp.status_code == 403 and "dave cannot approve" in resp.text
    assert snapshot(store) == before


def test_an_approved_or_decided_proposal_cannot_be_edited(client: TestClient, store: StateStore,
                                                          tmp_path: Path) -> None:
    p = mapping_proposal(store, drifted_batch(tmp_path / "feb.csv"))
    csrf = page_csrf(client, f"/proposals/{p.id}")
    client.post(f"/proposals/{p.id}/reject", data={"csrf_token": csrf, "reason": "wrong month"})
    before = snapshot(store)
    resp = client.post(f"/proposals/{p.id}/edit", data={"csrf_token": csrf, **mapping_form({"departureDelay": ""}, {})})
    assert resp.status_code == 409 and "only a pending proposal can be edited" in resp.text
    assert snapshot(store) == before


# --------------------------------------------------------------------------- SQL model patches
@pytest.fixture
def warehouse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A models folder with `route_stats.sql` and a warehouse holding the `flights` table it reads."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "route_stats.sql").write_text(OLD_SQL)
    monkeypatch.setenv("PIPEWARDEN_MODELS_DIR", str(models))
    get_settings.cache_clear()
    path = get_settings().ensure_home() / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE flights AS SELECT * FROM (VALUES ('EWR', 'IAH'), ('EWR', 'MIA'), ('JFK', 'LAX')) "
                "AS t(origin, dest)")
    con.close()
    return path


def sql_proposal(store: StateStore, sql: str = NEW_SQL) -> Proposal:
    ev = CostRegression(dataset="flights", model="route_stats", baseline=10.0, observed=40.0, ratio=4.0)
    store.append_event(ev)
    return store.create_proposal(Proposal(
        event_id=ev.id, agent="cost", dataset="flights", title="route_stats per destination", diagnosis="slow",
        change=SqlModelPatch(model="route_stats", sql=sql, base_sql=OLD_SQL, reason="split by destination"),
        thread_id=f"t-{ev.id}",
        dry_run=DryRun(before=CheckResult(passed=True, rows=2), after=CheckResult(passed=True, rows=3))))


def test_a_sql_patch_is_shown_as_a_unified_diff_against_the_models_file(
    client: TestClient, store: StateStore, warehouse: Path
) -> None:
    p = sql_proposal(store)
    html = client.get(f"/proposals/{p.id}").text
    assert '<span class="d-meta">--- route_stats.sql (file models/route_stats.sql)</span>' in html
    assert '<span class="d-del">-SELECT origin, count(*) AS n</span>' in html
    assert '<span class="d-add">+SELECT origin, dest, count(*) AS n</span>' in html
    assert '<span class="d-ctx"> FROM flights</span>' in html
    assert '<span class="d-hunk">@@' in html
    assert "split by destination" in html and 'name="sql"' in html

    store.activate_new_version("sql:route_stats", {"sql": "SELECT 1 AS n\n"}, "00000000-0000-0000-0000-000000000000",
                               "supervisor")
    html = client.get(f"/proposals/{p.id}").text  # the diff follows what runs now: the active version
    assert "(active version 1)" in html and '<span class="d-del">-SELECT 1 AS n</span>' in html
    assert "The model changed since the agent drafted this patch" in html


def test_editing_sql_reruns_it_on_the_warehouse(client: TestClient, store: StateStore, warehouse: Path) -> None:
    p = sql_proposal(store)
    resp = edit(client, p.id, sql="SELECT origin, dest, count(*) AS n, min(dest) AS first_dest\n"
                                  "FROM flights GROUP BY origin, dest")
    assert resp.headers["location"].endswith("flash=edited")
    dr = store.get_proposal(p.id).dry_run
    assert dr is not None and dr.before.passed and dr.before.rows == 2 and dr.after.passed and dr.after.rows == 3
    assert dr.sample and set(dr.sample[0]) == {"origin", "dest", "n", "first_dest"}

    # dropping an output column the model had: stored, cannot be approved
    resp = edit(client, p.id, sql="SELECT origin FROM flights GROUP BY origin")
    assert resp.headers["location"].endswith("flash=edited_fails")
    dr = store.get_proposal(p.id).dry_run
    assert dr is not None and dr.after.schema_errors == ["the edit drops output column 'n'"]

    # SQL that fails in DuckDB: stored with DuckDB's error as the failed check
    resp = edit(client, p.id, sql="SELECT origin, n FROM flights")
    dr = store.get_proposal(p.id).dry_run
    assert dr is not None and not dr.after.passed and "the query fails" in dr.after.failed_checks[0]


@pytest.mark.parametrize(("sql", "words"), [
    ("DROP TABLE flights", "refused"),
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT 1; SELECT 2", "exactly one statement"),
    ("SELEC origin FROM", "refused"),
    ("   ", "the SQL is empty"),
])
def test_unsafe_or_broken_sql_is_422_and_never_runs(client: TestClient, store: StateStore, warehouse: Path,
                                                    sql: str, words: str) -> None:
    p = sql_proposal(store)
    before = snapshot(store)
    resp = edit(client, p.id, sql=sql)
    assert resp.status_code == 422 and str(escape(words)) in resp.text
    assert snapshot(store) == before
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT count(*) FROM flights").fetchone() == (3,)
    con.close()


# --------------------------------------------------------------------------- quarantines and contract thresholds
def over_bound_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: StateStore,
                    change: object = None) -> Proposal:
    """A pending quality proposal on a flights batch whose first 3 of 12 rows have dep_delay 5000 (the contract's
    max is 1500). The failing batch is given to the real judge (`tools.quality_fix.dry_run`) as its FaultCase,
    so only reading the landed batch is left out."""
    from pipewarden.events import CheckFailed
    from pipewarden.models import Quarantine
    from pipewarden.policies.contract import load_contract
    from pipewarden.policies.quality import dataset_quality
    from pipewarden.tools import quality_fix
    from pipewarden.tools.quality import History

    frame = pd.read_csv(drifted_batch(tmp_path / "feb.csv")).rename(columns={"departureDelay": "dep_delay"})
    frame = pd.concat([frame, frame.head(4).assign(day=20)], ignore_index=True)
    frame.loc[:2, "dep_delay"] = 5000.0
    ev = CheckFailed(dataset="flights", load_id="feb", batch_path=str(tmp_path / "feb.csv"), failed=[],
                     failure_rate=0.25, threshold=0.1)
    store.append_event(ev)

    def load_case(event: object) -> quality_fix.FaultCase:
        return quality_fix.FaultCase(event=event, frame=frame.copy(), contract=load_contract("flights"),
                                     dq=dataset_quality("flights"), rules=[], history=History(dataset="flights"),
                                     rows_landed=len(frame))

    monkeypatch.setattr(quality_fix, "load_case", load_case)
    change = change or Quarantine(dataset="flights", load_id="feb", predicate="dep_delay > 9000",
                                  reason="impossible delays", rows=0, batch_rows=len(frame))
    return store.create_proposal(Proposal(
        event_id=ev.id, agent="quality", dataset="flights", title="flights: quarantine impossible delays",
        diagnosis="3 rows over the bound", change=change, thread_id=f"t-{ev.id}",
        dry_run=DryRun(before=CheckResult(passed=False, rows=12), after=CheckResult(passed=True, rows=12))))


def test_a_quarantine_predicate_is_edited_and_re_proven_on_the_batch(
    client: TestClient, store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = over_bound_case(monkeypatch, tmp_path, store)
    html = client.get(f"/proposals/{p.id}").text
    assert 'id="edit-form"' in html and ">dep_delay &gt; 9000</textarea>" in html

    resp = edit(client, p.id, predicate="dep_delay > 1500", reason_text="delays over the contract's bound")
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=edited")
    edited = store.get_proposal(p.id)
    assert edited.change.predicate == "dep_delay > 1500" and edited.change.reason == "delays over the contract's bound"
    assert edited.change.rows == 3 and edited.change.batch_rows == 12  # what the edited predicate matches
    assert edited.dry_run is not None and edited.dry_run.after.passed and not edited.dry_run.before.passed
    assert edited.dry_run.metrics["rows_taken_out"] == 3
    assert [e.actor for e in store.audit_entries(str(p.id)) if e.action == "edited"] == ["alice"]


def test_a_quarantine_predicate_that_does_not_run_is_refused_and_nothing_changes(
    client: TestClient, store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = over_bound_case(monkeypatch, tmp_path, store)
    before = snapshot(store)
    resp = edit(client, p.id, predicate="no_such_column > 1")
    assert resp.status_code == 422 and "no_such_column" in resp.text
    assert snapshot(store) == before


def test_a_contract_threshold_is_edited_and_re_proven_on_the_batch(
    client: TestClient, store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent proposed raising dep_delay's max to 4000 (the 5000s still fail); the person raises it to 6000."""
    import yaml

    from pipewarden.models import ContractChange
    from pipewarden.policies.contract import contracts_dir

    contract = yaml.safe_load((contracts_dir() / "flights.yaml").read_text(encoding="utf-8"))
    for c in contract["columns"]:
        if c["name"] == "dep_delay":
            c["max"] = 4000
    change = ContractChange(dataset="flights", summary="allow longer delays", loosens=True, contract=contract)
    p = over_bound_case(monkeypatch, tmp_path, store, change)
    html = client.get(f"/proposals/{p.id}").text
    assert '<input type="hidden" name="col_name" value="dep_delay">' in html  # only the column the change touches
    assert 'name="col_max" inputmode="decimal" value="4000"' in html

    resp = edit(client, p.id, max_failure_rate="0.1", col_name="dep_delay", col_min="-120", col_max="6000",
                col_max_length="")
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=edited")
    edited = store.get_proposal(p.id)
    dep = next(c for c in edited.change.contract["columns"] if c["name"] == "dep_delay")
    assert dep["max"] == 6000.0 and dep["min"] == -120.0 and "max_length" not in dep
    assert edited.dry_run is not None and edited.dry_run.after.passed and edited.dry_run.after.failed_rows == 0

    resp = edit(client, p.id, max_failure_rate="0.1", col_name="dep_delay", col_min="-120", col_max="lots",
                col_max_length="")
    assert resp.status_code == 422 and "dep_delay.max must be a number" in resp.text


# --------------------------------------------------------------------------- change sets
def change_set_proposal(store: StateStore, batch: Path) -> Proposal:
    """A drifted batch's mapping and the SQL model that reads it, as one change set (as the drift agent makes)."""
    from pipewarden.models import ChangeSet

    p = mapping_proposal(store, batch)
    members = [p.change, SqlModelPatch(model="route_stats", sql=NEW_SQL, base_sql=OLD_SQL, reason="by destination")]
    ev = store.get_event(p.event_id).model_copy(update={"id": type(p.event_id)(int=p.event_id.int + 1)})
    store.append_event(ev)
    return store.create_proposal(p.model_copy(update={
        "id": type(p.id)(int=p.id.int + 1), "event_id": ev.id, "thread_id": f"t-{ev.id}",
        "change": ChangeSet(changes=members, summary="the mapping and the model that reads it")}))


def test_each_member_of_a_change_set_is_edited_and_every_member_re_proven(
    client: TestClient, store: StateStore, tmp_path: Path, warehouse: Path
) -> None:
    p = change_set_proposal(store, drifted_batch(tmp_path / "feb.csv"))
    html = client.get(f"/proposals/{p.id}").text
    assert 'id="edit-form"' in html and 'name="m0.rename_to"' in html and 'name="m1.sql"' in html

    form = {f"m0.{k}": v for k, v in mapping_form({"departureDelay": "dep_delay"}, {}).items()}
    edited_sql = "SELECT origin, dest, count(*) AS n, min(dest) AS first_dest\nFROM flights GROUP BY origin, dest"
    resp = edit(client, p.id, **form, **{"m1.sql": edited_sql})
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=edited")
    edited = store.get_proposal(p.id)
    assert edited.change.changes[0].casts == {} and edited.change.changes[1].sql == edited_sql
    dr = edited.dry_run
    assert dr is not None and dr.after.passed and dr.sample and dr.sample[0]["dep_delay"] == 2.0
    assert dr.metrics["rows_after[2]"] == 3.0  # the SQL member's proof on the warehouse (3 routes)

    # a member that fails fails the set, named by its number
    resp = edit(client, p.id, **form, **{"m1.sql": "SELECT origin, nosuchcolumn FROM flights"})
    assert resp.status_code == 303 and resp.headers["location"].endswith("flash=edited_fails")
    dr = store.get_proposal(p.id).dry_run
    assert dr is not None and not dr.after.passed
    assert any(line.startswith("2. sql_model_patch: ") for line in dr.after.failed_checks + dr.after.schema_errors)
