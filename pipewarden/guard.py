"""The public guard API: `guard_batch(data, dataset)` checks one batch from a team's own code.

A composition root (see tests/test_layering.py): it re-exports the implementation in `pipewarden.flows.guard`
so `from pipewarden import guard_batch` works without the kernel importing flows at import time
(`pipewarden.__getattr__` loads this module on first use).
"""

from __future__ import annotations

from pipewarden.errors import BatchHalted
from pipewarden.flows.guard import GuardResult, guard_batch, recheck_batch

__all__ = ["BatchHalted", "GuardResult", "guard_batch", "recheck_batch"]
