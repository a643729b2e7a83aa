"""The quality history read from stored load profiles (`tools.load_profile`) is the history read from the rows, and
the quality stage finds the same faults either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipewarden.flows import data as D
from pipewarden.flows.quality_checks import check_quality
from pipewarden.flows.warehouse import connect
from pipewarden.policies.contract import load_contract
from pipewarden.policies.quality import dataset_quality
from pipewarden.tools.load_profile import PROFILE_TABLE, history_from_profiles, quality_history
from pipewarden.tools.quality import History, _connect, _not_in, load_history
from tests.quality_history import build_history, land_and_check, use_history


@pytest.fixture(scope="module")
def history_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("quality-incremental-history")
    return folder, build_history(folder)  # months 1 and 2 accepted by validate, which stores their profiles


@pytest.fixture
def m3(history_home, pw_home: Path) -> pd.DataFrame:
    folder, samples = history_home
    use_history(folder, pw_home)
    return samples[3]


def _normal(h: History) -> dict:  # type: ignore[type-arg]
    """A history with the lists whose order SQL leaves open sorted (GROUP BY order is the engine's)."""
    out = h.model_dump(mode="json")
    out["null_shares"] = {c: sorted(v) for c, v in out["null_shares"].items()}
    for r in out["references"]:
        r["known_broken"], r["shares"], r["keys"] = sorted(r["known_broken"]), sorted(r["shares"]), sorted(r["keys"])
    return out


def _both(exclude: str | None) -> tuple[History | None, History]:
    dq, contract = dataset_quality("flights"), load_contract("flights")
    with _connect() as wh:
        profiled = history_from_profiles(wh, "flights", exclude, dq, contract)
    return profiled, load_history("flights", exclude, dq, contract)


def test_the_history_from_profiles_is_the_history_from_the_rows(m3) -> None:
    profiled, scanned = _both(None)
    assert profiled is not None and len(profiled.loads) == 2
    assert _normal(profiled) == _normal(scanned)
    assert {b.column for b in profiled.bins} == {"dep_delay", "arr_delay", "distance", "air_time"}
    assert all(r.shares for r in profiled.references)


def test_a_load_without_a_profile_is_read_from_the_rows(m3) -> None:
    with connect() as con:
        con.execute(f"DELETE FROM {PROFILE_TABLE} WHERE load_id = (SELECT min(load_id) FROM {PROFILE_TABLE})")
    assert _both(None)[0] is None  # one load has no profile: no history from profiles
    dq, contract = dataset_quality("flights"), load_contract("flights")
    assert _normal(quality_history("flights", None, dq, contract)) == _normal(load_history("flights", None, dq,
                                                                                            contract))


@pytest.mark.parametrize("fault", ["nulls", "broken_refs", "shift", "clean"])
def test_the_quality_stage_finds_the_same_faults_from_profiles_as_from_the_rows(m3, tmp_path: Path,
                                                                                  fault: str) -> None:
    batch = {"nulls": lambda: D.inject_nulls(m3, "dep_delay", 0.2),
             "broken_refs": lambda: D.inject_broken_refs(m3, "tailnum", 0.3),
             "shift": lambda: m3.assign(dep_delay=m3["dep_delay"] + 60),
             "clean": lambda: m3}[fault]()
    landed, validated, from_profiles = land_and_check(batch, tmp_path)
    assert not validated.halted and from_profiles is not None
    with connect() as con:
        con.execute(f"DROP TABLE {PROFILE_TABLE}")  # the stage now reads the whole history from the rows
    from_rows = check_quality(landed)
    assert [f.model_dump() for f in from_profiles.findings] == [f.model_dump() for f in from_rows.findings]
    assert (fault == "clean") == (from_rows.findings == [])


def test_not_in_matches_isin() -> None:
    values = pd.Series(["a", "b", "c", "a", "zz"] * 50, dtype="str")
    allowed = {"a", "c", "k"}
    assert (_not_in(values, allowed) == (~values.isin(allowed)).to_numpy()).all()
    assert _not_in(values.iloc[:0], allowed).dtype == np.bool_


def test_a_column_too_varied_to_count_is_read_from_the_rows(m3, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipewarden.tools import load_profile
    from pipewarden.tools.warehouse import connect as connect_warehouse

    default = load_profile.MAX_DISTINCT
    monkeypatch.setattr(load_profile, "MAX_DISTINCT", 100)  # distance has more: it is not counted
    with connect_warehouse() as wh:
        loads = [r[0] for r in wh.execute(f"SELECT load_id FROM {PROFILE_TABLE}")]
        profiles = [load_profile.write_profile(wh, "flights", load_id) for load_id in loads]
    assert all("distance" not in p.number_counts and "tailnum" not in p.text_counts for p in profiles)
    assert _both(None)[0] is None  # a referential column it cannot count: the whole history from the rows
    monkeypatch.setattr(load_profile, "MAX_DISTINCT", default)
    with connect_warehouse() as wh:  # every profile counted, then distance taken out, as if it had been too varied
        for load_id in loads:
            p = load_profile.write_profile(wh, "flights", load_id)
            p.number_counts.pop("distance")
            wh.execute(f"UPDATE {PROFILE_TABLE} SET profile = ? WHERE load_id = ?", [p.model_dump_json(), load_id])
    profiled, scanned = _both(None)  # distance's bins come from the rows, the rest from the profiles
    assert profiled is not None and _normal(profiled) == _normal(scanned)
