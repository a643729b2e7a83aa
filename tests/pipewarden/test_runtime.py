"""The runtime: one object holding the ports' implementations, wired in `pipewarden.wiring`, swapped by tests."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipewarden import ports, runtime, wiring
from pipewarden.errors import ConfigError
from pipewarden.runtime import Runtime
from tests.fakes.runtimes import swap
from tests.inbox import fake_notifier, fake_resumer

REPO_ROOT = Path(__file__).resolve().parents[2]
PORTS = ("pipeline_runner", "resumer", "supervisor", "dry_runner", "admission", "proposal_hook", "notifier")
RESOURCES = ("store", "warehouse", "embedder", "knowledge", "planner", "agents")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != runtime.ENV}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), full.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)


def test_every_port_has_a_field_and_a_loader_that_reads_the_runtime() -> None:
    assert tuple(f.name for f in dataclasses.fields(Runtime)) == PORTS + RESOURCES
    real = wiring.default_runtime()
    with runtime.use(real):
        assert all(getattr(ports, name)() is getattr(real, name) for name in PORTS)


def test_each_runtime_keeps_its_own_embedder_loaded_once() -> None:
    one, other = wiring.default_runtime(), wiring.default_runtime()
    assert one.embedder() is one.embedder()  # built on the first call, then kept by this runtime
    assert other.embedder() is not one.embedder()  # not a module-level cache: another runtime has its own


def test_cite_passes_the_runtimes_own_embedder_to_the_knowledge_index() -> None:
    seen: list[object] = []
    marker = object()

    def knowledge(query: str, **kw: object) -> list[object]:
        seen.append((query, kw["role"], kw["embedder"]))
        return []

    rt = wiring.default_runtime().replace(knowledge=knowledge, embedder=lambda: marker)
    assert rt.cite("late batches", role="analyst") == []
    assert seen == [("late batches", "analyst", marker)]


def test_the_agent_names_are_the_registrys_in_routing_order() -> None:
    from pipewarden.agents.registry import AGENTS

    assert wiring.default_runtime().agents() == tuple(s.name for s in AGENTS)
    assert wiring.default_runtime().agents()[-1] == "triage"


def test_use_installs_a_runtime_for_its_block_and_restores_the_previous_one() -> None:
    before = runtime.current()
    fake = before.replace(resumer=fake_resumer.resume)
    with runtime.use(fake) as installed:
        assert installed is fake and ports.resumer() is fake_resumer.resume
        with runtime.use(fake.replace(notifier=fake_notifier.notify)):
            assert ports.notifier() is fake_notifier.notify and ports.resumer() is fake_resumer.resume
        assert ports.notifier() is before.notifier
    assert runtime.current() is before and ports.resumer() is before.resumer


def test_replace_keeps_the_original_and_refuses_an_unknown_port() -> None:
    real = wiring.default_runtime()
    fake = real.replace(resumer=fake_resumer.resume)
    assert real.resumer is wiring.resume_proposal and fake.resumer is fake_resumer.resume
    assert fake.pipeline_runner is real.pipeline_runner
    with pytest.raises(TypeError):
        real.replace(resumr=fake_resumer.resume)
    with pytest.raises(dataclasses.FrozenInstanceError):
        real.resumer = fake_resumer.resume  # type: ignore[misc]


def test_swap_lasts_until_the_test_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    swap(monkeypatch, notifier=fake_notifier.notify)
    assert ports.notifier() is fake_notifier.notify


def test_the_swap_of_the_previous_test_is_gone() -> None:
    assert ports.notifier() is wiring.notify


def test_the_default_notifier_tells_nobody_while_slack_has_no_bot_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.inbox import slack

    def slack_called(kind: str, proposal_id: str) -> None:
        raise AssertionError("Slack was called without a bot token")

    monkeypatch.setattr(slack, "notify", slack_called)
    monkeypatch.delenv("PIPEWARDEN_SLACK_BOT_TOKEN", raising=False)
    from pipewarden.settings import get_settings

    get_settings.cache_clear()
    ports.notifier()("proposal_created", "0" * 32)  # no token: nothing happens
    monkeypatch.setenv("PIPEWARDEN_SLACK_BOT_TOKEN", "xoxb-test")
    get_settings.cache_clear()
    with pytest.raises(AssertionError, match="without a bot token"):
        ports.notifier()("proposal_created", "0" * 32)
    get_settings.cache_clear()


@pytest.mark.parametrize(("spec", "why"), [
    ("tests.fakes.runtimes", "is not 'module:callable'"),
    ("tests.fakes.no_such_module:factory", "cannot load PIPEWARDEN_RUNTIME"),
    ("tests.fakes.runtimes:no_such_factory", "cannot load PIPEWARDEN_RUNTIME"),
    ("tests.fakes.runtimes:swap", "raised TypeError"),  # a callable that needs arguments
    ("pipewarden.wiring:notify", "raised TypeError"),
    ("pipewarden.runtime:ENV", "gave a str, not a Runtime"),
])
def test_a_runtime_spec_that_gives_no_runtime_is_a_config_error_naming_the_variable(spec: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        runtime.load(spec)
    assert "PIPEWARDEN_RUNTIME" in str(err.value) and "PIPEWARDEN_RUNTIME" in (err.value.hint or "")


def test_a_factory_named_by_the_variable_is_the_runtime_of_a_whole_process() -> None:
    done = _python("from pipewarden import ports; print(ports.resumer().__module__, ports.resumer().__name__)",
                   PIPEWARDEN_RUNTIME="tests.fakes.runtimes:fake_resumer")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tests.inbox.fake_resumer", "resume"]


def test_building_the_default_runtime_imports_none_of_the_layers_it_wires() -> None:
    done = _python("import sys; from pipewarden import ports; ports.resumer(); ports.notifier(); "
                   "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['pipewarden', 'agents'], "
                   "['pipewarden', 'flows'], ['pipewarden', 'inbox'], ['pipewarden', 'tools'])))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_process_that_still_sets_a_retired_port_variable_is_refused() -> None:
    done = _python("from pipewarden import ports; ports.resumer()", PIPEWARDEN_RESUMER="tests.inbox.fake_resumer:resume")
    assert done.returncode != 0
    assert "PIPEWARDEN_RESUMER is no longer read" in done.stderr and "PIPEWARDEN_RUNTIME" in done.stderr

