"""Cost faults for tests and evals: regressed versions of the shipped SQL models that return the same rows and cost
more, activated the way a bad patch would be (a new active `sql:<model>` version), then built and detected.

Each `CostFault` rewrites one model's file SQL (`regressed_sql`); `inject_cost_fault` records a baseline (builds
under the current SQL), activates the regressed version, builds once more under `load_id` and runs the cost detector.
The raw tables must be in the warehouse first (a pipeline run, or `tests.flows.test_transform.seed_warehouse`).

| fault | model | what the regression does | detector metric | expected proposal |
|---|---|---|---|---|
| `repeated_scan` | route_daily | aggregates stg_flights in two CTEs and joins them | rows_scanned (~2x) | the known-good (file) SQL |
| `cartesian_join` | route_daily | the airport join's ON is `a = b OR (a IS NULL AND b IS NULL)`: a nested loop over every pair | elapsed_ms (~30x) | `IS NOT DISTINCT FROM` (rule) or the file SQL |
| `non_sargable` | flights_weather | the weather join compares `ABS(EPOCH(a) - EPOCH(b)) < 1` instead of `a = b` | elapsed_ms (~70x) | the file SQL |
| `select_star` | flights_weather | reads `(SELECT DISTINCT * FROM stg_flights)`: all 22 columns instead of 9 | bytes_scanned (~1.5x) | the file SQL or `rule:distinct_star_to_table` |
| `lost_filter` | stg_flights | drops the `arr_delay IS NOT NULL` filter: more rows, so no rewrite keeps the rows | none at the default policy | needs a human |

The detector (`flows.cost_judge`) compares rows and bytes scanned per input row and lets time fire only beside a
change of the model's plan shape, so the other models of the build (same plans, same input) raise nothing: one
fault, one event. `select_star` fires on `bytes_scanned` (time alone grows ~1.3x, under the policy's elapsed-time ratio);
`lost_filter` changes the model's rows, so its cost grows only ~4% and a cheaper rewrite cannot return the same rows.

Public names: `CostFault`, `COST_FAULTS`, `regressed_sql`, `inject_cost_fault`, `InjectedCostFault`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import UnknownNameError, UserError
from pipewarden.events import CostRegression

INJECTOR = "cost-fault-injector"


class CostFault(BaseModel):
    """One regression: the model, how its SQL is changed, what the detector and the cost agent should conclude."""

    model_config = ConfigDict(frozen=True)
    name: str
    model: str
    finding: str = Field(description="The diagnosis kind the cost agent should report first.")
    metric: str | None = Field(description="The detector metric expected to fire (None: nothing should fire).")
    description: str
    expected: str = Field(description="The proposal the cost agent should make.")
    replace: tuple[tuple[str, str], ...] = ()
    sql: str | None = Field(default=None, description="The whole regressed SQL, when it is not a few replacements.")


_REPEATED_ROUTE_DAILY = """\
-- route_daily (regressed: two passes over stg_flights)
WITH counts AS (
    SELECT s.origin, s.dest, s.flight_date, COUNT(*) AS flights, SUM(s.arr_delay) AS arr_delay_total,
           SUM(CASE WHEN s.is_delayed THEN 1 ELSE 0 END) AS delayed_total, AVG(s.arr_delay) AS avg_arr_delay,
           AVG(CASE WHEN s.is_delayed THEN 1.0 ELSE 0.0 END) AS delayed_share
    FROM stg_flights AS s
    GROUP BY s.origin, s.dest, s.flight_date
),
departures AS (
    SELECT s.origin, s.dest, s.flight_date, AVG(s.dep_delay) AS avg_dep_delay, MAX(s.distance) AS distance
    FROM stg_flights AS s
    GROUP BY s.origin, s.dest, s.flight_date
)
SELECT c.origin, c.dest, ap.name AS dest_name, c.flight_date, c.flights, c.arr_delay_total, c.delayed_total,
       c.avg_arr_delay, c.delayed_share, d.avg_dep_delay, d.distance
FROM counts AS c
JOIN departures AS d
    ON d.origin = c.origin AND d.dest = c.dest AND d.flight_date = c.flight_date
LEFT JOIN raw_airports AS ap
    ON ap.faa = c.dest
