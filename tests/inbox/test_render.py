"""The terminal and JSON renderings used by `pipewarden inbox list|show` and `pipewarden audit verify`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from rich.console import Console, RenderableType

from pipewarden.audit import AuditReport
from pipewarden.inbox import render, service
from pipewarden.store import StateStore
from tests.inbox import fake_resumer
from tests.inbox.conftest import make_proposal


def text_of(renderable: RenderableType) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_proposals_table(store: StateStore) -> None:
    p = make_proposal(store)
    out = text_of(render.proposals_table([p]))
    assert "proposals (1)" in out
    for text in (p.short_id, "pending", "low", "schema_drift", "flights", p.title, "0s"):
        assert text in out


def test_proposals_table_prints_markup_in_data_literally(store: StateStore) -> None:
    p = make_proposal(store, title="[bold red]urgent[/] [link=http://evil]click[/link]")
    out = text_of(render.proposals_table([p]))
    assert "[bold red]urgent[/] [link=http://evil]click[/link]" in out


def test_empty_table() -> None:
    assert "the queue is empty" in text_of(render.proposals_table([]))


def test_proposal_detail(store: StateStore) -> None:
    p = make_proposal(store)
    service.approve(p.id, "alice", reason="fine")
    v = service.view(p.id)
    out = text_of(render.proposal_detail(v.proposal, v.decisions, v.audit, event=v.event))
    assert p.title in out and "verified" in out
    assert "The batch renamed dep_delay to dep_delay_min" in out
    assert "incoming column" in out and "contract column" in out
    line = next(x for x in out.splitlines() if "dep_delay_min" in x and "->" in x)
    assert line.index("dep_delay_min") < line.index("->") < line.rindex("dep_delay")
    assert "casts" in out and "integer" in out
    assert "before" in out and "after" in out and "dep_delay not null" in out
    assert "the change heals the batch" in out
    assert "N14228" in out and "null" in out
    assert "contracts/flights.yaml" in out and "data-platform" in out
    assert "owner, steward" in out
    assert "approve" in out and "alice" in out and "fine" in out
    for action in ("proposed", "approved", "applying", "applied"):
        assert action in out


def test_age() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert render.age(now - timedelta(seconds=42), now) == "42s"
    assert render.age(now - timedelta(minutes=5, seconds=3), now) == "5m"
    assert render.age(now - timedelta(hours=3), now) == "3h"
    assert render.age((now - timedelta(days=2)).replace(tzinfo=None), now) == "2d"


def test_audit_report_ok_and_broken(store: StateStore) -> None:
    make_proposal(store)
    ok = text_of(render.audit_report(store.verify_audit()))
    assert "audit log verified: 1 entries" in ok
    broken = AuditReport(ok=False, entries=7, first_broken_seq=4,
                         problem="entry 4 (approved by ana) was edited after it was written")
    out = text_of(render.audit_report(broken))
    assert "broken at entry 4" in out and "was edited after it was written" in out and "7 entries" in out


def test_outcome_renderable(store: StateStore, use_resumer) -> None:
    p = make_proposal(store)
    out = text_of(render.outcome_renderable(service.approve(p.id, "alice")))
    assert f"approved proposal {p.short_id} as alice; it is now verified" in out
    q = make_proposal(store)
    use_resumer(fake_resumer.fail)
    out = text_of(render.outcome_renderable(service.approve(q.id, "alice")))
    assert "resuming the agent failed: RuntimeError: checkpoint database is locked" in out
    assert "the decision is stored" in out


def test_json_helpers(store: StateStore) -> None:
    p = make_proposal(store)
    listed = render.proposals_json([p])
    assert listed["count"] == 1
    row = listed["proposals"][0]
    assert row["id"] == str(p.id) and row["short_id"] == p.short_id
    assert row["status"] == "pending" and row["change"] == "column_mapping" and row["risk"] == "low"

    v = service.view(p.id)
    detail = render.proposal_detail_json(v.proposal, v.decisions, v.audit, event=v.event)
    json.dumps(detail)  # JSON-ready
    assert detail["proposal"]["dry_run"]["before"]["failed_rows"] == 120
    assert detail["event"]["load_id"] == "load-0042"
    assert detail["audit"][0]["action"] == "proposed"

    report = render.audit_report_json(store.verify_audit())
    assert report == {"ok": True, "entries": 1, "first_broken_seq": None, "problem": None, "problems": [],
                      "anchored_seq": 1, "notes": []}

    outcome = render.outcome_json(service.reject(p.id, "alice", "no", resume=False))
    json.dumps(outcome)
    assert outcome["decision"]["reason"] == "no" and outcome["proposal"]["status"] == "rejected"
    assert outcome["resume"] == "not_requested"
