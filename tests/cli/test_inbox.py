"""`pipewarden inbox list | show | approve | reject` through the console-script entry point."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipewarden import db
from pipewarden.ids import utcnow
from pipewarden.models import ProposalStatus, Risk, Verdict
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.cli.conftest import CliResult
from tests.fakes.runtimes import swap
from tests.inbox import fake_resumer as fake_graph
from tests.pipewarden.factories import pending_proposal
from tests.pipewarden.test_store import tampering


@pytest.fixture(autouse=True)
def fake_resumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Approvals resume the fake graph (approved -> applying -> applied -> verified), never the real agents."""
    swap(monkeypatch, resumer=fake_graph.resume)


@pytest.fixture
def store() -> StateStore:
    return StateStore()


@pytest.fixture
def prove(monkeypatch: pytest.MonkeyPatch, store: StateStore) -> Callable[[str], str]:
    """Decide from the command line as NAME, proven by a personal token of theirs in PIPEWARDEN_TOKEN."""
    def as_person(name: str) -> str:
        token = store.issue_token(name)
        monkeypatch.setenv("PIPEWARDEN_TOKEN", token)
        return token

    return as_person


def map_login(project: Path, name: str) -> str:
    """Give approver `name` this process's OS login (`os_user`) in the project's approvers.yaml; the login."""
    from pipewarden.inbox.identity import os_login

    login = os_login()
    assert login, "the test needs a login for its uid"
    path = project / "approvers.yaml"
    path.write_text(path.read_text().replace(f"  - name: {name}\n", f"  - name: {name}\n    os_user: {login}\n", 1))
    get_settings.cache_clear()
    return login


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


def test_inbox_reject_with_a_blank_reason_is_refused(pw: Callable[..., CliResult], store: StateStore,
                                                     prove: Callable[[str], str]) -> None:
    p = pending_proposal(store)
    prove("alice")
    res = pw("inbox", "reject", p.short_id, "--reason", "  ", "--as", "alice")
    assert res.code == 2
    assert "needs a reason" in res.err_text
    assert store.decisions_for(p.id) == []


def test_inbox_approve_as_system_is_refused(pw: Callable[..., CliResult], store: StateStore,
                                            prove: Callable[[str], str]) -> None:
    p = pending_proposal(store)
    prove("system")  # even a valid token that names a system identity
    res = pw("inbox", "approve", p.short_id)
    assert res.code == 4, (res.code, res.err)
    assert "'system' is a system identity and can never decide a proposal" in res.err_text
    assert "Traceback" not in res.err
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert store.decisions_for(p.id) == []


def test_inbox_approve_as_a_person_applies_and_verifies(pw: Callable[..., CliResult], store: StateStore,
                                                       prove: Callable[[str], str]) -> None:
    p = pending_proposal(store)
    prove("alice")
    res = pw("inbox", "approve", p.short_id, "--as", "alice", "--json")
    assert res.code == 0, res.err
    outcome = json.loads(res.out)
    assert outcome["decision"]["actor"] == "alice"
    assert outcome["resume"] == "resumed"
    assert outcome["proposal"]["status"] == "verified"
    assert store.get_proposal(p.id).status == ProposalStatus.verified


def test_approve_as_someone_without_the_role_is_refused_and_says_who_can(
    pw: Callable[..., CliResult], store: StateStore, prove: Callable[[str], str]
) -> None:
    p = pending_proposal(store)
    prove("dave")
    res = pw("inbox", "approve", p.short_id)
    assert res.code == 4, (res.code, res.err)
    assert "dave cannot approve proposal" in res.err_text and "dave has engineer on *" in res.err_text
    assert "hint: ask alice, carol, bob" in res.err_text
    assert store.decisions_for(p.id) == []


def test_a_name_alone_proves_nothing(
    pw: Callable[..., CliResult], store: StateStore, monkeypatch: pytest.MonkeyPatch, pw_project: Path
) -> None:
    p = pending_proposal(store)
    monkeypatch.delenv("PIPEWARDEN_TOKEN", raising=False)
    monkeypatch.setenv("PIPEWARDEN_USER", "bob")
    for args in ((), ("--as", "bob")):
        res = pw("inbox", "approve", p.short_id, *args)
        assert res.code == 2, (res.code, res.err)
        assert "cannot tell who is deciding" in res.err_text and "a name alone, 'bob', proves nothing" in res.err_text
        assert "PIPEWARDEN_TOKEN" in res.err_text and "os_user:" in res.err_text
    assert store.decisions_for(p.id) == []
    map_login(pw_project, "bob")  # bob's entry names this login: now the login proves bob
    assert pw("inbox", "approve", p.short_id).code == 0
    assert store.approved_decision(p.id).actor == "bob"  # type: ignore[union-attr]


