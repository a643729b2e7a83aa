"""The lease and retry policies, the heartbeat, and the fault hook, alone (no database)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from pipewarden import faults
from pipewarden.errors import ConfigError
from pipewarden.leases import Heartbeat, LeasePolicy, RetryPolicy, owner_is_gone, worker_name


def test_the_backoff_doubles_up_to_its_cap_and_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=4, backoff_s=30, max_backoff_s=100)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
    assert [policy.exhausted(n) for n in (1, 3, 4, 5)] == [False, False, True, True]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="heartbeat_s"):
        LeasePolicy(ttl_s=10, heartbeat_s=10)


def test_only_a_gone_process_on_this_machine_loses_its_lease_at_once() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    gone = worker_name(child.pid)
    assert gone.startswith(f"{host}:{child.pid}") and owner_is_gone(gone)
    assert not owner_is_gone(worker_name())  # this process
    assert not owner_is_gone(worker_name(1))  # alive (init), whoever owns it
    assert not owner_is_gone(gone.replace(host, "another-host"))  # elsewhere: only expiry frees it
    assert not owner_is_gone(f"{host}:{child.pid}@1")  # another PID namespace (a container): only expiry
    assert not owner_is_gone("eval:scenario-1")  # not host:pid
    assert owner_is_gone(None)


def test_the_heartbeat_renews_until_the_work_ends_and_notices_a_lost_lease() -> None:
    beats: list[int] = []
    lost = threading.Event()

    def renew() -> bool:
        beats.append(1)
        if len(beats) == 3:
            lost.set()
            return False  # taken over after it expired
        return True

    with Heartbeat(renew, LeasePolicy(ttl_s=1.0, heartbeat_s=0.001), what="test") as hb:
        assert lost.wait(timeout=30)
    assert hb.lost and hb.beats == 2 and len(beats) == 3  # it stopped renewing once it lost the lease

    calls: list[int] = []
    with Heartbeat(lambda: calls.append(1) or True, LeasePolicy(ttl_s=3600, heartbeat_s=1800)) as quiet:
        pass  # work shorter than one beat: no renewal, and leaving the block stops the thread
    assert calls == [] and not quiet.lost


def test_an_armed_point_fires_once_and_others_never(monkeypatch: pytest.MonkeyPatch) -> None:
    fired: list[str] = []
    faults.arm("applying", fired.append)
    try:
        faults.point("applied")
        faults.point("applying")
        faults.point("applying")
    finally:
        faults.disarm()
    assert fired == ["applying"]
    with pytest.raises(ConfigError, match="unknown fault step 'aplying'"):
        faults.arm("aplying")


def test_the_environment_arms_a_child_process_that_dies_with_137() -> None:
    code = "from pipewarden import faults; faults.point('claimed'); faults.point('applied'); print('survived')"
    env = {**os.environ, faults.ENV_VAR: "applied"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == faults.CRASH_EXIT_CODE and "survived" not in run.stdout
    assert "fault injected at 'applied'" in run.stderr
    env[faults.ENV_VAR] = "nowhere"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "PIPEWARDEN_FAULT: unknown fault step 'nowhere'" in bad.stderr
