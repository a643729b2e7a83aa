"""`agents.router.warm_up`: a worker loads every route's graph, the index client and MiniLM before it claims, and
touches no state while doing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_warm_up_loads_every_agent_and_the_embedder_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = (
        "import json, sys\n"
        "from pipewarden.agents.router import ROUTES, warm_up\n"
        "took = warm_up()\n"
        "from pipewarden import runtime\n"
        "from pipewarden.knowledge import embedder\n"
        "loaded = runtime.current().embedder()\n"
        "print(json.dumps({'took': sorted(took), 'modules': sorted(m for m in sys.modules if m.startswith(\n"
        "    ('pipewarden.agents.', 'langgraph', 'qdrant_client'))), 'same_embedder': loaded is runtime.current().embedder(),\n"
        "    'models_loaded': embedder._load_minilm.cache_info().misses,\n"
        "    'agents': sorted({r.agent for r in ROUTES})}))\n"
    )
    env = {**os.environ, "PIPEWARDEN_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["took"]) == {*out["agents"], "qdrant_client", "openai", "embedder", "schema_match"}
    for module in ("pipewarden.agents.schema_drift", "pipewarden.agents.quality", "pipewarden.agents.cost",
                   "pipewarden.agents.retrain", "pipewarden.agents.triage", "langgraph", "qdrant_client"):
        assert module in out["modules"]
    assert out["same_embedder"] and out["models_loaded"] == 1  # the runtime's embedder, loaded once; events reuse it
    assert not home.exists() or not any(home.iterdir())  # no state DB, index or warehouse was opened
