"""Concurrency, on SQLite and PostgreSQL, with threads and with processes: of several people approving at once
exactly one decision is stored when one suffices (both when the rule wants two), concurrent applies of one
approved proposal make exactly one version, and of several workers taking one proposal's lease at once exactly
one gets it (a web approval's worker and a running `supervise --interval` never both resume it)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipewarden.errors import InvalidTransition, PipewardenError
from pipewarden.inbox.service import decide
from pipewarden.leases import LeaseHeld
from pipewarden.models import ProposalStatus, Risk, Verdict
from pipewarden.store import StateStore
from pipewarden.tools.apply import apply_change
from tests.cli.conftest import subprocess_env
from tests.pipewarden.factories import pending_proposal

REPO = Path(__file__).resolve().parents[2]


def _race(fns: list[Callable[[], object]]) -> list[object]:
    """Run the callables in threads released at the same moment; each result or the PipewardenError it raised."""
    barrier = threading.Barrier(len(fns))
    out: list[object] = [None] * len(fns)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fns[i]()
        except PipewardenError as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _race_processes(args: list[list[str]], folder: Path, home: Path, url: str) -> list[dict]:
    env = subprocess_env(home, PIPEWARDEN_DATABASE_URL=url)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.pipewarden.decide_worker", *a, str(folder)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in args]
    deadline = time.monotonic() + 90
    while len(list(folder.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    (folder / "go").touch()
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def test_threads_approving_at_once_leave_exactly_one_decision(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    results = _race([lambda who=who: decide(p.id, Verdict.approve, who, resume=False)
                     for who in ("alice", "carol", "bob", "alice")])
    losers = [r for r in results if isinstance(r, PipewardenError)]
    assert len(losers) == 3 and all(isinstance(r, InvalidTransition) for r in losers)
    assert len(store.decisions_for(p.id)) == 1
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert [e.action for e in store.audit_entries(str(p.id))] == ["proposed", "approved"]
    assert store.verify_audit().ok


def test_two_person_rule_under_concurrency_keeps_both_approvals(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store, risk=Risk.high)  # high risk: the owner and a steward
    results = _race([lambda who=who: decide(p.id, Verdict.approve, who, resume=False) for who in ("alice", "bob")])
    assert not any(isinstance(r, Exception) for r in results)
    assert sorted(d.actor for d in store.decisions_for(p.id)) == ["alice", "bob"]
    assert store.get_proposal(p.id).status == ProposalStatus.approved
    assert [e.action for e in store.audit_entries(str(p.id))] == ["proposed", "approval_recorded", "approved"]


def test_threads_applying_at_once_make_one_version(state_url: str) -> None:
    store = StateStore()
    p = pending_proposal(store)
    decide(p.id, Verdict.approve, "alice", resume=False)
    _race([lambda: apply_change(p.id)] * 4)
    assert len(store.list_versions("mapping:flights")) == 1
    assert store.get_proposal(p.id).status == ProposalStatus.applied
    assert [e.action for e in store.audit_entries(str(p.id))].count("version_activated") == 1


@pytest.mark.slow
def test_processes_approving_at_once_leave_exactly_one_decision(state_url: str, tmp_path: Path, pw_home: Path) -> None:
    store = StateStore()
    p = pending_proposal(store)
    results = _race_processes([["decide", str(p.id), "alice"], ["decide", str(p.id), "bob"]], tmp_path, pw_home,
                              state_url)
    assert sorted(r["ok"] for r in results) == [False, True]
    assert [r["error"] for r in results if not r["ok"]] == ["InvalidTransition"]
    assert len(store.decisions_for(p.id)) == 1
    assert store.verify_audit().ok


@pytest.mark.slow
def test_processes_applying_at_once_make_one_version(state_url: str, tmp_path: Path, pw_home: Path) -> None:
    store = StateStore()
    p = pending_proposal(store)
    decide(p.id, Verdict.approve, "alice", resume=False)
    _race_processes([["apply", str(p.id), "a"], ["apply", str(p.id), "b"]], tmp_path, pw_home, state_url)
    assert len(store.list_versions("mapping:flights")) == 1
    assert store.get_proposal(p.id).status == ProposalStatus.applied
    assert [e.action for e in store.audit_entries(str(p.id))].count("version_activated") == 1
    assert store.verify_audit().ok


def test_threads_taking_one_lease_at_once_leave_one_owner(state_url: str) -> None:
    """Each thread has its own connection: on PostgreSQL the four UPDATEs really race (row locks), on SQLite the
    database's write lock serializes them, as it would for processes."""
    store = StateStore()
    p = pending_proposal(store)
    decide(p.id, Verdict.approve, "alice", resume=False)
    owners = [f"other-host:{i}" for i in range(4)]
    results = _race([lambda who=who: StateStore().take_proposal_lease(p.id, who) for who in owners])
    winners = [who for who, r in zip(owners, results, strict=True) if not isinstance(r, PipewardenError)]
    assert len(winners) == 1 and all(isinstance(r, LeaseHeld) for r in results if isinstance(r, PipewardenError))
    assert store.proposal_lease(p.id)["lease_owner"] == winners[0]

