"""Re-run a proposal's dry-run for a change a person edited in the inbox (the `DryRunner` port's default).

`redry(proposal, change)` proves the edited change the way the agent proved the original, and writes nothing:

- a `ColumnMapping` is checked against the dataset's contract (every target a contract column, one incoming
  column per target, every cast a contract type, every incoming column in the batch), then applied to the
  failing batch (the event's `batch_path`) and the contract's checks run before and after, with a sample of
  the healed rows, as the schema-drift agent does;
- a `SqlModelPatch` must pass the agents' SQL guardrails (`tools.sql_guard.check_select` over the project's
  tables: the warehouse's own, never the state DB's, and the models folder's names; one read-only query, no DDL
  or DML, no table functions, no catalogs, no file or settings functions); the model's current SQL (its active
  version, else its file in `settings.models_dir`) and the edited SQL then both run on
  `tools.warehouse.connect_locked` (read-only, no files, no settings, DuckDB or PostgreSQL): before = the current
  SQL, after = the edited one, each with its row count, its error if it fails, and the output columns the edit
  would drop.

- a `Quarantine` (its predicate, its reason) or a `ContractChange` (its thresholds) is judged on the failing
  batch as the quality agent judged the original (`tools.quality_fix.load_case` and `dry_run`): the checks
  before and after, the rows it takes out; an edited quarantine's `rows` is the count its predicate now matches.

- a `ChangeSet`: each editable member proven as above, as if it were the proposal's change; the set passes when
  every member does (the failures and notes name their member).

Other change kinds cannot be edited; they raise a `UserError` that says to reject with a reason instead.

Public names: `redry`, `PROVERS` (a prover per `pipewarden.models.EDITABLE_KINDS`), `current_model_sql`,
`SAMPLE_ROWS`. A cast names a type of `policies.column_types.COLUMN_TYPES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipewarden.errors import UnknownNameError, UserError
from pipewarden.models import EDITABLE_KINDS, CheckResult, ColumnMapping, DryRun, Proposal, SqlModelPatch
from pipewarden.policies.column_types import COLUMN_TYPES
from pipewarden.settings import get_settings
from pipewarden.store import StateStore

SAMPLE_ROWS = 5


def redry(proposal: Proposal, change: Any, *, store: StateStore | None = None) -> DryRun:
    """The dry-run of `change` (an edited `proposal.change`) on the proposal's failing batch or warehouse: the
    prover its kind is registered with in `PROVERS`."""
    if change.kind != proposal.change.kind:
        raise UserError(f"proposal {proposal.short_id} carries a {proposal.change.kind}; an edit cannot turn it "
                        f"into a {change.kind}", hint="edit the fields of the same change")
    prove = PROVERS.get(change.kind)
    if prove is None:
        raise UserError(f"a {change.kind} change cannot be edited in the inbox (editable: {', '.join(EDITABLE_KINDS)})",
                        hint="reject it with a reason; the agent's next proposal will see why")
    return prove(proposal, change, store or StateStore())


# --------------------------------------------------------------------------- change sets
def _redry_set(proposal: Proposal, change: Any, store: StateStore) -> DryRun:
    """Every member proven as if it were the proposal's change; the set passes when every member does. The
    failing checks and notes name their member; the first member's `before` and the first sample stand for the
    set."""
    old = proposal.change.changes
    if [c.kind for c in change.changes] != [c.kind for c in old]:
        raise UserError(f"proposal {proposal.short_id}'s change set has members "
                        f"{', '.join(c.kind for c in old)}; an edit keeps them and their order",
                        hint="edit each member's fields, not the set's shape")
    proofs = [(i, member, redry(proposal.model_copy(update={"change": before}), member, store=store))
              for i, (before, member) in enumerate(zip(old, change.changes, strict=True), 1)
              if member.kind in EDITABLE_KINDS]
    if not proofs:
        raise UserError("no member of this change set can be edited", hint="reject it with a reason instead")
    after = CheckResult(
        passed=all(d.after.passed for _, _, d in proofs), rows=proofs[0][2].after.rows,
        failed_rows=max(d.after.failed_rows for _, _, d in proofs),
        failed_checks=[f"{i}. {m.kind}: {c}" for i, m, d in proofs for c in d.after.failed_checks],
        schema_errors=[f"{i}. {m.kind}: {c}" for i, m, d in proofs for c in d.after.schema_errors])
    return DryRun(before=proofs[0][2].before, after=after,
                  sample=next((d.sample for _, _, d in proofs if d.sample), []),
                  metrics={f"{k}[{i}]": v for i, _, d in proofs for k, v in d.metrics.items()},
                  notes=[f"{i}. {m.kind}: {n}" for i, m, d in proofs for n in d.notes])


# --------------------------------------------------------------------------- quality rules and contracts
def _redry_on_batch(proposal: Proposal, change: Any, store: StateStore) -> DryRun:
    from pipewarden.tools.quality_fix import dry_run, load_case

    event = store.get_event(proposal.event_id)
    if not getattr(event, "load_id", None):
        raise UserError(f"proposal {proposal.short_id}'s event ({event.kind}) names no load to dry-run on",
                        hint="reject it with a reason instead of editing")
    return dry_run(load_case(event), change)


# --------------------------------------------------------------------------- column mappings
def _redry_mapping(proposal: Proposal, change: ColumnMapping, store: StateStore) -> DryRun:
    from pipewarden.policies.contract import load_contract
    from pipewarden.tools.checks import dry_check
    from pipewarden.tools.io import exists, read_table
    from pipewarden.tools.mapping import apply_mapping

    contract = load_contract(change.dataset)
    event = store.get_event(proposal.event_id)
    batch_path = getattr(event, "batch_path", None)
    if not batch_path:
        raise UserError(f"proposal {proposal.short_id}'s event ({event.kind}) names no batch to dry-run on",
                        hint="reject it with a reason instead")
    if not exists(batch_path):
        raise UserError(f"the failing batch {batch_path} is gone, so the edited mapping cannot be proved",
                        hint="re-run the batch so the agent proposes again, or reject this proposal")
    batch = read_table(batch_path)
    _check_mapping(change, contract, list(map(str, batch.columns)))
    before = dry_check(batch, contract, None)
    after = dry_check(batch, contract, change)
    healed = apply_mapping(batch, change, contract)
    sample = healed[[c for c in contract.names if c in healed.columns]].head(SAMPLE_ROWS)
    rows = sample.astype(object).where(sample.notna(), None).to_dict(orient="records")
    notes = [f"re-run for an edit of the {len(change.renames)} rename(s) and {len(change.casts)} cast(s)"]
    return DryRun(before=before, after=after, sample=rows, notes=notes)


def _check_mapping(change: ColumnMapping, contract: Any, batch_columns: list[str]) -> None:
    """Refuse an edited mapping that cannot be right, naming the field."""
    seen: dict[str, str] = {}
    for incoming, target in change.renames.items():
        if incoming not in batch_columns:
            raise UnknownNameError(f"incoming column (renames[{incoming!r}]) of the batch", incoming, batch_columns)
        if target not in contract.names:
            raise UnknownNameError(f"contract column of {contract.dataset} (renames[{incoming!r}])", target,
                                   contract.names)
        if target in seen:
            raise UserError(f"renames[{incoming!r}] and renames[{seen[target]!r}] both map to {target!r}",
                            hint="map each contract column from one incoming column")
        if target in batch_columns and target not in change.renames:
            raise UserError(f"renames[{incoming!r}] maps to {target!r}, but the batch already has a column {target!r}",
                            hint=f"map {incoming!r} to another contract column, or drop this rename")
        seen[target] = incoming
    for column, typ in change.casts.items():
        if column not in contract.names:
            raise UnknownNameError(f"contract column of {contract.dataset} (casts[{column!r}])", column, contract.names)
        if typ not in COLUMN_TYPES:
            raise UserError(f"casts[{column!r}] is {typ!r}, not a contract type",
                            hint=f"cast to one of: {', '.join(COLUMN_TYPES)}")


# --------------------------------------------------------------------------- SQL model patches
def current_model_sql(model: str, store: StateStore | None = None) -> tuple[str | None, str]:
    """The SQL a model runs now and where it comes from: its active version, else its file (None if neither)."""
    store = store or StateStore()
    active = store.active_version(f"sql:{model}")
    if active is not None and isinstance(active.content.get("sql"), str):
        return active.content["sql"], f"active version {active.number}"
    path = get_settings().models_dir / f"{model}.sql"
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    return None, "none"


def _guard(sql: str, field: str, allowed_tables: set[str] | None) -> None:
    """The same guardrails as an agent's SQL (`tools.sql_guard`): one read-only query over the project's tables
    and models, no table functions, no catalogs, no file or settings functions (None: all but the names, before
    the warehouse is opened)."""
    from pipewarden.tools.sql_guard import check_select

    errors = check_select(sql, allowed_tables=allowed_tables)
    if errors:
        raise UserError(f"{field} is refused: " + "; ".join(errors),
                        hint="write one read-only SELECT (or WITH ... SELECT) over the project's tables and models")


def _run_query(wh: Any, sql: str) -> tuple[CheckResult, list[str], list[dict[str, Any]]]:
    from pipewarden.tools.warehouse import LOCKED_TIMEOUT_S

    body = wh.transpile(sql.strip().rstrip(";"))
    try:
        sample_df = wh.read_frame(f"SELECT * FROM ({body}) AS _q LIMIT {SAMPLE_ROWS}")
        columns = [str(c) for c in sample_df.columns]
        rows = int(wh.execute(f"SELECT count(*) FROM ({body}) AS _q")[0][0])
    except Exception as exc:  # noqa: BLE001  # the database's refusal or error is the dry-run's result
        if not _is_db_error(exc):
            raise
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:500]
        if "interrupt" in message.lower() or "statement timeout" in message.lower():
            message = f"it ran longer than {LOCKED_TIMEOUT_S:g} s and was stopped ({message})"
        return CheckResult(passed=False, rows=0, failed_checks=[f"the query fails: {message}"]), [], []
    sample = sample_df.astype(object).where(sample_df.notna(), None).to_dict(orient="records")
    return CheckResult(passed=True, rows=rows), columns, sample


def _is_db_error(exc: BaseException) -> bool:
    import duckdb

    if isinstance(exc, duckdb.Error):
        return True
    try:
        import sqlalchemy as sa
    except ImportError:  # pragma: no cover - sqlalchemy ships with pipewarden
        return False
    return isinstance(exc, sa.exc.DBAPIError)


def _redry_sql(change: SqlModelPatch, store: StateStore) -> DryRun:
    from pipewarden.tools.sql_guard import model_names, project_tables
    from pipewarden.tools.warehouse import connect_locked

    settings = get_settings()
    field = f"the SQL of model {change.model!r}"
    _guard(change.sql, field, None)  # refuse what no table list can make safe before touching the warehouse
    old_sql, origin = current_model_sql(change.model, store)
    with connect_locked(settings.warehouse) as wh:  # WarehouseUnavailable (a UserError) names the URL and what to do
        _guard(change.sql, field, project_tables(wh, model_names(settings.models_dir), state_url=settings.state_url))
        if old_sql is None:
            before = CheckResult(passed=False, rows=0, schema_errors=[f"model {change.model!r} has no SQL yet"])
            old_columns: list[str] = []
        else:
            before, old_columns, _ = _run_query(wh, old_sql)
        after, new_columns, sample = _run_query(wh, change.sql)
    dropped = [c for c in old_columns if c not in new_columns] if after.passed else []
    if dropped:
        after = after.model_copy(update={
            "passed": False, "schema_errors": [f"the edit drops output column {c!r}" for c in dropped]})
    notes = [f"before: the model's current SQL ({origin}); after: the edited SQL; both run on a locked read-only "
             "connection to the warehouse (no files, no settings)"]
    return DryRun(before=before, after=after, sample=sample, notes=notes,
                  metrics={"rows_before": float(before.rows), "rows_after": float(after.rows)})


def _redry_patch(proposal: Proposal, change: SqlModelPatch, store: StateStore) -> DryRun:
    return _redry_sql(change, store)


Prover = Callable[[Proposal, Any, StateStore], DryRun]
PROVERS: dict[str, Prover] = {
    "column_mapping": _redry_mapping,
    "sql_model_patch": _redry_patch,
    "quarantine": _redry_on_batch,
    "contract_change": _redry_on_batch,
    "change_set": _redry_set,
}
"""How each editable change kind (`pipewarden.models.EDITABLE_KINDS`) is proven again after an edit."""
