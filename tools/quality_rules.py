"""Quality rules applied at validate time: an approved `Quarantine` (rows matching a guarded SQL predicate) and an
approved `DedupeRule` (one row per key) move rows to the quarantine table with the rule's reason, before the
contract's row checks run on the rest.

Rows a rule takes out are quarantined, never dropped, and they do not count toward the contract's failure rate:
a person approved taking them out. The same functions run in the pipeline (`flows/validate.py`) and in the
quality agent's dry-run, so what the dry-run proves is what validate will do.

A quarantine's predicate runs in an in-memory DuckDB over the batch, and only after `tools.sql_guard.
check_predicate` accepted it; what runs is the guard's own rendering of the parsed expression, on a connection
with file access off and its settings locked. A quarantine with a
`load_id` applies to that load only; a dedupe rule applies to every load of its dataset.

Public names: `Rule`, `ActiveRule`, `active_rules`, `predicate_mask`, `duplicate_mask`, `rule_reasons`,
`check_with_rules`, `predicate_sql`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipewarden.errors import UserError
from pipewarden.models import DedupeRule, Quarantine
from pipewarden.store import StateStore

Rule = Quarantine | DedupeRule
ROW = "__pw_row"


class ActiveRule(NamedTuple):
    """A rule and the version number it is active as (None: a candidate on dry-run)."""

    rule: Rule
    version: int | None = None

    @property
    def label(self) -> str:
        v = f" v{self.version}" if self.version is not None else " (dry-run)"
        return f"{self.rule.target}{v}"


def active_rules(dataset: str, load_id: str | None = None, store: StateStore | None = None) -> list[ActiveRule]:
    """The dataset's active dedupe rule and quarantine (if it covers `load_id`), in the order they apply."""
    store = store or StateStore()
    out: list[ActiveRule] = []
    dedupe = store.active_version(f"dedupe:{dataset}")
    if dedupe is not None:
        out.append(ActiveRule(DedupeRule.model_validate(dedupe.content), dedupe.number))
    quarantine = store.active_version(f"quarantine:{dataset}")
    if quarantine is not None:
        rule = Quarantine.model_validate(quarantine.content)
        if rule.load_id is None or rule.load_id == load_id:
            out.append(ActiveRule(rule, quarantine.number))
    return out


def predicate_sql(predicate: str, columns: Sequence[str]) -> str:
    """The predicate as the guard parsed it (DuckDB SQL), or a UserError listing what the guard refused."""
    import sqlglot
    from sqlglot import exp

    from pipewarden.tools.sql_guard import check_predicate

    errors = check_predicate(predicate, set(map(str, columns)))
    if errors:
        raise UserError(f"quarantine predicate {predicate!r} is refused: " + "; ".join(errors),
                        hint="write one boolean SQL expression over the batch's columns (no subqueries)")
    return sqlglot.parse_one(predicate, read="duckdb", into=exp.Condition).sql(dialect="duckdb")


def predicate_mask(frame: pd.DataFrame, predicate: str) -> np.ndarray:
    """Boolean array (by position): the rows of `frame` the predicate is true for (NULL counts as false)."""
    import duckdb

    from pipewarden.tools.warehouse import scratch_duckdb

    if frame.empty:
        return np.zeros(0, dtype=bool)
    sql = predicate_sql(predicate, frame.columns)
    work = frame.reset_index(drop=True)
    work[ROW] = np.arange(len(work), dtype=np.int64)
    # the frame is registered, never read from a file: no file access, settings locked (defence in depth)
    con = scratch_duckdb(locked=True)
    try:
        con.register("batch", work)
        hits = con.execute(f"SELECT {ROW} FROM batch WHERE COALESCE(({sql}), FALSE)").fetchnumpy()[ROW]
    except duckdb.Error as exc:
        raise UserError(f"quarantine predicate {predicate!r} fails on the batch: {exc}",
                        hint="compare the predicate's columns and types with the batch's") from exc
    finally:
        con.close()
    mask = np.zeros(len(work), dtype=bool)
    mask[np.asarray(hits, dtype=np.int64)] = True
    return mask


def duplicate_mask(frame: pd.DataFrame, rule: DedupeRule) -> np.ndarray:
    """Boolean array (by position): the rows the rule removes, every row but one (first or last by `order_by`,
    else by batch order) of each group of rows sharing the rule's keys."""
    missing = [k for k in [*rule.keys, *([rule.order_by] if rule.order_by else [])] if k not in frame.columns]
    if missing:
        raise UserError(f"dedupe rule for {rule.dataset} names columns the batch lacks: {', '.join(missing)}",
                        hint=f"keys must be columns of the batch: {', '.join(map(str, frame.columns))}")
    if frame.empty or not rule.keys:
        return np.zeros(len(frame), dtype=bool)
    work = frame.reset_index(drop=True)
    order = np.arange(len(work))
    if rule.order_by:
        order = work[rule.order_by].reset_index(drop=True).sort_values(kind="stable").index.to_numpy()
    ordered = work.iloc[order]
    dup = ordered.duplicated(subset=rule.keys, keep=rule.keep).to_numpy()
    mask = np.zeros(len(work), dtype=bool)
    mask[order[dup]] = True
    return mask


def rule_reasons(frame: pd.DataFrame, rules: Sequence[ActiveRule]) -> pd.Series:
    """Per row of `frame` (same index): the first rule that takes it out, as a quarantine reason, or ''."""
    reasons = np.full(len(frame), "", dtype=object)
    for active in rules:
        rule = active.rule
        free = reasons == ""
        if isinstance(rule, DedupeRule):
            # dedupe among the rows still in the batch, so an earlier rule's rows never count as the kept copy
            sub = np.flatnonzero(free)
            hit = np.zeros(len(frame), dtype=bool)
            hit[sub[duplicate_mask(frame.iloc[sub], rule)]] = True
            text = f"{active.label}: duplicate by ({', '.join(rule.keys)}), kept the {rule.keep} copy"
        else:
            hit = predicate_mask(frame, rule.predicate) & free
            text = f"{active.label}: {rule.reason} ({rule.predicate})"
        reasons[hit & free] = text
    return pd.Series(reasons, index=frame.index, name="reason", dtype="str")


def check_with_rules(
    frame: pd.DataFrame, contract: Any, rules: Sequence[ActiveRule], *,
    cast_failures: Mapping[str, pd.Series] | None = None, engine: Any = None, ruled: pd.Series | None = None,
) -> Any:
    """`tools.checks.run_checks` on the rows the rules keep, as one `CheckReport` over the whole batch.

    Rows a rule takes out carry the rule's reason in `row_reasons` (so they are quarantined and not accepted) but
    do not count in `failure_rate` or `result.failed_rows`; `result.rows` is the whole batch. With no rule, this is
    `run_checks` itself. `ruled` is `rule_reasons(frame, rules)` when the caller has it already.
    """
    from pipewarden.tools.checks import run_checks

    if not rules:
        return run_checks(frame, contract, cast_failures=cast_failures, engine=engine)
    if ruled is None:
        ruled = rule_reasons(frame, rules)
    kept = (ruled == "").to_numpy()
    report = run_checks(frame.loc[kept], contract, cast_failures=cast_failures, engine=engine)
    reasons = ruled.copy()
    reasons.loc[kept] = report.row_reasons.to_numpy()
    result = report.result.model_copy(update={"rows": len(frame)})
    return report.model_copy(update={"row_reasons": reasons, "result": result})
