"""The web inbox in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): a person signs in
with a personal token, opens a pending schema-drift proposal, approves it, and sees it applied and verified.

The server is the real `pipewarden serve` in a child process on a free port. Its Resumer port is
`apply_and_verify` below: the kernel's real apply tool (`tools.apply.apply_change`: refuses without a stored
approving decision, activates a new mapping version), then `mark_verified`, which is what the schema-drift
agent's graph does after its re-run passes. The re-run of the pipeline itself is left out: it needs the whole
pipeline (Prefect, GX, MLflow) and is covered by tests/e2e/test_demo.py.

Never skipped: without Chromium the test fails and says how to install it (`.ci/run` does).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from pipewarden.models import Proposal, ProposalStatus
from pipewarden.store import StateStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME = "tests.fakes.runtimes:browser_resumer"  # the server's Resumer is `apply_and_verify` below
STARTUP_TIMEOUT_S = 30.0
UI_TIMEOUT_MS = 20_000


def apply_and_verify(proposal_id: UUID | str) -> Proposal:
    """The server's Resumer in this test: the real apply tool, then verified (see the module docstring)."""
    from pipewarden.tools.apply import apply_change, mark_verified

    apply_change(proposal_id)
    return mark_verified(proposal_id, {"rerun": "not part of the browser test"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(pw_home: Path) -> Iterator[str]:
    """`pipewarden serve` over the test's home; yields its base URL; always stopped."""
    port = free_port()
    env = {**os.environ, "PIPEWARDEN_HOME": str(pw_home), "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false",
           "PIPEWARDEN_RUNTIME": RUNTIME,
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "pipewarden", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate(timeout=5)
                pytest.fail(f"pipewarden serve exited ({proc.returncode}):\n{out}\n{err}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pipewarden serve did not answer /healthz within {STARTUP_TIMEOUT_S}s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def chromium() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium. Run .ci/run (it installs "
                    "it), or `apt-get update && apt-get install -y chromium`. Never `playwright install`.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
def test_sign_in_open_approve_and_see_it_applied(
    pw_home: Path, tmp_path: Path, chromium, server: str  # type: ignore[no-untyped-def]
) -> None:
    from playwright.sync_api import expect

    from tests.pipewarden.factories import pending_proposal

    store = StateStore()
    p = pending_proposal(store)  # flights: map departureDelay -> dep_delay, cast flight to integer
    token = store.issue_token("alice")  # the flights owner in examples/flights/approvers.yaml
    assert store.active_version("mapping:flights") is None

    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)

    # an unsigned visit to the proposal goes to the sign-in page and comes back after it
    page.goto(f"{server}/proposals/{p.id}")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=token]", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#signed-in-as")).to_have_text("alice")
    expect(page.locator("h1")).to_have_text(p.title)
    expect(page.locator("#status")).to_have_text("pending")
    expect(page.locator("#needs")).to_have_text("needs 1 more approval from: owner or steward")
    expect(page.locator("#change table.mapping")).to_contain_text("departureDelay")
    # the decision comes first: the bar and its Approve button are on the first screen, above the change
    approve_box = page.locator("#approve").bounding_box()
    assert approve_box is not None and approve_box["y"] + approve_box["height"] <= 900
    assert approve_box["y"] < page.locator("#change").bounding_box()["y"]
    expect(page.locator("#you-can")).to_have_text("You (alice) can approve.")
    expect(page.locator("#citations details")).not_to_have_attribute("open", "")  # citations folded
    page.screenshot(path=str(tmp_path / "proposal.png"), full_page=True)

    page.fill("#approve-form input[name=reason]", "the values match dep_delay")
    page.click("#approve")
    # the page shows "applying..." and refreshes itself until the change is applied and verified
    expect(page.locator("#status")).to_have_text("verified", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#history")).to_contain_text("alice")
    expect(page.locator("#change")).to_contain_text("This change is the active mapping v1 of flights.")
    expect(page.locator("[role=status]")).to_have_text("Approved, and the agent has finished applying the change.")
    # decided: the bar shows the outcome instead of the buttons and of who must approve
    expect(page.locator("#outcome")).to_contain_text("Approved by alice")
    expect(page.locator("#approve")).to_have_count(0)
    expect(page.locator("#needs")).to_have_count(0)
    expect(page.locator("#rerun")).to_contain_text("Verified by the re-run")
    page.screenshot(path=str(tmp_path / "verified.png"), full_page=True)

    # the queue (with its counts) shows it decided
    page.goto(f"{server}/?status=all")
    expect(page.locator("#facet-status")).to_contain_text("verified")
    page.screenshot(path=str(tmp_path / "queue.png"), full_page=True)

    decided = store.get_proposal(p.id)
    assert decided.status == ProposalStatus.verified
    assert [(d.actor, d.verdict.value, d.via, d.reason) for d in store.decisions_for(p.id)] == [
        ("alice", "approve", "web", "the values match dep_delay")]
    version = store.active_version("mapping:flights")
    assert version is not None and version.number == 1 and version.proposal_id == p.id
    assert version.content["renames"] == {"departureDelay": "dep_delay"}
    assert store.verify_audit().ok
    print(f"screenshots: {tmp_path}")
