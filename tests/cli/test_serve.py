"""`pipewarden serve` for real: a child process serving the web inbox on a free port, a proposal approved
over HTTP, stored with its hand-off to a worker and answered at once, then applied by a worker until verified.

The server runs with `--no-worker` and this test plays the worker (`tests.inbox.web_client.work_once`: the lease,
the fake resumer moving the proposal approved -> applying -> applied -> verified, the release), so the server is
seen to apply nothing itself. The worker `serve` starts by default is `inbox.worker` (tests/inbox/test_web_worker.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipewarden.models import Proposal, ProposalStatus
from pipewarden.store import StateStore
from tests.cli.conftest import subprocess_env
from tests.inbox.web_client import work_once
from tests.pipewarden.factories import pending_proposal

FAKE_RESUMER = "tests.fakes.runtimes:fake_resumer"  # the server's runtime: approvals resume the fake graph
STARTUP_TIMEOUT_S = 30.0
VERIFY_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    """Poll `check` until it is true; fail (with the server's output) on timeout or if the server exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate(timeout=5)
            pytest.fail(f"the server exited ({proc.returncode}) while waiting for {what}:\n{out}\n{err}")
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def proposal(pw_home: Path) -> Proposal:
    """A pending schema-drift proposal in the test's PIPEWARDEN_HOME, stored before the server starts."""
    return pending_proposal(StateStore())


@pytest.fixture
def inbox_server(pw_home: Path, proposal: Proposal) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`pipewarden serve --port P` in a child process over a home holding `proposal`; yields its base URL and
    the process; always stopped at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipewarden", "serve", "--port", str(port), "--trusted-user-header", "X-Forwarded-User",
         "--no-worker"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(pw_home, PIPEWARDEN_RUNTIME=FAKE_RESUMER),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, STARTUP_TIMEOUT_S, "GET /healthz", proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_serve_shows_a_pending_proposal_and_an_approval_ends_verified(
    proposal: Proposal, inbox_server: tuple[str, subprocess.Popen[str]]
) -> None:
    base, proc = inbox_server
    store = StateStore()
    p = proposal
    pid = str(p.id)

    health = httpx.get(f"{base}/healthz", timeout=5).json()
    assert health["status"] == "ok"

    page = httpx.get(f"{base}/", timeout=5, headers={"X-Forwarded-User": "alice"})  # a header it is told to trust
    assert page.status_code == 200
    assert "flights: map departureDelay -&gt; dep_delay" in page.text  # the title, autoescaped
    assert p.short_id in page.text
    assert "1&ndash;1 of 1" in page.text

    assert httpx.get(f"{base}/api/proposals/{pid}", timeout=5).status_code == 401  # the API needs a token
    alice = {"Authorization": f"Bearer {store.issue_token('alice')}"}  # the flights owner in approvers.yaml
    resp = httpx.post(f"{base}/api/proposals/{p.short_id}/decision", timeout=10, headers=alice,
                      json={"verdict": "approve", "reason": "the values match"})
    assert resp.status_code == 200, resp.text
    outcome = resp.json()
    assert outcome["decision"]["actor"] == "alice"
    assert outcome["decision"]["verdict"] == "approve"
    assert outcome["proposal"]["id"] == pid
    assert outcome["proposal"]["status"] == "approved" and outcome["progress"]["stage"] == "waiting_for_worker"
    time.sleep(0.5)  # were anything still running in the server after its answer, it would show now
    assert store.get_proposal(pid).status == ProposalStatus.approved and store.resume_requested() == [pid]
    assert work_once(store) == [pid]  # the worker's part

    seen: list[str] = []

    def verified() -> bool:
        body = httpx.get(f"{base}/api/proposals/{pid}", timeout=5, headers=alice).json()
        seen.append(body["proposal"]["status"])
        return body["proposal"]["status"] == "verified"

    wait_until(verified, VERIFY_TIMEOUT_S, f"proposal {p.short_id} to be verified (seen: {seen[-3:]})", proc)

    detail = httpx.get(f"{base}/api/proposals/{pid}", timeout=5, headers=alice).json()
    assert [(d["actor"], d["verdict"], d["via"]) for d in detail["decisions"]] == [("alice", "approve", "web")]
    # the same state is in the state DB this process reads
    assert store.get_proposal(pid).status == ProposalStatus.verified
    assert store.verify_audit().ok

    # a second decision on a verified proposal is refused, not applied again
    bob = {"Authorization": f"Bearer {store.issue_token('bob')}"}
    again = httpx.post(f"{base}/api/proposals/{pid}/decision", timeout=10, headers=bob, json={"verdict": "approve"})
    assert again.status_code == 409, again.text
    assert proc.poll() is None  # still serving


@pytest.mark.parametrize("command", [["serve"], ["demo"]])
def test_a_taken_port_is_a_clear_error_before_any_work(pw, pw_home: Path, command: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = pw(*command, "--port", str(port))
    assert res.code == 2
    assert f"127.0.0.1:{port}" in res.err and "--port" in res.err
    assert "Traceback" not in res.err
    assert not (pw_home / ".pipewarden-demo").exists()  # the demo stopped before doing anything


def test_the_demo_never_wipes_state_it_did_not_make(pw, pw_home: Path) -> None:
    pw_home.mkdir(parents=True, exist_ok=True)
    precious = pw_home / "state.db"
    precious.write_bytes(b"not the demo's")
    res = pw("demo", "--approve-all", "--no-serve")
    assert res.code == 2 and "did not create" in res.err and "--home" in res.err
    assert precious.read_bytes() == b"not the demo's"
