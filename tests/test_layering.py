"""The arrows of ARCHITECTURE.md, checked on every import statement (lazy ones included).

The composition roots (the CLI, the demo, the public API, the MCP server and the runtime's wiring) may reach
every layer; they are listed by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"pipewarden", "flows", "agents", "tools", "policies", "inbox", "knowledge", "evals"}
ALLOWED: dict[str, set[str]] = {
    "pipewarden": {"pipewarden"},
    "policies": {"pipewarden", "policies"},
    "tools": {"pipewarden", "policies", "tools"},
    "knowledge": {"pipewarden", "policies", "knowledge"},
    "inbox": {"pipewarden", "policies", "inbox"},
    "flows": {"pipewarden", "policies", "tools", "knowledge", "flows"},
    "agents": {"pipewarden", "policies", "tools", "knowledge", "agents"},
    "evals": OURS,
}
COMPOSITION_ROOTS = {
    "pipewarden/cli.py", "flows/demo.py",
    # the public API's composition roots: `pipewarden.guard_batch` and the Prefect task `pipewarden.prefect.guard`
    "pipewarden/guard.py", "pipewarden/prefect.py",
    # the MCP server: the inbox and the read-only tools (checks, schema match, lineage, knowledge) for IDE agents
    "pipewarden/mcp_server.py",
    # the runtime's composition root: `default_runtime()` wires the real implementation of every port
    "pipewarden/wiring.py",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_layer(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_layer(node.module))
    return found


def _layer(module: str) -> str:
    """`pipewarden.flows.x` belongs to flows/, `pipewarden.settings` to the kernel; a bare `flows` is no layer of
    ours any more (everything is imported under `pipewarden.`)."""
    parts = module.split(".")
    if parts[0] != "pipewarden":
        return "<outside>" if parts[0] not in OURS else f"<bare {parts[0]}>"
    return parts[1] if len(parts) > 1 and parts[1] in OURS - {"pipewarden"} else "pipewarden"


FILES = sorted(p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_arrows(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    if rel in COMPOSITION_ROOTS:
        return
    pkg = rel.split("/")[0]
    found = _imports(path)
    bare = sorted(b for b in found if b.startswith("<bare"))
    assert not bare, f"{rel} imports {bare}: every layer is imported under `pipewarden.`"
    bad = (found & OURS) - ALLOWED[pkg]
    assert not bad, f"{rel} imports {sorted(bad)}; {pkg}/ may import only {sorted(ALLOWED[pkg])}"


def test_nothing_imports_evals() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in FILES
                 if not str(p.relative_to(ROOT)).startswith("evals/") and "evals" in _imports(p)
                 and str(p.relative_to(ROOT)) != "pipewarden/cli.py"]  # the composition root runs `pipewarden eval`
    assert offenders == []


def test_every_folder_has_a_readme() -> None:
    missing = [pkg for pkg in ALLOWED if not (ROOT / pkg / "README.md").exists()]
    assert missing == []
