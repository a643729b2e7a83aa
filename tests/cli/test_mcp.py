"""`pipewarden mcp`: the inbox and the read-only tools over MCP, spoken to with the official `mcp` client.

In process (the SDK's in-memory transport: the same server object, no subprocess) for the tools' behaviour; over
stdio (`python -m pipewarden mcp`, a child process) and over streamable HTTP (`/mcp` alone, and beside the web
inbox as `pipewarden serve` mounts it) for the transports and who the caller is. Refusals included: no token, a
revoked token, a token whose owner lacks the role, an unknown proposal, a file outside the project.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from pipewarden.knowledge.documents import Chunk
from pipewarden.knowledge.embedder import HashEmbedder
from pipewarden.knowledge.index import index_chunks
from pipewarden.knowledge.store import MemoryStore
from pipewarden.mcp_server import TOOL_NAMES, build_server, http_app
from pipewarden.models import ProposalStatus
from pipewarden.settings import get_settings
from pipewarden.store import StateStore
from tests.cli.conftest import subprocess_env
from tests.fakes.runtimes import swap
from tests.inbox import fake_resumer
from tests.inbox.conftest import GOOD_RESUMER, make_proposal


@pytest.fixture(autouse=True)
def fake_graph(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Approvals resume the fake graph (approved -> applying -> applied -> verified), not a real agent."""
    swap(monkeypatch, resumer=GOOD_RESUMER)
    fake_resumer.CALLS.clear()
    return fake_resumer.CALLS


@pytest.fixture
def store() -> StateStore:
    return StateStore()


def call(server: Any, tool: str, args: dict[str, Any] | None = None) -> tuple[bool, Any]:
    """One tool call through the official client, in process: (is_error, structured result or error text)."""

    async def go() -> tuple[bool, Any]:
        async with Client(server) as client:
            r = await client.call_tool(tool, args or {})
            return r.is_error, (r.content[0].text if r.is_error else r.structured_content)

    return anyio.run(go)


# --------------------------------------------------------------------------- in process: what each tool does
def test_the_tools_it_offers_and_their_arguments(store: StateStore) -> None:
    async def go() -> dict[str, Any]:
        async with Client(build_server(token=store.issue_token("alice"))) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    tools = anyio.run(go)
    assert tuple(tools) == TOOL_NAMES
    decide = tools["inbox_decide"]
    assert set(decide["properties"]) == {"proposal", "verdict", "reason"}  # no `actor`: the token says who
    assert decide["properties"]["verdict"]["enum"] == ["approve", "reject"]
    assert set(decide["required"]) == {"proposal", "verdict"}


def test_an_owner_lists_shows_and_approves_as_the_token_owner(store: StateStore, fake_graph: list[str]) -> None:
    p = make_proposal(store)
    server = build_server(token=store.issue_token("alice"))
    err, listed = call(server, "inbox_list")
    assert not err and listed["count"] == 1 and listed["proposals"][0]["id"] == str(p.id)
    err, shown = call(server, "inbox_show", {"proposal": p.short_id})
    assert not err and shown["proposal"]["id"] == str(p.id) and shown["you"] == "alice"
    assert shown["requirement"]["satisfied"] is False

    err, outcome = call(server, "inbox_decide", {"proposal": p.short_id, "verdict": "approve"})
    assert not err, outcome
    assert outcome["decision"]["actor"] == "alice" and outcome["decision"]["via"] == "mcp"
    assert outcome["proposal"]["status"] == "verified" and fake_graph == [str(p.id)]
    [decision] = store.decisions_for(p.id)
    assert (decision.actor, decision.via) == ("alice", "mcp")
    decided = [a for a in store.audit_entries(str(p.id)) if a.detail.get("via") == "mcp"]
    assert decided and decided[0].actor == "alice"  # audited as the token's owner
    assert store.verify_audit().ok


def test_a_token_without_the_approver_role_is_refused_and_nothing_changes(store: StateStore) -> None:
    p = make_proposal(store)
    server = build_server(token=store.issue_token("dave"))  # issuing a token is audited too: count after it
    before = len(store.audit_entries())
    err, text = call(server, "inbox_decide",
                     {"proposal": str(p.id), "verdict": "approve"})
    assert err and "forbidden:" in text and "dave" in text
    assert store.get_proposal(p.id).status == ProposalStatus.pending
    assert store.decisions_for(p.id) == [] and len(store.audit_entries()) == before