def test_one_os_user_cannot_satisfy_the_two_person_rule(
    pw: Callable[..., CliResult], store: StateStore, monkeypatch: pytest.MonkeyPatch, pw_project: Path
) -> None:
    p = pending_proposal(store, risk=Risk.high)  # an owner and a steward must approve
    monkeypatch.delenv("PIPEWARDEN_TOKEN", raising=False)
    map_login(pw_project, "alice")
    assert pw("inbox", "approve", p.short_id).code == 0  # the login proves alice: her approval is recorded
    for how in (("--as", "bob"), ("--as", "carol")):
        res = pw("inbox", "approve", p.short_id, *how)
        assert res.code == 4 and f"you cannot decide as '{how[1]}'" in res.err_text, res.err
        assert "you proved alice (by login" in res.err_text
    monkeypatch.setenv("PIPEWARDEN_USER", "bob")
    res = pw("inbox", "approve", p.short_id)
    assert res.code == 4 and "you cannot decide as 'bob'" in res.err_text
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert [d.actor for d in store.decisions_for(p.id)] == ["alice"]
    # a forged token is no way round it either
    monkeypatch.setenv("PIPEWARDEN_TOKEN", "pw_made-up")
    res = pw("inbox", "approve", p.short_id, "--as", "bob")
    assert res.code == 2 and "unknown or has been revoked" in res.err_text
    assert [d.actor for d in store.decisions_for(p.id)] == ["alice"]
    # bob, with his own token, completes it
    monkeypatch.setenv("PIPEWARDEN_TOKEN", store.issue_token("bob"))
    assert pw("inbox", "approve", p.short_id, "--as", "bob").code == 0
    assert [d.actor for d in store.decisions_for(p.id)] == ["alice", "bob"]


def test_a_token_file_proves_its_owner_and_must_be_private(
    pw: Callable[..., CliResult], store: StateStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p = pending_proposal(store)
    monkeypatch.delenv("PIPEWARDEN_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text(store.issue_token("carol") + "\n")
    path.chmod(0o644)
    res = pw("inbox", "approve", p.short_id, "--token-file", str(path))
    assert res.code == 2 and "can be read by others" in res.err_text and "chmod 600" in res.err_text
    path.chmod(0o600)
    res = pw("inbox", "approve", p.short_id, "--token-file", str(path), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["decision"]["actor"] == "carol"


def test_a_high_risk_approval_says_who_is_still_needed(pw: Callable[..., CliResult], store: StateStore,
                                                      prove: Callable[[str], str]) -> None:
    p = pending_proposal(store, risk=Risk.high)
    prove("alice")
    res = pw("inbox", "approve", p.short_id, "--as", "alice")
    assert res.code == 0, res.err
    assert f"proposal {p.short_id}: pending" in res.out_text
    assert "approval by alice recorded; it needs 1 more approval from: steward (e.g. bob)" in res.out_text
    prove("bob")
    assert pw("inbox", "approve", p.short_id, "--as", "bob").code == 0
    assert store.get_proposal(p.id).status == ProposalStatus.verified


def test_approvers_list_and_a_personal_token(pw: Callable[..., CliResult], store: StateStore) -> None:
    res = pw("approvers", "list", "--json")
    assert res.code == 0, res.err
    people = {a["name"]: a for a in json.loads(res.out)}
    assert people["alice"]["roles"] == ["owner"] and people["alice"]["slack_user_id"] == "U0FLIGHTS"
    token_res = pw("approvers", "token", "alice")
    assert token_res.code == 0, token_res.err
    token = token_res.out.strip()
    assert store.approver_for_token(token) == "alice"
    assert "shown once" in token_res.err_text
    revoked = pw("approvers", "token", "alice", "--revoke")
    assert revoked.code == 0 and "revoked 1 token(s) of alice" in revoked.out_text
    assert store.approver_for_token(token) is None
    unknown = pw("approvers", "token", "alcie")
    assert unknown.code == 2 and "did you mean 'alice'" in unknown.err_text


def test_inbox_expire_closes_overdue_proposals(pw: Callable[..., CliResult], store: StateStore,
                                               prove: Callable[[str], str]) -> None:
    overdue = pending_proposal(store, expires_at=utcnow() - timedelta(minutes=1))
    fresh = pending_proposal(store)
    res = pw("inbox", "expire", "--json")
    assert res.code == 0, res.err
    assert [r["id"] for r in json.loads(res.out)] == [str(overdue.id)]
    assert store.get_proposal(fresh.id).status == ProposalStatus.pending
    prove("alice")
    refused = pw("inbox", "approve", str(overdue.id), "--as", "alice")
    assert refused.code == 4 and "has expired" in refused.err_text


def test_audit_verify_names_the_first_broken_entry_and_exits_5(
    pw: Callable[..., CliResult], store: StateStore, prove: Callable[[str], str]
) -> None:
    p = pending_proposal(store)
    prove("alice")
    assert pw("inbox", "approve", p.short_id, "--as", "alice").code == 0
    ok = pw("audit", "verify", "--json")
    assert ok.code == 0 and json.loads(ok.out)["ok"] is True
    entries = store.audit_entries()
    with tampering(store) as conn:
        conn.execute(sa.update(db.audit_log).where(db.audit_log.c.seq == entries[2].seq).values(actor="mallory"))
    res = pw("audit", "verify", "--json")
    assert res.code == 5
    report = json.loads(res.out)
    assert report["ok"] is False and report["first_broken_seq"] == entries[2].seq
    assert f"entry {entries[2].seq}" in report["problem"] and "edited" in report["problem"]


def test_db_upgrade_reports_the_revision(pw: Callable[..., CliResult]) -> None:
    from pipewarden.db import head_revision

    res = pw("db", "upgrade")
    assert res.code == 0, res.err
    assert head_revision() == "0008" and "state DB at revision 0008" in res.out_text
