#!/usr/bin/env python
"""Where people wait on the inbox: web API decisions under load, and Slack click to acknowledgement.

A script, not a test: it prints rates and percentiles and never asserts on time.

(1) `POST /api/proposals/{id}/decision` with `--clients` (50) concurrent clients. Real parts: `pipewarden serve`
    (uvicorn) in a child process on 127.0.0.1, the state DB (SQLite in a fresh home, then a fresh PostgreSQL
    database that is dropped after), bearer-token authentication, the approval rules and the decision service's
    transaction (decision, status change, hash-chained audit entry). Each decision is on a distinct pending
    proposal seeded beforehand; each client (its own keep-alive connection, `Connection`: a minimal HTTP/1.1
    client, since httpx cost more CPU per request than the server) approves its share one after another, all clients at once, after a warm-up of 20 decisions in turn. Latency is measured at the
    client, from sending to the full answer. The server runs without its supervisor worker (`--no-worker`, where
    the command has it) and with a no-op Resumer port, so the figure is the request path, not the agent applying.
    Reported: decisions/s over the wall time, p50/p95/p99/max ms, the status codes, how many proposals the state
    DB then holds as approved, whether the audit chain verifies, and the CPU ms per decision of the server and of
    this process (the clients).
(2) Slack: time from sending a signed Approve click (an owner's, on its own proposal) to its HTTP answer (the
    ack), through the real slack-bolt handler of `pipewarden serve` (a child process) and the fake Slack Web API
    (`tests/fakes/slack_api.py`, served from this process, reached by the real `slack_sdk` client). `--slack-clicks`
    (300) clicks one at a time, then as many with 8 clients at once (each its own `Connection`). The work after the ack (deciding, and in the
    code before the hand-off, applying through the fake Resumer; then `chat.update`) runs meanwhile in the server.
    Reported: p50/p95/p99/max ms, clicks/s, and where the proposals ended.

Run from the repo root:
    .venv/bin/python benchmarks/decisions_bench.py                       # both, SQLite and PostgreSQL
    .venv/bin/python benchmarks/decisions_bench.py --only decisions --db sqlite --json /tmp/d.json
`benchmarks/bench.py` runs the same functions (`bench_decisions_both`, `bench_slack_ack`).

Public names: `bench_decisions(url, say, clients, per_client)`, `bench_decisions_both(say)`,
`bench_slack_ack(say, clicks)`, `postgres_database()`, `percentile`, `noop_resumer`, `Connection`, `main(argv)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "examples" / "flights"  # its approvers.yaml: alice owns flights (Slack U0FLIGHTS)
OWNER, OWNER_SLACK = "alice", "U0FLIGHTS"
DECISION_CLIENTS = 50
DECISIONS_PER_CLIENT = 20
DECISION_WARMUP = 20
SLACK_CLICKS = 300
SLACK_WARMUP = 20
SLACK_CONCURRENCY = (1, 8)
BENCH_POSTGRES_URL = os.environ.get("PIPEWARDEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams, for the timed requests.

    httpx's AsyncClient cost this process about 3.5 ms of CPU per request on the 2-core machine of issue 10 (the
    server: 1 ms for a trivial route), so fifty of them measured the client more than the server. This sends the
    same bytes a client would (request line, Host, the given headers, Content-Length, the body) and reads the
    status, the headers and a Content-Length body, for a fraction of that. Chunked answers are refused (the
    inbox's JSON answers carry a Content-Length)."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        from urllib.parse import urlsplit

        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.headers = dict(headers or {})
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """POST `body` to `path`; (status, body) of the answer."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 *(f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()), f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status, length, close = int(status_line.split()[1]), 0, False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                raise RuntimeError("a chunked answer: this client reads Content-Length bodies only")
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await reader.readexactly(length) if length else b""
        if close:
            await self.aclose()
        return status, data

    async def aclose(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def noop_resumer(proposal_id: Any) -> Any:
    """The Resumer port of the benchmark's server: applying is not what is measured."""
    from pipewarden.store import StateStore

    return StateStore().get_proposal(proposal_id)


def noop_runtime() -> Any:
    """The benchmark server's runtime (`PIPEWARDEN_RUNTIME=decisions_bench:noop_runtime`): the real wiring with
    the no-op Resumer."""
    from pipewarden.wiring import default_runtime

    return default_runtime().replace(resumer=noop_resumer)


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh database on the local PostgreSQL for one benchmark (dropped after), or None when unreachable."""
    import uuid

    import sqlalchemy as sa

    try:
        admin = sa.create_engine(BENCH_POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            name = f"pw_bench_{uuid.uuid4().hex[:10]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception:  # no server: reported as skipped, with why
        yield None
        return
    try:
        yield BENCH_POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from pipewarden.db import make_engine

        make_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _seed(store: Any, n: int, tag: str) -> list[str]:
    """`n` pending schema-drift proposals on flights, each on its own event; their ids."""
    from pipewarden.events import ColumnSpec, SchemaDrift
    from pipewarden.models import CheckResult, ColumnMapping, DryRun, Proposal

    ids: list[str] = []
    for i in range(n):
        ev = SchemaDrift(dataset="flights", load_id=f"{tag}-{i}", batch_path=f"/bench/{tag}-{i}.parquet",
                         contract_version="flights@v1", added=[ColumnSpec(name=f"c{i}", type="integer")],
                         dropped=[ColumnSpec(name="dep_delay", type="integer")])
        store.append_event(ev)
        p = store.create_proposal(Proposal(
            event_id=ev.id, agent="schema_drift", dataset="flights", title=f"bench proposal {i}", diagnosis="d",
            change=ColumnMapping(dataset="flights", renames={f"c{i}": "dep_delay"}), thread_id=f"{tag}-t{i}",
            dry_run=DryRun(before=CheckResult(passed=False, rows=10), after=CheckResult(passed=True, rows=10))))
        ids.append(str(p.id))
    return ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_flags() -> list[str]:
    """`--no-worker` when this version of `pipewarden serve` starts a worker by default (the code after the
    hand-off); the code before it has no worker and no flag."""
    res = subprocess.run([sys.executable, "-m", "pipewarden", "serve", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    return ["--no-worker"] if "--no-worker" in res.stdout else []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its live children (uvicorn's workers) have used (Linux /proc); nan
    elsewhere."""
    def stat(p: int | str) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    try:
        fields = stat(pid)
    except OSError:
        return float("nan")
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = stat(entry.name)
            except OSError:
                continue
            if child[1] == str(pid):
                total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


class Served(str):
    """The base URL of a served inbox, with the server's pid (for its CPU time)."""

    pid: int


@contextmanager
def serving(env: dict[str, str], home: Path, workers: int = 1) -> Iterator[Served]:
    """`pipewarden serve` in a child process on a free loopback port until the block ends; its base URL. With
    `workers` > 1, uvicorn's own command serves the same app (`inbox.web:create_app`) from that many processes."""
    import httpx

    port = _free_port()
    log = (home / "serve.log").open("wb")
    command = ([sys.executable, "-m", "pipewarden", "serve", "--port", str(port), *_serve_flags()] if workers <= 1
               else [sys.executable, "-m", "uvicorn", "--factory", "pipewarden.inbox.web:create_app", "--host",
                     "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning"])
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    base = Served(f"http://127.0.0.1:{port}")
    base.pid = proc.pid
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pipewarden serve did not start: {(home / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _child_env(home: Path, url: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PIPEWARDEN_HOME": str(home), "PIPEWARDEN_PROJECT": str(PROJECT),
           "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false", "PIPEWARDEN_RUNTIME": "decisions_bench:noop_runtime",
           "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in ("PIPEWARDEN_SLACK_BOT_TOKEN", "PIPEWARDEN_SLACK_SIGNING_SECRET", "PIPEWARDEN_DATABASE_URL",
                "PIPEWARDEN_APPROVERS_FILE"):
        env.pop(key, None)
    if url:
        env["PIPEWARDEN_DATABASE_URL"] = url
    env.update(extra or {})
    return env


def bench_decisions(url: str | None = None, say: Any = print, clients: int = DECISION_CLIENTS,
                    per_client: int = DECISIONS_PER_CLIENT, workers: int = 1) -> dict[str, Any]:
    """Decisions/s and latency of `POST /api/proposals/{id}/decision` with `clients` concurrent clients, against
    the state DB at `url` (None: SQLite in a fresh home). See the module docstring."""
    import httpx

    from pipewarden.settings import settings_env

    home = Path(tempfile.mkdtemp(prefix="pw-decisions-bench-"))
    env = _child_env(home, url)
    try:
        with settings_env({"PIPEWARDEN_HOME": str(home), "PIPEWARDEN_DATABASE_URL": url or None,
                           "PIPEWARDEN_PROJECT": str(PROJECT)}):
            from pipewarden.store import StateStore

            store = StateStore()
            total = DECISION_WARMUP + clients * per_client
            say(f"  {total} pending proposals on {store.engine.dialect.name} ...")
            ids = _seed(store, total, "dec")
            token = store.issue_token(OWNER)
            headers = {"Authorization": f"Bearer {token}"}

            with serving(env, home, workers) as base:
                async def run() -> tuple[list[float], list[int], float]:
                    latencies: list[float] = []
                    codes: list[int] = []
                    body = json.dumps({"verdict": "approve"}).encode()

                    async def client(mine: list[str]) -> None:
                        conn = Connection(base, {**headers, "Content-Type": "application/json"})
                        try:
                            for pid in mine:
                                t0 = time.perf_counter()
                                status, _ = await conn.post(f"/api/proposals/{pid}/decision", body)
                                latencies.append(time.perf_counter() - t0)
                                codes.append(status)
                        finally:
                            await conn.aclose()

                    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
                        for pid in ids[:DECISION_WARMUP]:
                            r = await http.post(f"/api/proposals/{pid}/decision", json={"verdict": "approve"})
                            if r.status_code != 200:
                                raise RuntimeError(f"warm-up decision answered {r.status_code}: {r.text[:300]}")
                    work = ids[DECISION_WARMUP:]
                    t0 = time.perf_counter()
                    await asyncio.gather(*(client(work[c::clients]) for c in range(clients)))
                    return latencies, codes, time.perf_counter() - t0

                cpu0, mine0 = cpu_seconds(base.pid), time.process_time()
                latencies, codes, wall = asyncio.run(run())
                server_cpu = cpu_seconds(base.pid) - cpu0  # the warm-up decisions are inside this window too
                client_cpu = time.process_time() - mine0
            ms = [x * 1000 for x in latencies]
            approved = sum(1 for pid in ids if store.approved_decision(pid) is not None)
            out = {
                "db": store.engine.dialect.name, "clients": clients, "server_processes": workers, "decisions": len(latencies),
                "decisions_per_s": round(len(latencies) / wall, 1), "wall_s": round(wall, 2),
                "p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
                "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1),
                "status_codes": dict(Counter(codes)), "approved_in_db": approved, "seeded": total,
                "audit_ok": store.verify_audit().ok,
                "server_cpu_ms_per_decision": round(1000 * server_cpu / (len(latencies) + DECISION_WARMUP), 2),
                "client_cpu_ms_per_decision": round(1000 * client_cpu / (len(latencies) + DECISION_WARMUP), 2),
                "load_average": os.getloadavg()[0],
            }
            store.engine.dispose()
        say(f"  {out['db']}: {out['decisions_per_s']} decisions/s, p50 {out['p50_ms']} ms, p95 {out['p95_ms']} ms, "
            f"p99 {out['p99_ms']} ms ({out['status_codes']}, {approved} of {total} approved, "
            f"audit verifies: {out['audit_ok']}); server CPU {out['server_cpu_ms_per_decision']} ms per decision "
            f"(the benchmark's own: {out['client_cpu_ms_per_decision']} ms), load average {out['load_average']:.1f}")
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def bench_decisions_both(say: Any = print, dbs: tuple[str, ...] = ("sqlite", "postgresql"),
                         clients: int = DECISION_CLIENTS, per_client: int = DECISIONS_PER_CLIENT,
                         workers: int = 1) -> dict[str, Any]:
    """`bench_decisions` on SQLite, then on a fresh PostgreSQL database (skipped, with why, when unreachable)."""
    out: dict[str, Any] = {}
    if "sqlite" in dbs:
        out["sqlite"] = bench_decisions(None, say, clients, per_client, workers)
    if "postgresql" in dbs:
        with postgres_database() as pg_url:
            out["postgresql"] = (bench_decisions(pg_url, say, clients, per_client, workers) if pg_url
                                 else {"skipped": f"no PostgreSQL at {BENCH_POSTGRES_URL}"})
    return out


def bench_slack_ack(say: Any = print, clicks: int = SLACK_CLICKS, workers: int = 1) -> dict[str, Any]:
    """p50/p95/p99 ms from sending a signed Approve click to its HTTP answer. See the module docstring."""
    from pipewarden.settings import settings_env
    from tests.fakes.slack_api import FakeSlack, block_actions_payload, form_body, signed_headers

    secret, bot_token = "bench-signing-secret", "xoxb-bench"
    home = Path(tempfile.mkdtemp(prefix="pw-slack-bench-"))
    fake = FakeSlack(token=bot_token).start()
    slack_env = {"PIPEWARDEN_SLACK_BOT_TOKEN": bot_token, "PIPEWARDEN_SLACK_SIGNING_SECRET": secret,
                 "PIPEWARDEN_SLACK_API_URL": fake.url}
    # Where the server still applies in its own process (the code before the hand-off), it applies through the
    # fake Resumer of the inbox tests (approved -> applying -> applied -> verified), as the issue measured it.
    env = _child_env(home, None, {**slack_env, "PIPEWARDEN_RUNTIME": "tests.fakes.runtimes:fake_resumer"})
    from pipewarden import runtime

    try:
        with settings_env({"PIPEWARDEN_HOME": str(home), "PIPEWARDEN_DATABASE_URL": None,
                           "PIPEWARDEN_PROJECT": str(PROJECT), **slack_env}), runtime.use(noop_runtime()):
            from pipewarden.inbox import service
            from pipewarden.store import StateStore

            store = StateStore()
            total = SLACK_WARMUP + clicks * len(SLACK_CONCURRENCY)
            say(f"  {total} proposals posted to the fake Slack ...")
            ids = _seed(store, total, "slack")
            posted: list[tuple[str, str, str]] = []
            for pid in ids:
                service.on_proposal_created(pid)
                msg = store.slack_message_for(pid)
                if msg is None:
                    raise RuntimeError("a proposal was not posted to the fake Slack")
                posted.append((pid, msg.channel, msg.ts))
            updates_before = len(fake.calls_to("chat.update"))

            with serving(env, home, workers) as base:
                async def click(conn: Connection, target: tuple[str, str, str]) -> float:
                    pid, channel, ts = target
                    body = form_body(block_actions_payload(user_id=OWNER_SLACK, action_id="approve", value=pid,
                                                           channel=channel, message_ts=ts))
                    headers = signed_headers(secret, body)
                    t0 = time.perf_counter()
                    status, answer = await conn.post("/slack/events", body.encode(), headers)
                    elapsed = time.perf_counter() - t0
                    if status != 200:
                        raise RuntimeError(f"Slack interaction answered {status}: {answer[:200]!r}")
                    return elapsed

                async def clicking(targets: list[tuple[str, str, str]], conc: int) -> list[float]:
                    """`conc` clients at once (one connection each), each clicking its share one after another."""
                    times: list[float] = []

                    async def client(mine: list[tuple[str, str, str]]) -> None:
                        conn = Connection(base)
                        try:
                            for target in mine:
                                times.append(await click(conn, target))
                        finally:
                            await conn.aclose()

                    await asyncio.gather(*(client(targets[c::conc]) for c in range(conc)))
                    return times

                out: dict[str, Any] = {"clicks_per_run": clicks}
                asyncio.run(clicking(posted[:SLACK_WARMUP], 1))
                rest = posted[SLACK_WARMUP:]
                for n, conc in enumerate(SLACK_CONCURRENCY):
                    batch = rest[n * clicks:(n + 1) * clicks]
                    say(f"  {clicks} signed Approve clicks, {conc} at a time ...")
                    t0 = time.perf_counter()
                    times = asyncio.run(clicking(batch, conc))
                    wall = time.perf_counter() - t0
                    ms = [t * 1000 for t in times]
                    out[f"concurrency_{conc}"] = {
                        "p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
                        "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1),
                        "over_3s": sum(t > 3.0 for t in times), "clicks_per_s": round(len(times) / wall, 1),
                    }
                    row = out[f"concurrency_{conc}"]
                    say(f"    p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms, "
                        f"{row['clicks_per_s']} clicks/s")
                say("  waiting for the work after the acks (decide, chat.update) ...")
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:  # every click ends with at least one update (decided)
                    statuses = Counter(p.status.value for p in store.list_proposals(limit=total + 10))
                    if statuses.get("pending", 0) == 0 and \
                            len(fake.calls_to("chat.update")) - updates_before >= total:
                        break
                    time.sleep(0.5)
            out["statuses_after"] = dict(statuses)
            out["chat_updates"] = len(fake.calls_to("chat.update")) - updates_before
            out["audit_ok"] = store.verify_audit().ok
            store.engine.dispose()
        say(f"  statuses after: {out['statuses_after']}; chat.update calls: {out['chat_updates']}; "
            f"audit verifies: {out['audit_ok']}")
        return out
    finally:
        fake.stop()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("decisions", "slack"), help="Run one of the two benchmarks.")
    ap.add_argument("--db", default="sqlite,postgresql", help="State DBs for the decisions benchmark.")
    ap.add_argument("--clients", type=int, default=DECISION_CLIENTS)
    ap.add_argument("--per-client", type=int, default=DECISIONS_PER_CLIENT)
    ap.add_argument("--slack-clicks", type=int, default=SLACK_CLICKS)
    ap.add_argument("--workers", type=int, default=1,
                    help="Server processes: 1 is `pipewarden serve`; more run uvicorn --workers N on the same app.")
    ap.add_argument("--json", type=Path, help="Write every figure to this file.")
    args = ap.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
    results: dict[str, Any] = {}
    if args.only in (None, "decisions"):
        print(f"web API: decisions, {args.clients} concurrent clients ...", flush=True)
        results["decisions"] = bench_decisions_both(lambda m: print(m, flush=True),
                                                    tuple(args.db.split(",")), args.clients, args.per_client,
                                                    args.workers)
    if args.only in (None, "slack"):
        print("Slack: click to acknowledgement ...", flush=True)
        results["slack_ack"] = bench_slack_ack(lambda m: print(m, flush=True), args.slack_clicks, args.workers)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
