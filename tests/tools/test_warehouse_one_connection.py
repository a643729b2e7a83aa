"""`one_connection()`: inside its block every `connect` to the same warehouse reuses one open connection (read-only
requests too), transactions stay each block's own, and the connection is closed when the block ends."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipewarden.tools.warehouse import connect, one_connection


def test_connects_inside_the_block_share_one_connection_closed_after(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    with one_connection(url) as outer:
        with connect(url) as a, connect(url, read_only=True) as b, one_connection(url) as nested:
            assert a is outer and b is outer and nested is outer
        outer.execute("SELECT 1")  # still open after the inner blocks
        with connect(f"duckdb:///{tmp_path / 'other.duckdb'}") as other:
            assert other is not outer  # another warehouse opens its own
    with pytest.raises(duckdb.ConnectionException):
        outer.duckdb.execute("SELECT 1")
    with connect(url) as after:
        assert after is not outer


def test_a_failed_transaction_in_the_block_rolls_back_and_the_committed_one_stays(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    with one_connection(url):
        with connect(url) as wh, wh.transaction():
            wh.execute("CREATE TABLE t (x INTEGER)")
            wh.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError), connect(url) as wh, wh.transaction():
            wh.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("the step failed")
    with connect(url, read_only=True) as wh:
        assert wh.execute("SELECT x FROM t") == [(1,)]