def test_no_token_an_unknown_token_and_a_revoked_one_are_refused(store: StateStore) -> None:
    make_proposal(store)
    err, text = call(build_server(token=None), "inbox_list")
    assert err and text.startswith("Error executing tool inbox_list: unauthenticated") and "PIPEWARDEN_TOKEN" in text
    err, text = call(build_server(token="pw_not-a-real-token"), "inbox_list")
    assert err and "unauthenticated: the token is unknown or has been revoked" in text

    token = store.issue_token("alice")

    async def revoked_mid_session() -> tuple[bool, bool]:
        async with Client(build_server(token=token)) as client:
            first = await client.call_tool("inbox_list", {})
            store.revoke_tokens("alice")
            second = await client.call_tool("inbox_list", {})
            return first.is_error, second.is_error

    assert anyio.run(revoked_mid_session) == (False, True)  # revocation takes effect at once


def test_an_unknown_proposal_and_a_misspelt_status_name_the_value(store: StateStore) -> None:
    server = build_server(token=store.issue_token("alice"))
    err, text = call(server, "inbox_show", {"proposal": "feedbeef"})
    assert err and "not found: no proposal 'feedbeef' that you may read" in text
    err, text = call(server, "inbox_decide", {"proposal": "feedbeef", "verdict": "reject", "reason": "no"})
    assert err and "not found" in text
    err, text = call(server, "inbox_list", {"status": ["pendng"]})
    assert err and "unknown proposal status 'pendng'" in text and "did you mean 'pending'" in text


