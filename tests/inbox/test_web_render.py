"""Every change kind renders readably, on the proposal page and in the terminal (`inbox show`): specific views
for mappings, SQL, contracts, quarantines and promotions, a definition list for any other kind, a change set
as its members; plus the small view helpers (diffs, ages in words)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from pipewarden.events import CostRegression
from pipewarden.inbox import render
from pipewarden.inbox.web import create_app
from pipewarden.models import (
    ChangeSet,
    CheckResult,
    Citation,
    ColumnMapping,
    ContractChange,
    DedupeRule,
    DryRun,
    ModelPromotion,
    Proposal,
    Quarantine,
    Reingest,
    SqlModelPatch,
)
from pipewarden.store import StateStore
from tests.inbox.web_client import sign_in


def airlines_with(**carrier: object) -> dict:
    """The example airlines contract as an agent writes it out: every default spelled (`max: None`, `min: None`),
    numbers as floats, with `carrier`'s fields replaced by `carrier`."""
    import yaml

    from pipewarden.policies.contract import Contract, contracts_dir

    data = yaml.safe_load((contracts_dir() / "airlines.yaml").read_text(encoding="utf-8"))
    contract = Contract.model_validate(data).model_dump(mode="json")
    contract["columns"] = [{**c, **carrier} if c["name"] == "carrier" else c for c in contract["columns"]]
    return contract


AIRLINES_3_LETTER = airlines_with(max_length=3)

CHANGES = {
    "quarantine": (Quarantine(dataset="flights", predicate="arr_delay IS NULL", reason="cancelled flights",
                              rows=12, batch_rows=4000),
                   ["<code>arr_delay IS NULL</code>", "cancelled flights", "12 of 4000 rows (0.30%)"]),
    "reingest": (Reingest(dataset="weather", load_id="weather-0213", source="s3://raw/weather/0213.csv",
                          reason="the load was cut short"),
                 ["<dt>load_id</dt><dd>weather-0213</dd>", "s3://raw/weather/0213.csv", "the load was cut short"]),
    "dedupe_rule": (DedupeRule(dataset="flights", keys=["carrier", "flight", "time_hour"], order_by="dep_time"),
                    ["<dt>keys</dt>", "&#34;carrier&#34;", "<dt>keep</dt><dd>last</dd>", "dep_time"]),
    "model_promotion": (ModelPromotion(model_name="delay_model", from_version="3", to_version="4", run_id="r-9"),
                        ["<code>delay_model@champion</code> from version <strong>3</strong> to version "
                         "<strong>4</strong>"]),
    "contract_change": (ContractChange(dataset="airlines", summary="allow 3-letter carrier codes", loosens=True,
                                       contract=AIRLINES_3_LETTER),
                        ["allow 3-letter carrier codes", "loosens the contract",
                         '<span class="d-del">-  max_length: 2</span>', '<span class="d-add">+  max_length: 3</span>',
                         'class="d-meta">--- airlines.yaml (current)']),
}

TERMINAL = {"quarantine": "arr_delay IS NULL", "reingest": "weather-0213", "dedupe_rule": '"time_hour"',
            "model_promotion": "delay_model", "contract_change": "allow 3-letter carrier codes"}


def store_proposal(store: StateStore, change: object, **fields: object) -> Proposal:
    ev = CostRegression(dataset=getattr(change, "dataset", "flights"), model="m", baseline=1, observed=2, ratio=2)
    store.append_event(ev)
    return store.create_proposal(Proposal(
        event_id=ev.id, agent="quality", dataset=getattr(change, "dataset", "flights"), title="a change",
        diagnosis="d", change=change, thread_id=f"t-{ev.id}", **fields))


@pytest.fixture
def client(store: StateStore) -> TestClient:
    c = TestClient(create_app())
    sign_in(c, "bob", store)  # a steward of every dataset
    return c


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_each_change_kind_has_a_readable_page(client: TestClient, store: StateStore, kind: str) -> None:
    change, expected = CHANGES[kind]
    p = store_proposal(store, change)
    resp = client.get(f"/proposals/{p.id}")
    assert resp.status_code == 200
    assert f"Change: {kind}" in resp.text
    for text in expected:
        assert text in resp.text, text
    # the page works under the CSP (no inline script or style): it carries none
    assert "<script" not in resp.text and "<style" not in resp.text and " style=" not in resp.text
    # a person can adjust a quarantine's predicate and a contract's thresholds; the other kinds are not editable
    assert ('id="edit-form"' in resp.text) == (kind in ("quarantine", "contract_change"))


