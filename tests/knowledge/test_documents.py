"""Chunks carry provenance and stable ids; the builders cut contracts, lineage, runbooks and decisions."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipewarden.errors import ConfigError
from pipewarden.knowledge.documents import (
    Chunk,
    chunk_id,
    contract_chunks,
    lineage_chunks,
    source_for,
    text_chunks,
)
from pipewarden.policies.contract import load_contract


def test_chunk_make_derives_a_stable_uuid5_id_and_the_sha256_of_its_text() -> None:
    a = Chunk.make(text="hello", source="docs/a.md", kind="runbook", key=0, allowed_roles=["owner"])
    b = Chunk.make(text="changed", source="docs/a.md", kind="runbook", key=0, allowed_roles=["owner"])
    assert a.id == b.id == chunk_id("docs/a.md", "runbook", 0)
    assert uuid.UUID(a.id).version == 5
    assert a.content_hash == hashlib.sha256(b"hello").hexdigest()
    assert a.fingerprint() != b.fingerprint()
    assert chunk_id("docs/a.md", "runbook", 1) != a.id != chunk_id("docs/b.md", "runbook", 0)


def test_chunk_refuses_no_roles_and_normalizes_time_to_utc() -> None:
    with pytest.raises(ConfigError, match="at least one allowed role"):
        Chunk.make(text="x", source="s", kind="runbook", key=0, allowed_roles=[])
    with pytest.raises(ValidationError):
        Chunk.make(text="x", source="s", kind="gossip", key=0, allowed_roles=["owner"])  # type: ignore[arg-type]
    naive = Chunk.make(text="x", source="s", kind="runbook", key=0, allowed_roles=["owner"],
                       updated_at=datetime(2024, 1, 1, 12))
    assert naive.updated_at.tzinfo is not None and naive.updated_at.utcoffset().total_seconds() == 0


def test_fingerprint_ignores_the_timestamp_but_not_access() -> None:
    base = dict(text="x", source="s", kind="runbook", key=0)
    a = Chunk.make(**base, allowed_roles=["owner"], updated_at=datetime(2024, 1, 1, tzinfo=UTC))
    b = Chunk.make(**base, allowed_roles=["owner"], updated_at=datetime(2025, 1, 1, tzinfo=UTC))
    c = Chunk.make(**base, allowed_roles=["owner", "analyst"])
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_contract_chunks_one_summary_and_one_per_column_with_provenance() -> None:
    contract = load_contract("flights")
    chunks = contract_chunks(contract)
    assert len(chunks) == 1 + len(contract.columns)
    mtime = datetime.fromtimestamp(os.stat(contract.path).st_mtime, tz=UTC)
    for c in chunks:
        assert c.kind == "contract" and c.dataset == "flights" and c.owner == contract.owner
        assert c.source == "contracts/flights.yaml" == source_for(contract.path)
        assert c.allowed_roles == sorted(contract.allowed_roles)
        assert c.updated_at == mtime
    dep = next(c for c in chunks if c.title == "flights.dep_delay")
    assert "min -120" in dep.text and "Departure delay in minutes" in dep.text
    assert dep.lineage == ["flights.dep_delay"]
    assert "flights-data-team" in chunks[0].text
    assert [c.id for c in contract_chunks(contract)] == [c.id for c in chunks]


def test_lineage_chunks_group_edges_per_model() -> None:
    edges = [
        {"model": "daily_delays", "column": "avg_dep_delay", "upstream_table": "flights", "upstream_column": "dep_delay"},
        {"model": "daily_delays", "column": "day", "upstream_table": "flights", "upstream_column": "day"},
        {"model": "plane_usage", "column": "tailnum", "upstream_table": "planes", "upstream_column": "tailnum"},
    ]
    chunks = lineage_chunks(edges, "flights-data-team", ["engineer"], "flows/models")
    assert [c.dataset for c in chunks] == ["daily_delays", "plane_usage"]
    dd = chunks[0]
    assert dd.kind == "lineage" and dd.source == "flows/models" and dd.allowed_roles == ["engineer"]
    assert dd.lineage == ["flights.day", "flights.dep_delay"]
    assert "avg_dep_delay <- flights.dep_delay" in dd.text
    with pytest.raises(ConfigError, match="lacks upstream_column"):
        lineage_chunks([{"model": "m", "column": "c", "upstream_table": "t"}], None, ["engineer"], "x")


def test_text_chunks_split_on_headings_and_read_front_matter(tmp_path: Path) -> None:
    doc = tmp_path / "rb.md"
    doc.write_text(
        "---\nowner: team-a\ndataset: flights\nallowed_roles: [steward]\n---\n"
        "# Title\n\nIntro.\n\n## First\n\nOne.\n\n```sh\n# not a heading\n```\n\n## Second\n\nTwo.\n\n## Empty\n",
        encoding="utf-8",
    )
    chunks = text_chunks(doc, "runbook")
    assert [c.title for c in chunks] == ["Title", "Title > First", "Title > Second"]
    assert "# not a heading" in chunks[1].text
    assert chunks[1].text.startswith("Title > First\n\nOne.")
    assert all(c.owner == "team-a" and c.dataset == "flights" and c.allowed_roles == ["steward"] for c in chunks)
    assert text_chunks(doc, "runbook", allowed_roles=["owner"])[0].allowed_roles == ["owner"]
    assert len({c.id for c in chunks}) == 3


def test_text_chunks_without_roles_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "rb.md"
    doc.write_text("# Only text\n\nno front matter\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no allowed roles"):
        text_chunks(doc, "runbook")


def test_schema_drift_runbook_is_indexable_and_covers_renames_and_retypes(pw_project: Path) -> None:
    chunks = text_chunks(pw_project / "runbooks" / "schema-drift.md", "runbook")  # sources are project-relative
    titles = " | ".join(c.title for c in chunks)
    assert "Renamed columns" in titles and "Retyped columns" in titles
    assert all(c.source == "runbooks/schema-drift.md" and c.dataset == "flights" for c in chunks)
    assert all(len(c.text) <= 1100 for c in chunks)
