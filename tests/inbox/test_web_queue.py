"""The queue page with hundreds of proposals: filters as query parameters with counts per facet, 50 per page,
newest first, and a constant number of SQL statements per page however long the queue is (no query per row)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pipewarden import db, runtime
from pipewarden.events import ColumnSpec, SchemaDrift
from pipewarden.ids import new_id, utcnow
from pipewarden.inbox.web import PAGE_SIZE, create_app
from pipewarden.models import CheckResult, ColumnMapping, DryRun, Proposal
from pipewarden.store import StateStore
from tests.inbox.web_client import sign_in

AGENTS = ("schema_drift", "quality", "cost")
DATASETS = ("flights", "weather", "planes", "airports")
RISKS = ("low", "medium", "high")
PENDING = 500
DECIDED = 40


def spec(i: int) -> tuple[str, str, str, str]:
    """Agent, dataset, risk and status of the i-th proposal (i = 0 is the oldest)."""
    return AGENTS[i % 3], DATASETS[i % 4], RISKS[(i // 3) % 3], "pending" if i < PENDING else "rejected"


def expected(facet: str, **filters: str) -> dict[str, int]:
    """Counts per value of `facet` among the proposals matching `filters` (facet's own filter ignored)."""
    names = ("agent", "dataset", "risk", "status")
    rows = [dict(zip(names, spec(i), strict=True)) for i in range(PENDING + DECIDED)]
    rows = [r for r in rows if all(r[k] == v for k, v in filters.items() if k != facet)]
    return dict(Counter(r[facet] for r in rows))


def bulk_queue(store: StateStore) -> list[str]:
    """PENDING pending and DECIDED rejected proposals, one created per minute (ids returned newest first).

    Written in one transaction (the proposals and their events) to keep the test fast; the rows are the ones
    `create_proposal` writes."""
    now = utcnow()
    events, proposals, ids = [], [], []
    for i in range(PENDING + DECIDED):
        agent, dataset, risk, status = spec(i)
        at = now - timedelta(minutes=PENDING + DECIDED - i)
        ev = SchemaDrift(dataset=dataset, load_id=f"load-{i}", batch_path=f"/b/{i}.csv", contract_version="x@v1",
                         added=[ColumnSpec(name=f"c{i}", type="integer")])
        p = Proposal(event_id=ev.id, agent=agent, dataset=dataset, title=f"proposal number {i:03d}",
                     diagnosis="d", change=ColumnMapping(dataset=dataset, renames={f"c{i}": "x"}),
                     dry_run=DryRun(before=CheckResult(passed=False, rows=1), after=CheckResult(passed=True, rows=1)),
                     thread_id=f"t{i}", risk=risk, created_at=at, updated_at=at, id=new_id())
        events.append(dict(id=str(ev.id), kind=ev.kind, dataset=dataset, load_id=ev.load_id,
                           payload=ev.model_dump(mode="json"), status="proposed", attempts=1, created_at=at))
        proposals.append(dict(id=str(p.id), event_id=str(ev.id), agent=agent, dataset=dataset, status=status,
                              risk=risk, payload=p.model_dump(mode="json"), created_at=at, updated_at=at))
        ids.append(str(p.id))
    with store.engine.begin() as conn:
        conn.execute(db.events.insert(), events)
        conn.execute(db.proposals.insert(), proposals)
        for row in proposals:  # each with its `proposed` audit entry, as create_proposal writes it
            store._audit(conn, row["id"], "proposed", row["agent"], {"status": row["status"]})
    return ids[::-1]


@pytest.fixture
def queue(store: StateStore) -> list[str]:
    return bulk_queue(store)


@pytest.fixture
def client(store: StateStore) -> TestClient:
    c = TestClient(create_app())
    sign_in(c, "bob", store)  # a steward of every dataset: reads the whole queue
    return c


@contextmanager
def counted(store: StateStore) -> Iterator[list[str]]:
    statements: list[str] = []

    def listen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", listen)
    try:
        yield statements
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", listen)


def titles(html: str) -> list[str]:
    return re.findall(r">proposal number (\d{3})</a>", html)


def registered() -> dict[str, int]:
    """Every registered agent at count 0: the agent filter offers them all, whatever the queue holds."""
    return dict.fromkeys(runtime.current().agents(), 0)


def facet(html: str, name: str) -> dict[str, int]:
    section = html.split(f'id="facet-{name}"', 1)[1].split("</section>", 1)[0]
    return {v: int(n) for v, n in re.findall(r'<a href="[^"]*">([^<]+)</a> <span class="count">(\d+)</span>', section)}


def test_first_page_is_50_newest_open_proposals_with_counts(client: TestClient, queue: list[str]) -> None:
    html = client.get("/").text
    shown = titles(html)
    assert len(shown) == PAGE_SIZE
    assert shown == [f"{i:03d}" for i in range(PENDING - 1, PENDING - 1 - PAGE_SIZE, -1)]  # newest first
    assert f"1&ndash;50 of {PENDING}" in html
    assert 'rel="next"' in html and 'rel="prev"' not in html
    assert facet(html, "status") == {"open": PENDING, "pending": PENDING, "rejected": DECIDED, "all": PENDING + DECIDED}
    assert facet(html, "agent") == registered() | expected("agent", status="pending")
    assert facet(html, "dataset") == expected("dataset", status="pending")
    assert facet(html, "risk") == expected("risk", status="pending")
    assert sum(facet(html, "agent").values()) == PENDING


def test_pages_walk_the_whole_queue_without_gaps(client: TestClient, queue: list[str]) -> None:
    seen: list[str] = []
    href = "/"
    while href:
        html = client.get(href).text
        seen += titles(html)
        nxt = re.search(r'<a href="([^"]+)" rel="next">', html)
        href = nxt.group(1).replace("&amp;", "&") if nxt else ""
    assert len(seen) == PENDING and len(set(seen)) == PENDING
    last = client.get("/?page=10").text
    assert f"451&ndash;500 of {PENDING}" in last and 'rel="next"' not in last and 'rel="prev"' in last


def test_filters_combine_and_facets_count_under_the_other_filters(client: TestClient, queue: list[str]) -> None:
    html = client.get("/?agent=quality&risk=high").text
    matching = [i for i in range(PENDING) if spec(i)[0] == "quality" and spec(i)[2] == "high"]
    assert f"of {len(matching)}," in html
    assert titles(html) == [f"{i:03d}" for i in sorted(matching, reverse=True)[:PAGE_SIZE]]
    # each facet counts under the other facets' filters, so other values stay one click away
    assert facet(html, "risk") == expected("risk", agent="quality", status="pending")
    assert facet(html, "agent") == registered() | expected("agent", risk="high", status="pending")
    assert facet(html, "dataset") == expected("dataset", agent="quality", risk="high", status="pending")
    assert 'class="selected"><a href="/?risk=high">quality</a>' in html  # the selected value links to clearing it

    assert "No proposals match these filters." in client.get("/?agent=nobody").text
    everything = client.get("/?status=all").text
    assert f"of {PENDING + DECIDED}," in everything
    rejected = client.get("/?status=rejected&dataset=flights").text
    flights_rejected = [i for i in range(PENDING, PENDING + DECIDED) if spec(i)[1] == "flights"]
    assert f"of {len(flights_rejected)}," in rejected
    assert titles(rejected) == [f"{i:03d}" for i in sorted(flights_rejected, reverse=True)]


def test_bad_filter_values_are_422(client: TestClient, queue: list[str]) -> None:
    for query in ("status=done", "risk=extreme", "page=0", "page=x"):
        resp = client.get(f"/?{query}")
        assert resp.status_code == 422, query


def test_a_page_costs_the_same_statements_whatever_the_queue_length(
    client: TestClient, store: StateStore
) -> None:
    with counted(store) as small:
        assert client.get("/").status_code == 200
    bulk_queue(store)
    with counted(store) as big:
        html = client.get("/").text
    assert len(titles(html)) == PAGE_SIZE
    # the session's lookup, a count, four facet counts, one page: no query per proposal
    assert len(big) == len(small) == 7


def test_queue_queries_and_edits_on_sqlite_and_postgres(state_url: str) -> None:
    """The store methods behind the queue and the edit form, on both state DBs."""
    from pipewarden.models import ProposalStatus

    store = StateStore()  # the URL `state_url` set
    assert store.url == state_url
    bulk_queue(store)
    filters = {"agent": ["quality"], "status": ["pending"]}
    page = store.find_proposals(filters, limit=PAGE_SIZE, offset=PAGE_SIZE)
    quality = [i for i in range(PENDING) if spec(i)[0] == "quality"]
    assert store.count_proposals(filters) == len(quality)
    assert [p.title for p in page] == [f"proposal number {i:03d}" for i in sorted(quality, reverse=True)[50:100]]
    assert store.count_proposals_by("risk", filters) == expected("risk", agent="quality", status="pending")
    assert store.count_proposals_by("agent", filters) == expected("agent", status="pending")

    target = page[0]
    before = len(store.audit_entries())
    dry = DryRun(before=CheckResult(passed=False, rows=3), after=CheckResult(passed=False, rows=3))
    edited = store.edit_proposal(target.id, ColumnMapping(dataset=target.dataset, renames={}), dry, "alice")
    assert edited.change.renames == {} and store.get_proposal(target.id).dry_run == dry
    (entry,) = store.audit_entries()[before:]
    assert (entry.action, entry.actor, entry.detail["heals"]) == ("edited", "alice", False)
    assert store.verify_audit().ok
    assert store.get_proposal(target.id).status == ProposalStatus.pending


def test_the_agent_filter_offers_every_registered_agent_before_its_first_proposal(
        client: TestClient, queue: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.runtimes import swap

    swap(monkeypatch, agents=lambda: ("schema-drift", "run-failure", "triage"))  # a registry with a fifth agent
    html = client.get("/").text
    offered = facet(html, "agent")
    assert offered["run-failure"] == 0 and offered["triage"] == 0  # listed, with nothing of theirs in the queue
    assert list(offered)[:3] == ["schema-drift", "run-failure", "triage"]  # the registry's order, then the rest
    assert {k: v for k, v in offered.items() if v} == expected("agent", status="pending")
