"""A recording Notifier port for the tests: `tests.fakes.runtimes.swap(monkeypatch, notifier=notify)` (or `fail`)."""

from __future__ import annotations

CALLS: list[tuple[str, str]] = []


def notify(kind: str, proposal_id: str) -> None:
    CALLS.append((kind, proposal_id))


def fail(kind: str, proposal_id: str) -> None:
    CALLS.append((kind, proposal_id))
    raise ConnectionError("slack.com unreachable")


def failing_hook(proposal_id: str) -> None:
    raise RuntimeError("policy engine unreachable")
