"""Drafting a new dataset's contract from a sample (`pipewarden contract init NAME --from FILE|warehouse:TABLE`).

The column rules come from `tools.profile.suggest_contract`, the same profiling `pipewarden quality suggest` uses:
types in the contract vocabulary, `nullable: false` only when the sample has no null, numeric ranges from the
0.05% and 99.95% quantiles widened by 10% of their span on each side (whole numbers for integer columns, never
below zero for a column with no negative value), an `allowed` set for low-cardinality strings, a `max_length` for
other strings. What this module adds:

- reading the sample: a CSV or Parquet file (`tools.io.read_table`), or `warehouse:TABLE`, a table of the
  project's warehouse, opened read-only by `tools.warehouse.connect` (DuckDB, or any other SQLAlchemy URL read
  through `pandas.read_sql`); at most `sample_rows` rows either way (the first ones);
- key candidates: a column (integer or string), or else a pair of columns, unique and non-null in the sample.
  They become the contract's `unique` keys (`unique: [[id]]`), which both check engines enforce: every row of
  a repeated key is rejected with the reason `unique (id) (got 7)`. They are also returned in
  `ContractDraft.key_candidates`;
- the file: `contracts/NAME.yaml` under the project, with a header saying what it was drafted from (rows,
  columns, how ranges were set, what the rules would reject) and that a person should review it; never over an
  existing contract or a registered dataset without `force`;
- registration: `[datasets.NAME]` in the project file (`Project.register_dataset`, which keeps the file's
  comments), with the owner given, else the first approver with the `owner` role, else the OS user.

Indexing the new contract in the knowledge store is the caller's step (tools/ may not import knowledge/).

Public names: `ContractDraft`, `WAREHOUSE_PREFIX`, `read_sample`, `read_warehouse_table`, `key_candidates`,
`default_owner`, `draft_contract`, `contract_target`, `write_draft`.
"""

from __future__ import annotations

import getpass
import re
from contextlib import ExitStack
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from pipewarden.errors import UnknownNameError, UserError
from pipewarden.project import DatasetConfig, check_dataset_name
from pipewarden.settings import get_settings
from pipewarden.tools.profile import ColumnStats, contract_yaml, profile_frame, suggest_contract

WAREHOUSE_PREFIX = "warehouse:"
DEFAULT_SAMPLE_ROWS = 100_000
MAX_PAIR_COLUMNS = 12  # pairs are looked for among at most this many columns (66 pairs)
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class ContractDraft(BaseModel):
    """A drafted contract: its YAML text and what it was drafted from."""

    dataset: str
    source: str = Field(description="What the sample was read from: a file path or warehouse:TABLE.")
    rows: int = Field(description="Rows in the sample.")
    columns: list[str]
    owner: str
    max_failure_rate: float
    key_candidates: list[list[str]] = Field(default_factory=list)
    rows_rejected: int = Field(description="Sample rows the drafted column rules would reject.")
    notes: list[str] = Field(default_factory=list)
    yaml: str
    path: str | None = Field(default=None, description="Where it was written (after `write_draft`).")


# --------------------------------------------------------------------------- reading the sample
def read_sample(source: str, *, sample_rows: int = DEFAULT_SAMPLE_ROWS) -> pd.DataFrame:
    """The sample: `warehouse:TABLE` reads a warehouse table, anything else is a CSV or Parquet file.
    At most `sample_rows` rows (the first ones). Errors name the file or table and say what to do."""
    from pipewarden.tools.io import read_table

    if sample_rows < 1:
        raise UserError(f"--sample-rows {sample_rows} is not a positive number of rows", hint="use e.g. 100000")
    if source.startswith(WAREHOUSE_PREFIX):
        df = read_warehouse_table(source.removeprefix(WAREHOUSE_PREFIX), limit=sample_rows)
    else:
        df = read_table(source).head(sample_rows)
    if df.empty:
        raise UserError(f"{source} has no rows to draft a contract from", hint="draft from a sample that holds data")
    return df


