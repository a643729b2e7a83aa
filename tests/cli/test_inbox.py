"""`pipewarden inbox list | show | approve | reject` through the console-script entry point."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pipewarden.models import ProposalStatus, Verdict
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.cli.conftest import CliResult
from tests.pipewarden.factories import pending_proposal


@pytest.fixture(autouse=True)
def fake_resumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Approvals resume the fake graph (approved -> applying -> applied -> verified), never the real agents."""
    monkeypatch.setenv("PIPEWARDEN_RESUMER", "tests.inbox.fake_resumer:resume")
    get_settings.cache_clear()


@pytest.fixture
def store() -> StateStore:
    return StateStore()


def test_inbox_list_json_lists_open_proposals(pw: Callable[..., CliResult], store: StateStore) -> None:
    first = pending_proposal(store, title="flights: map departureDelay -> dep_delay")
    second = pending_proposal(store, title="flights: map arrivalDelay -> arr_delay")
    decided = pending_proposal(store, title="flights: an old one")
    store.decide(decided.id, Verdict.reject, "carol", "wrong column")

    res = pw("inbox", "list", "--json")
    assert res.code == 0, res.err
    rows = json.loads(res.out)
    assert {r["id"] for r in rows} == {str(first.id), str(second.id)}  # open ones only, by default
    for r in rows:
        assert r["status"] == "pending"
        assert r["short_id"] == r["id"][:8]
        assert r["dataset"] == "flights" and r["agent"] == "schema-drift" and r["change"] == "column_mapping"
    assert {r["title"] for r in rows} == {first.title, second.title}

    everything = json.loads(pw("inbox", "list", "--all", "--json").out)
    assert {r["id"]: r["status"] for r in everything}[str(decided.id)] == "rejected"
    assert len(everything) == 3


def test_inbox_list_json_on_an_empty_home_is_an_empty_list(pw: Callable[..., CliResult]) -> None:
    res = pw("inbox", "list", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out) == []


def test_inbox_show_json_by_id_prefix(pw: Callable[..., CliResult], store: StateStore) -> None:
    p = pending_proposal(store)
    res = pw("inbox", "show", p.short_id, "--json")
    assert res.code == 0, res.err
    shown = json.loads(res.out)
    assert shown["id"] == str(p.id)
    assert shown["status"] == "pending"
    assert shown["title"] == p.title
    assert shown["decisions"] == []
    assert [(a["action"], a["proposal_id"]) for a in shown["audit"]] == [("proposed", str(p.id))]
    assert shown["change"] == "column_mapping"


def test_inbox_show_unknown_prefix_is_a_clean_error(pw: Callable[..., CliResult]) -> None:
    res = pw("inbox", "show", "deadbeef", "--json")
    assert res.code == 2
    assert "unknown proposal 'deadbeef'" in res.err_text
    assert res.out == ""
    assert "Traceback" not in res.err


def test_inbox_reject_without_reason_is_a_usage_error(pw: Callable[..., CliResult], store: StateStore) -> None:
    p = pending_proposal(store)
    res = pw("inbox", "reject", p.short_id)
    assert res.code == 2, (res.code, res.err)
    assert "Missing option '--reason'" in res.err_text
    assert "Usage:" in res.err_text
    assert "Traceback" not in res.err
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert store.decisions_for(p.id) == []


def test_inbox_reject_with_a_blank_reason_is_refused(pw: Callable[..., CliResult], store: StateStore) -> None:
    p = pending_proposal(store)
    res = pw("inbox", "reject", p.short_id, "--reason", "  ", "--as", "alice")
    assert res.code == 2
    assert "needs a reason" in res.err_text
    assert store.decisions_for(p.id) == []


def test_inbox_approve_as_system_is_refused(pw: Callable[..., CliResult], store: StateStore) -> None:
    p = pending_proposal(store)
    res = pw("inbox", "approve", p.short_id, "--as", "system")
    assert res.code == 4, (res.code, res.err)
    assert "'system' is a system identity and can never decide a proposal" in res.err_text
    assert "Traceback" not in res.err
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert store.decisions_for(p.id) == []


def test_inbox_approve_as_a_person_applies_and_verifies(pw: Callable[..., CliResult], store: StateStore) -> None:
    p = pending_proposal(store)
    res = pw("inbox", "approve", p.short_id, "--as", "alice", "--json")
    assert res.code == 0, res.err
    outcome = json.loads(res.out)
    assert outcome["decision"]["actor"] == "alice"
    assert outcome["resume"] == "resumed"
    assert outcome["proposal"]["status"] == "verified"
    assert store.get_proposal(p.id).status == ProposalStatus.verified