"""

COST_FAULTS: dict[str, CostFault] = {f.name: f for f in (
    CostFault(name="repeated_scan", model="route_daily", finding="repeated_scan", metric="rows_scanned",
              description="route_daily scans stg_flights twice (two aggregates joined back together)",
              expected="sql_model_patch back to the known-good route_daily (one scan): rows scanned about halved",
              sql=_REPEATED_ROUTE_DAILY),
    CostFault(name="cartesian_join", model="route_daily", finding="cartesian_join", metric="elapsed_ms",
              description="route_daily joins airports ON faa = dest OR (both null): a nested loop over every pair",
              expected="sql_model_patch with a hash join (IS NOT DISTINCT FROM, or the known-good ON faa = dest)",
              replace=(("    ON ap.faa = s.dest", "    ON ap.faa = s.dest OR (ap.faa IS NULL AND s.dest IS NULL)"),)),
    CostFault(name="non_sargable", model="flights_weather", finding="non_sargable", metric="elapsed_ms",
              description="flights_weather matches the weather hour with ABS(EPOCH(a) - EPOCH(b)) < 1, not equality",
              expected="sql_model_patch back to the known-good flights_weather (equality join on the hour)",
              replace=(("   AND hw.time_hour = s.time_hour", "   AND ABS(EPOCH(hw.time_hour) - EPOCH(s.time_hour)) < 1"),)),
    CostFault(name="select_star", model="flights_weather", finding="select_star", metric="bytes_scanned",
              description="flights_weather reads SELECT DISTINCT * FROM stg_flights: every column of a wide table",
              expected="sql_model_patch reading stg_flights directly (known-good or rule:distinct_star_to_table)",
              replace=(("FROM stg_flights AS s\nLEFT JOIN", "FROM (SELECT DISTINCT * FROM stg_flights) AS s\nLEFT JOIN"),)),
    CostFault(name="lost_filter", model="stg_flights", finding="lost_filter", metric=None,
              description="stg_flights lost its arr_delay IS NOT NULL filter (cancelled flights now flow downstream)",
              expected="no event at the default policy; given an event, a needs-human proposal (the known-good "
                       "version is cheaper but returns different rows)",
              replace=(("    WHERE t.arr_delay IS NOT NULL\n      AND t.time_hour IS NOT NULL",
                        "    WHERE t.time_hour IS NOT NULL"),)),
)}


def _fault(name: str) -> CostFault:
    if name not in COST_FAULTS:
        raise UnknownNameError("cost fault", name, list(COST_FAULTS))
    return COST_FAULTS[name]


def regressed_sql(fault: str, base_sql: str | None = None) -> str:
    """The regressed SQL of `fault`'s model: its file SQL (or `base_sql`) with the fault's change."""
    from pipewarden.tools.lineage import load_models

    f = _fault(fault)
    if f.sql is not None:
        return f.sql
    sql = base_sql if base_sql is not None else load_models()[f.model].sql
    for old, new in f.replace:
        if old not in sql:
            raise UserError(f"cost fault {fault!r}: the {f.model} SQL no longer contains {old.strip()!r}",
                            hint=f"update evals/cost_faults.py for the current examples/flights/models/{f.model}.sql")
        sql = sql.replace(old, new, 1)
    return sql


class InjectedCostFault(BaseModel):
    """What `inject_cost_fault` did: the version it activated and the events the detector returned."""

    fault: str
    model: str
    target: str
    version: int
    sql: str
    base_sql: str
    load_id: str
    events: list[CostRegression]


def inject_cost_fault(fault: str, *, load_id: str = "cost-fault", baseline_runs: int = 3,
                      emit: bool = False) -> InjectedCostFault:
    """Build `baseline_runs` times under the current SQL (the history), activate the regressed version of the
    fault's model as a new `sql:<model>` version, build once under `load_id` and detect. `emit=True` also writes
    the events to the outbox."""
    from pipewarden.flows.detectors import detect_cost_regressions
    from pipewarden.flows.transform import active_sql_overrides, transform
    from pipewarden.ids import new_id
    from pipewarden.store import StateStore
    from pipewarden.tools.lineage import load_models

    f = _fault(fault)
    base = load_models()[f.model].sql
    active = active_sql_overrides([f.model]).get(f.model)
    if active is not None and active.strip() != base.strip():
        raise UserError(f"cost fault {fault!r}: {f.model} already runs an active sql:{f.model} version, not its file",
                        hint="inject cost faults into a fresh PIPEWARDEN_HOME (one fault per home), or roll it back")
    sql = regressed_sql(fault, base)
    for i in range(baseline_runs):
        transform(f"{load_id}-baseline-{i}")
    version = StateStore().activate_new_version(f"sql:{f.model}", {"kind": "sql_model_patch", "model": f.model,
                                                                   "sql": sql, "base_sql": base,
                                                                   "reason": f"cost fault {fault}"},
                                                new_id(), INJECTOR)
    transform(load_id)
    events = detect_cost_regressions(load_id)
    if emit:
        from pipewarden.flows.emit import emit as emit_event

        for ev in events:
            emit_event(ev)
    return InjectedCostFault(fault=fault, model=f.model, target=f"sql:{f.model}", version=version.number, sql=sql,
                             base_sql=base, load_id=load_id, events=events)