def read_warehouse_table(table: str, *, limit: int = DEFAULT_SAMPLE_ROWS, url: str | None = None) -> pd.DataFrame:
    """The first `limit` rows of `table` (`name` or `schema.name`) in the warehouse (default: the project's).
    An unknown table fails with the tables present and a did-you-mean."""
    if not _TABLE_NAME.match(table):
        raise UserError(f"warehouse table {table!r} is not a table name",
                        hint="write --from warehouse:TABLE or warehouse:SCHEMA.TABLE (letters, digits, '_')")
    from pipewarden.tools.warehouse import WarehouseUnavailable, connect, quote_ident, safe_url

    with ExitStack() as stack:
        try:
            wh = stack.enter_context(connect(url, read_only=True))
        except WarehouseUnavailable as exc:
            exc.hint = f"{exc.hint}; or draft from a file with --from FILE"
            raise
        sql = f"SELECT * FROM {'.'.join(quote_ident(p, wh.dialect) for p in table.split('.'))} LIMIT {int(limit)}"
        if wh.is_duckdb:
            known = [r[0] if r[1] == "main" else f"{r[1]}.{r[0]}" for r in wh.execute(
                "SELECT table_name, schema_name FROM duckdb_tables() UNION ALL "
                "SELECT view_name, schema_name FROM duckdb_views() WHERE NOT internal")]
            _known_table(table, known, wh.url.removeprefix("duckdb:///"))
            return wh.duckdb.execute(sql).df()
        import sqlalchemy as sa

        inspector = sa.inspect(wh.engine)
        known = list(inspector.get_table_names()) + list(inspector.get_view_names())
        if "." in table:
            schema = table.split(".", 1)[0]
            known += [f"{schema}.{t}" for t in inspector.get_table_names(schema=schema)]
        _known_table(table, known, safe_url(wh.url))
        with wh.engine.connect() as conn:  # pandas' reader: its dtypes (numerics as floats), as before
            return pd.read_sql(sa.text(sql), conn)


def _known_table(table: str, known: list[str], where: object) -> None:
    if table not in known:
        err = UnknownNameError(f"table in the warehouse {where}", table, known)
        err.hint = err.hint or "list the tables with your SQL client, or draft from a file with --from FILE"
        raise err


# --------------------------------------------------------------------------- drafting
def key_candidates(df: pd.DataFrame, stats: list[ColumnStats] | None = None) -> list[list[str]]:
    """Columns that could be the dataset's key: each integer or string column unique and non-null in the sample;
    when there is none, each pair of integer, string or timestamp columns that is (floats never are keys)."""
    stats = stats if stats is not None else profile_frame(df)
    if len(df) < 2:
        return []
    singles = [[s.name] for s in stats if s.unique and s.type in ("integer", "string")]
    if singles:
        return singles
    usable = [s.name for s in stats if s.nulls == 0 and s.type in ("integer", "string", "timestamp")
              and 1 < s.distinct < s.rows][:MAX_PAIR_COLUMNS]
    return [[a, b] for a, b in combinations(usable, 2) if not df.duplicated(subset=[a, b]).any()]


def default_owner(dataset: str) -> str:
    """The owner of a dataset already registered in the project file; else the first approver with the `owner`
    role in approvers.yaml (one whose datasets cover `dataset` first); else the OS user."""
    from pipewarden.policies.approvers import Approvers

    settings = get_settings()
    registered = settings.project_config.datasets.get(dataset)
    if registered is not None:
        return registered.owner
    path = settings.approvers_path
    if path.is_file():
        owners = [a for a in Approvers.load(path).all() if "owner" in a.roles]
        covering = [a for a in owners if a.covers(dataset)]
        if covering or owners:
            return (covering or owners)[0].name
    return getpass.getuser()