def test_a_caller_sees_only_proposals_on_datasets_where_they_hold_a_role_other_than_reporter(
    store: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipewarden.settings import get_settings

    people = tmp_path / "approvers.yaml"
    people.write_text(
        "approvers:\n"
        "  - {name: alice, roles: [owner], datasets: [flights]}\n"
        "  - {name: frank, roles: [owner], datasets: [planes]}\n"
        "  - {name: rita, roles: [reporter], datasets: [flights]}\n", encoding="utf-8")
    monkeypatch.setenv("PIPEWARDEN_APPROVERS_FILE", str(people))
    get_settings.cache_clear()
    p = make_proposal(store)  # on flights
    alice = build_server(token=store.issue_token("alice"))
    assert call(alice, "inbox_list")[1]["count"] == 1
    for name in ("frank", "rita"):  # another dataset's owner; a reporter on flights
        server = build_server(token=store.issue_token(name))
        assert call(server, "inbox_list") == (False, {"count": 0, "proposals": []})
        assert call(server, "inbox_list", {"dataset": "flights", "status": ["all"]}) == (
            False, {"count": 0, "proposals": []})
        err, text = call(server, "inbox_show", {"proposal": str(p.id)})
        err_missing, text_missing = call(server, "inbox_show", {"proposal": "0" * 36})
        assert err and err_missing
        assert text.replace(str(p.id), "ID") == text_missing.replace("0" * 36, "ID")  # same answer as no such id
        assert "not found: no proposal" in text and p.title not in text


def test_check_reads_project_files_only(store: StateStore, pw_project: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    monkeypatch.setenv("PIPEWARDEN_CHECK_ENGINE", "pandas")  # the same checks as GX, without its start-up cost
    get_settings.cache_clear()
    from pipewarden.evals.flights_data import source_dir

    pd.read_csv(source_dir() / "flights.csv.zip", nrows=50).to_csv(pw_project / "jan.csv", index=False)
    server = build_server(token=store.issue_token("dave"))  # reading needs no approval rights
    err, report = call(server, "check", {"file": "jan.csv", "dataset": "flights"})
    assert not err, report
    assert report["passed"] is True and report["rows"] == 50
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("a\n1\n")
    for path in (str(outside), "../elsewhere.csv", "/etc/passwd"):
        err, text = call(server, "check", {"file": path, "dataset": "flights"})
        assert err and "forbidden:" in text and "outside the project folder" in text


def test_quality_scan_flags_cells_of_a_project_file_and_refuses_files_outside(store: StateStore, pw_project: Path,
                                                                              tmp_path: Path) -> None:
    rows = ["zip,city"] + ["10001,New York"] * 30 + ["94105,San Francisco"] * 30 + ["10001,Boston", "N/A,Chicago"]
    (pw_project / "places.csv").write_text("\n".join(rows) + "\n")
    server = build_server(token=store.issue_token("dave"))  # reading needs no approval rights
    err, report = call(server, "quality_scan", {"file": "places.csv"})
    assert not err, report
    flagged = {(f["row"], f["column"], f["kind"]) for f in report["flags"]}
    assert (61, "zip", "missing") in flagged  # "N/A" in disguise, at its 0-based row in the file
    assert (60, "city", "dependency") in flagged or (60, "zip", "dependency") in flagged  # 10001 -> Boston
    assert report["rows"] == 62
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("a\n1\n")
    err, text = call(server, "quality_scan", {"file": str(outside)})
    assert err and "forbidden:" in text and "outside the project folder" in text


def test_schema_match_lineage_and_audit(store: StateStore, pw_project: Path) -> None:
    (pw_project / "old.csv").write_text("dep_delay,carrier\n1,UA\n-3,AA\n7,DL\n")
    (pw_project / "new.csv").write_text("departure_delay,carrier\n2,UA\n-1,AA\n9,DL\n")
    server = build_server(token=store.issue_token("bob"))
    err, report = call(server, "schema_match", {"reference": "old.csv", "new": "new.csv"})
    assert not err, report
    assert {m["column"]: m["match"] for m in report["matches"]} == {"departure_delay": "dep_delay",
                                                                     "carrier": "carrier"}
    for sql in (pw_project / "models").glob("*.sql"):  # two small models instead of the example's five: faster
        sql.unlink()
    (pw_project / "models" / "stg_flights.sql").write_text("SELECT carrier, dep_delay FROM raw_flights\n")
    (pw_project / "models" / "carrier_daily.sql").write_text(
        "SELECT carrier, AVG(dep_delay) AS avg_dep_delay FROM stg_flights GROUP BY carrier\n")
    err, lineage = call(server, "column_lineage", {"table": "raw_flights", "column": "dep_delay"})
    assert not err and lineage["models_reading"] == ["stg_flights", "carrier_daily"]
    assert lineage["downstream"] == [{"model": "carrier_daily", "column": "avg_dep_delay"},
                                     {"model": "stg_flights", "column": "dep_delay"}]
    err, text = call(server, "column_lineage", {"table": "raw_flights", "column": "dep_dealy"})
    assert err and "unknown column of raw_flights 'dep_dealy'" in text and "did you mean 'dep_delay'" in text
    make_proposal(store)
    err, audit = call(server, "audit_verify")
    assert not err and audit["ok"] is True and audit["entries"] == len(store.audit_entries())


def test_knowledge_search_returns_only_what_the_callers_roles_may_read(store: StateStore) -> None:
    emb, vectors = HashEmbedder(), MemoryStore()
    index_chunks([
        Chunk.make(text="flights delay runbook for owners", source="rb/flights.md", kind="runbook", key=0,
                   dataset="flights", allowed_roles=["owner"]),
        Chunk.make(text="planes delay runbook for owners", source="rb/planes.md", kind="runbook", key=0,
                   dataset="planes", allowed_roles=["owner"]),
        Chunk.make(text="delay runbook for stewards only", source="rb/steward.md", kind="runbook", key=0,
                   allowed_roles=["steward"]),
    ], emb, vectors)

    def sources(name: str) -> set[str]:
        server = build_server(token=store.issue_token(name), embedder=emb, vectors=vectors)
        err, found = call(server, "knowledge_search", {"query": "delay runbook", "limit": 10})
        assert not err, found
        return {c["source"] for c in found["citations"]}

    assert sources("alice") == {"rb/flights.md"}  # owner of flights: not planes, not the stewards' page
    assert sources("frank") == {"rb/planes.md"}
    assert sources("bob") == {"rb/steward.md"}
    assert sources("dave") == set()


# --------------------------------------------------------------------------- over stdio, as an IDE starts it
def _stdio(home: Path, token: str | None) -> StdioServerParameters:
    env = subprocess_env(home, PIPEWARDEN_RUNTIME="tests.fakes.runtimes:fake_resumer")
    env.pop("PIPEWARDEN_TOKEN", None)
    if token is not None:
        env["PIPEWARDEN_TOKEN"] = token
    return StdioServerParameters(command=sys.executable, args=["-m", "pipewarden", "mcp"], env=env)


def test_stdio_decides_as_the_owner_of_PIPEWARDEN_TOKEN(store: StateStore, pw_home: Path) -> None:
    """One child process (the start-up is the cost): a refusal, then a decision, as the token's owner."""
    p = make_proposal(store)
    alice = store.issue_token("alice")

    async def go() -> list[tuple[bool, str]]:
        async with Client(_stdio(pw_home, alice), read_timeout_seconds=60) as client:
            calls = [("inbox_decide", {"proposal": "feedbeef", "verdict": "approve"}),
                     ("whoami", {}),
                     ("inbox_decide", {"proposal": str(p.id), "verdict": "reject", "reason": "wrong"})]
            results = [await client.call_tool(tool, args) for tool, args in calls]
            return [(r.is_error, r.content[0].text) for r in results]

    (unknown_err, unknown), (_, whoami), (alice_err, alice_text) = anyio.run(go)
    assert unknown_err and "not found: unknown proposal 'feedbeef'" in unknown
    assert json.loads(whoami)["name"] == "alice"
    assert not alice_err and json.loads(alice_text)["decision"]["actor"] == "alice"
    assert store.get_proposal(p.id).status == ProposalStatus.rejected
    [d] = store.decisions_for(p.id)
    assert (d.actor, d.via, d.reason) == ("alice", "mcp", "wrong")


def test_stdio_reads_the_token_from_PIPEWARDEN_TOKEN(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `pipewarden mcp` does on stdio, without the process: the server it runs carries the variable's token
    (an absent one is refused on every call, tested in process above)."""
    import pipewarden.mcp_server as mod

    seen: list[str | None] = []

    class Stub:
        def run(self, transport: str) -> None:
            assert transport == "stdio"

    def fake_build(*, token: str | None = None, **_: Any) -> Stub:
        seen.append(token)
        return Stub()

    monkeypatch.setattr(mod, "build_server", fake_build)
    monkeypatch.setenv("PIPEWARDEN_TOKEN", "  pw_abc  ")
    mod.run_stdio()
    monkeypatch.delenv("PIPEWARDEN_TOKEN")
    mod.run_stdio()
    assert seen == ["pw_abc", None]


# --------------------------------------------------------------------------- over streamable HTTP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def http_call(url: str, token: str | None, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
    async def go() -> tuple[bool, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with create_mcp_http_client(headers=headers) as http, \
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            r = await client.call_tool(tool, args)
            return r.is_error, (r.content[0].text if r.is_error else r.structured_content)

    return anyio.run(go)


def test_http_needs_a_bearer_token_and_decides_as_its_owner(store: StateStore) -> None:
    p = make_proposal(store)
    alice, dave = store.issue_token("alice"), store.issue_token("dave")
    with served(http_app(build_server())) as url:
        for headers in ({}, {"Authorization": "Bearer pw_unknown"}):
            r = httpx.post(f"{url}/mcp", headers={**headers, "Accept": "application/json, text/event-stream"},
                           json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert r.status_code == 401, r.text
            assert r.json()["hint"] and r.headers["www-authenticate"].startswith("Bearer")
        refused = [a.detail["reason"] for a in store.audit_entries() if a.action == "sign_in_failed"]
        assert refused == ["unknown token"]  # audited as the inbox's API audits a wrong token
        err, text = http_call(url, dave, "inbox_decide", {"proposal": p.short_id, "verdict": "approve"})
        assert err and "forbidden" in text
        err, outcome = http_call(url, alice, "inbox_decide", {"proposal": p.short_id, "verdict": "approve"})
        assert not err, outcome
        assert outcome["decision"]["actor"] == "alice" and outcome["decision"]["via"] == "mcp"
        store.revoke_tokens("alice")
        r = httpx.post(f"{url}/mcp", headers={"Authorization": f"Bearer {alice}"}, json={})
        assert r.status_code == 401  # refused at the door once revoked
    assert store.get_proposal(p.id).status == ProposalStatus.verified


def test_serve_mounts_mcp_beside_the_web_inbox(store: StateStore) -> None:
    from pipewarden.inbox.web import create_app
    from pipewarden.mcp_server import mount

    make_proposal(store)
    app = create_app()
    mount(app)
    with served(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200  # the inbox still answers its own paths
        missing = httpx.get(f"{url}/no-such-page")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}  # the inbox's own 404
        err, listed = http_call(url, store.issue_token("bob"), "inbox_list", {})
        assert not err and listed["count"] == 1
        assert httpx.post(f"{url}/mcp", json={}).status_code == 401