def test_a_change_set_shows_each_member(client: TestClient, store: StateStore) -> None:
    members = [ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}),
               SqlModelPatch(model="stg_flights", sql="SELECT 1 AS x\n", base_sql="SELECT 2 AS x\n")]
    p = store_proposal(store, ChangeSet(changes=members, summary="a mapping and the model that reads it"))
    html = client.get(f"/proposals/{p.id}").text
    assert "a mapping and the model that reads it" in html
    assert "1. column_mapping" in html and "2. sql_model_patch" in html
    assert "<td><code>departureDelay</code></td><td>&rarr;</td><td><code>dep_delay</code></td>" in html
    assert '<span class="d-add">+SELECT 1 AS x</span>' in html


def test_dry_run_metrics_and_notes_are_shown(client: TestClient, store: StateStore) -> None:
    dr = DryRun(before=CheckResult(passed=True, rows=10), after=CheckResult(passed=True, rows=10),
                metrics={"cost_before_ms": 420.0, "cost_after_ms": 96.5}, notes=["the plan no longer scans twice"])
    p = store_proposal(store, SqlModelPatch(model="nosuchmodel", sql="SELECT 1"), dry_run=dr)
    html = client.get(f"/proposals/{p.id}").text
    assert "<th>cost_after_ms</th><td>96.5</td>" in html and "the plan no longer scans twice" in html
    assert "The checks pass with the change." in html


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_each_change_kind_renders_in_the_terminal(store: StateStore, kind: str) -> None:
    change, _ = CHANGES[kind]
    p = store_proposal(store, change)
    console = Console(width=160, record=True)
    console.print(render.proposal_detail(p, [], store.audit_entries(str(p.id))))
    text = console.export_text()
    assert f"change: {kind}" in text
    assert TERMINAL[kind] in text
    assert "(just now)" in text and "just now ago" not in text


def test_unified_diff_lines_have_kinds() -> None:
    lines = render.unified_diff("a\nb\nc\n", "a\nB\nc\n", "old", "new")
    assert [(d.kind, d.text) for d in lines] == [
        ("meta", "--- old"), ("meta", "+++ new"), ("hunk", "@@ -1,3 +1,3 @@"),
        ("ctx", " a"), ("del", "-b"), ("add", "+B"), ("ctx", " c"),
    ]
    assert render.unified_diff("same\n", "same\n", "old", "new") == []


@pytest.mark.parametrize(("delta", "words"), [
    (timedelta(seconds=20), "just now"), (timedelta(minutes=1), "1 minute"), (timedelta(hours=5), "5 hours"),
    (timedelta(days=3, hours=2), "3 days"), (timedelta(days=65), "2 months"), (timedelta(days=800), "2 years"),
])
def test_age_in_words(delta: timedelta, words: str) -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert render.age_words(now - delta, now) == words
    assert render.age_words((now - delta).replace(tzinfo=None), now) == words  # naive times are UTC


def test_a_contract_diff_shows_only_the_fields_that_change(pw_home: object) -> None:
    """An agent's contract is written out in full (defaults, floats); the diff shows the one changed field of the one
    changed column, with its name, and nothing else: no `max: null`, no `min: 1` -> `1.0`, no unchanged column."""
    change = ContractChange(dataset="airlines", summary="s", contract=airlines_with(max_length=3))
    lines = [(d.kind, d.text) for d in render.contract_diff(change) if d.kind in ("add", "del", "ctx")]
    assert lines == [("ctx", " columns:"), ("ctx", " - name: carrier"), ("del", "-  max_length: 2"),
                     ("add", "+  max_length: 3")]


def test_a_contract_written_out_in_full_but_unchanged_has_no_diff(pw_home: object) -> None:
    assert render.contract_diff(ContractChange(dataset="airlines", summary="s", contract=airlines_with())) == []


def test_changed_contract_fields_keep_added_and_dropped_columns_whole() -> None:
    old = {"max_failure_rate": 0.1, "columns": [{"name": "a", "type": "integer", "min": 1.0}]}
    new = {"max_failure_rate": 0.2, "columns": [{"name": "b", "type": "string"}, {"name": "a", "type": "integer",
                                                                                   "min": 1.0}]}
    assert render.changed_contract_fields(old, new) == (
        {"max_failure_rate": 0.1}, {"max_failure_rate": 0.2, "columns": [{"name": "b", "type": "string"}]})


def test_ago_never_says_just_now_ago() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert render.ago(now - timedelta(seconds=5), now) == "just now"
    assert render.ago(now - timedelta(hours=2), now) == "2 hours ago"


def test_citations_about_the_proposals_dataset_come_first_then_by_score() -> None:
    other = Citation(chunk_id="1", source="models/stg_flights.sql", kind="sql_model", dataset="flights", score=0.9)
    general = Citation(chunk_id="2", source="runbooks/drift.md", kind="runbook", score=0.4)
    own = Citation(chunk_id="3", source="contracts/customers.yaml", kind="contract", dataset="customers", score=0.6)
    assert [c.chunk_id for c in render.citations_by_relevance([other, general, own], "customers")] == ["3", "2", "1"]