def draft_contract(
    name: str, df: pd.DataFrame, *, source: str, owner: str, max_failure_rate: float = 0.05,
) -> ContractDraft:
    """Draft the contract of dataset `name` from the sample `df` (read from `source`). Nothing is written."""
    check_dataset_name(name)
    if not 0 <= max_failure_rate <= 1:
        raise UserError(f"--max-failure-rate {max_failure_rate} is not a share between 0 and 1",
                        hint="use e.g. 0.05 (5% of a batch's rows may fail)")
    suggestion = suggest_contract(df, name)
    suggestion.contract.update(owner=owner, max_failure_rate=max_failure_rate)
    keys = key_candidates(df)
    columns = [c["name"] for c in suggestion.contract["columns"]]
    header = [
        f"# Data contract for {name}, drafted by `pipewarden contract init` from {source}",
        f"# ({len(df)} rows; columns: {', '.join(columns)}).",
        "# A person should review it before it guards real batches: check each type, nullability, range and",
        "# allowed set, add descriptions, and bump `version` on every change.",
        "# nullable: true only where the sample has nulls. min/max: the sample's 0.05% and 99.95% quantiles, widened",
        "# by 10% of that span on each side (whole numbers for integer columns; never below 0 for a column with no",
        "# negative value). allowed: strings with at most 20 distinct values (and 20x fewer than the rows).",
        f"# These rules reject {suggestion.rows_rejected} of the sample's rows. A batch halts when more than "
        f"{max_failure_rate * 100:g}% of its",
        "# rows are rejected (max_failure_rate).",
        "# unique: key candidates, each a column or a pair unique and non-null in the sample; the checks reject",
        "# every row of a repeated key. Remove a key that only happens to be unique in this sample.",
    ]
    header += [f"# note: {n}" for n in suggestion.notes]
    body = [line for line in contract_yaml(suggestion, source=source).splitlines() if not line.startswith("#")]
    if keys:
        body.append(f"unique: {_flow(keys)}")
    return ContractDraft(
        dataset=name, source=source, rows=len(df), columns=columns, owner=owner, max_failure_rate=max_failure_rate,
        key_candidates=keys, rows_rejected=suggestion.rows_rejected, notes=suggestion.notes,
        yaml="\n".join(header + body) + "\n",
    )


def _flow(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=100_000).strip()


def contract_target(name: str, *, force: bool = False) -> Path:
    """Where the contract of `name` goes (`contracts/NAME.yaml`); refuses an existing contract or a registered
    dataset unless `force`. Call it before reading the sample, so a refusal costs nothing."""
    check_dataset_name(name)
    project = get_settings().project_config
    target = project.contracts_dir / f"{name}.yaml"
    if force:
        return target
    if target.exists():
        raise UserError(f"{target} already exists; not overwriting it",
                        hint=f"pass --force to replace it, or review it with `pipewarden quality suggest {name}`")
    if name in project.datasets:
        raise UserError(f"dataset {name!r} is already registered in {project.file} "
                        f"(contract {project.datasets[name].contract})",
                        hint="pass --force to draft a new contract for it at contracts/NAME.yaml")
    return target


def write_draft(draft: ContractDraft, *, force: bool = False) -> Path:
    """Write `contracts/NAME.yaml` and register the dataset in the project file with the draft's owner.

    A dataset already registered (replaced with `force`) keeps its other settings (source, reference, description)."""
    import yaml

    from pipewarden.policies.contract import Contract

    target = contract_target(draft.dataset, force=force)
    project = get_settings().project_config
    Contract.model_validate(yaml.safe_load(draft.yaml))  # never write a contract that would not load
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(draft.yaml, encoding="utf-8")
    tmp.replace(target)
    rel = target.relative_to(project.root).as_posix()
    old = project.datasets.get(draft.dataset)
    if old is not None:
        config = old.model_copy(update={"contract": rel, "owner": draft.owner})
    else:
        config = DatasetConfig(owner=draft.owner, contract=rel)
    project.register_dataset(draft.dataset, config)
    get_settings.cache_clear()  # the project file changed: the next reader sees the new dataset
    draft.path = str(target)
    return target
