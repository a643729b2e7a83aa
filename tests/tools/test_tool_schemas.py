"""What the model sees of every tool is snapshot-tested: a schema change fails until the snapshot is rewritten.

Rewrite on purpose with: PIPEWARDEN_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/tools/test_tool_schemas.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipewarden.tools.registry import Tool, all_tools

SNAPSHOTS = Path(__file__).parent / "schemas"
TOOLS = all_tools()


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_tool_schema_matches_its_snapshot(name: str) -> None:
    path = SNAPSHOTS / f"{name}.json"
    current = TOOLS[name].schema_json()
    if os.environ.get("PIPEWARDEN_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(current, encoding="utf-8")
    assert path.exists(), f"no snapshot for tool {name!r}; write it with PIPEWARDEN_UPDATE_SNAPSHOTS=1"
    assert path.read_text(encoding="utf-8") == current, (
        f"the JSON schema of tool {name!r} changed; if on purpose, rewrite {path} with PIPEWARDEN_UPDATE_SNAPSHOTS=1"
    )


def test_every_snapshot_belongs_to_a_registered_tool() -> None:
    stale = sorted(p.stem for p in SNAPSHOTS.glob("*.json") if p.stem not in TOOLS)
    assert stale == [], f"snapshots for tools that no longer exist: {stale}; delete them"


def test_a_schema_change_is_caught(tmp_path: Path) -> None:
    class In(BaseModel):
        column: str

    class In2(BaseModel):
        column: str
        limit: int = 5

    class Out(BaseModel):
        ok: bool

    a = Tool("t", "d", In, Out, lambda a: Out(ok=True))
    b = Tool("t", "d", In2, Out, lambda a: Out(ok=True))
    assert a.schema_json() != b.schema_json()


def test_tool_call_validates_arguments_and_output() -> None:
    from pipewarden.errors import ModelRetry

    class In(BaseModel):
        n: int

    class Out(BaseModel):
        doubled: int

    t = Tool("double", "d", In, Out, lambda a: Out(doubled=a.n * 2))
    assert t.call('{"n": 3}') == Out(doubled=6) and t.call({"n": 1}).doubled == 2
    with pytest.raises(ModelRetry, match="arguments of tool 'double' are invalid: n"):
        t.call({"n": "three"})
    bad = Tool("bad", "d", In, Out, lambda a: In(n=1))
    with pytest.raises(TypeError, match="returned In, not Out"):
        bad.call({"n": 1})
