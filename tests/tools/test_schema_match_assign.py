"""The matcher's one-to-one assignment in Python (`max_assignment`) takes the pairs scipy's
`linear_sum_assignment(maximize=True)` takes, ties included, so dropping scipy from the command changes no answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from pipewarden.tools.schema_match import _assign, max_assignment


def _scipy_pairs(m: np.ndarray) -> list[tuple[int, int]]:
    ri, ci = linear_sum_assignment(m, maximize=True)
    return list(zip(ri.tolist(), ci.tolist(), strict=True))


@pytest.mark.parametrize("kind", ["ties", "scores", "zeros", "coarse"])
def test_same_pairs_as_scipy_on_random_matrices(kind: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(1500):
        r, c = (int(x) for x in rng.integers(1, 9, size=2))  # wide, tall and square
        if kind == "ties":
            m = rng.choice([0.0, 0.5, 0.55, 0.6, 1.0], size=(r, c))
        elif kind == "scores":  # what the matcher builds: 6-digit scores, below the threshold as 0
            m = np.round(rng.random((r, c)), 6)
            m[m < 0.5] = 0.0
        elif kind == "zeros":
            m = np.zeros((r, c))
        else:
            m = np.round(rng.random((r, c)), 1)
            m[m < 0.7] = 0.0
        assert max_assignment(m.tolist()) == _scipy_pairs(m), m


def test_same_pairs_as_scipy_on_larger_matrices() -> None:
    rng = np.random.default_rng(8)
    for _ in range(60):
        r, c = (int(x) for x in rng.integers(10, 45, size=2))
        m = np.round(rng.random((r, c)), 2)
        m[m < 0.5] = 0.0
        assert max_assignment(m.tolist()) == _scipy_pairs(m)


def test_assignment_maximizes_the_total_and_drops_pairs_below_the_threshold() -> None:
    pairs = {("a", "x"): (0.9, 0, None, 0), ("a", "y"): (0.8, 0, None, 0),
             ("b", "x"): (0.85, 0, None, 0), ("b", "y"): (0.1, 0, None, 0),
             ("c", "x"): (0.2, 0, None, 0), ("c", "y"): (0.3, 0, None, 0)}
    # greedy would give a->x and leave b with 0.1; the best total is a->y, b->x; c is left out
    assert _assign(["a", "b", "c"], ["x", "y"], pairs, 0.5) == {"a": "y", "b": "x"}
    assert max_assignment([]) == []
