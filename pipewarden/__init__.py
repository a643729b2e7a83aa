"""pipewarden: a supervisor that watches Prefect data pipelines and heals them with a human in the loop.

The kernel package holds what every other folder shares: the domain models, settings, the state DB,
the error hierarchy and the command line. It imports none of the other top-level packages at module
level; the CLI is the composition root and loads them lazily inside each command.

The public API for a team's own code, loaded on first use so `import pipewarden` stays light:
`guard_batch(data, dataset)` -> `GuardResult`, raising `BatchHalted` (see pipewarden/guard.py), and the Prefect
task `from pipewarden.prefect import guard`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["BatchHalted", "GuardResult", "__version__", "guard_batch"]
_LAZY = {"guard_batch": "pipewarden.guard", "GuardResult": "pipewarden.guard", "BatchHalted": "pipewarden.errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipewarden' has no attribute {name!r}")
