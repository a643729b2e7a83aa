"""Data contracts: one YAML file per dataset under `contracts/`, loaded into typed models.

A contract names each column with its type (the vocabulary of `policies.column_types`, shared by every folder;
`ColumnType`, `observed_type` and `compatible` are importable from here too), whether it may be null, and its
bounds; it says who owns the dataset and what share of a batch's rows may fail before the batch halts.
`schema_diff` compares a batch's columns with the contract.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipewarden.errors import ConfigError, UnknownNameError
from pipewarden.events import ColumnSpec, TypeChange
from pipewarden.policies.column_types import ColumnType, compatible, observed_type
from pipewarden.project import DATASET_NAME, require_dataset
from pipewarden.settings import get_settings

FLATTEN_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)?$")


class ColumnContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_length: int | None = None
    description: str = ""


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    dataset: str
    version: int = 1
    description: str = ""
    source: str = ""
    owner: str
    stewards: list[str] = Field(default_factory=list)
    allowed_roles: list[str] = Field(default_factory=lambda: ["owner", "steward", "engineer"])
    max_failure_rate: float = Field(0.05, ge=0, le=1, description="Share of rows that may fail before halting.")
    strict: bool = Field(False, description="Columns not in the contract are drift (True) or noted and kept out.")
    columns: list[ColumnContract]
    unique: list[list[str]] = Field(
        default_factory=list,
        description="Keys: each a column or a set of columns whose values no two rows share (nulls are not compared).",
    )
    flatten: dict[str, str] = Field(
        default_factory=dict,
        description="Struct (nested) columns read as one column per field: `{address: address_}` reads address.city "
        "as address_city (a struct inside joins with `_`; an empty prefix keeps the field's own name). A nested "
        "column not listed here is refused.",
    )
    path: str = ""

    @model_validator(mode="after")
    def _keys_name_columns(self) -> Contract:
        names = {c.name for c in self.columns}
        for key in self.unique:
            missing = [k for k in key if k not in names]
            if not key or missing:
                raise ValueError(f"unique key {key} names no column or columns not in the contract: {missing}")
        return self

    @model_validator(mode="after")
    def _flatten_prefixes_are_names(self) -> Contract:
        for column, prefix in self.flatten.items():
            if not column or not FLATTEN_PREFIX.match(prefix):
                raise ValueError(f"flatten {column!r}: {prefix!r} is not a column name prefix "
                                 "(letters, digits and '_', e.g. 'address_', or '' for the fields' own names)")
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnContract:
        for c in self.columns:
            if c.name == name:
                return c
        raise UnknownNameError(f"column of {self.dataset}", name, self.names)

    @property
    def version_tag(self) -> str:
        return f"{self.dataset}@v{self.version}"

    def fingerprint(self) -> str:
        return schema_fingerprint({c.name: c.type for c in self.columns})


def schema_fingerprint(columns: dict[str, str]) -> str:
    """A short stable hash of column names and types, in order."""
    body = json.dumps(list(columns.items()), separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def contracts_dir() -> Path:
    return get_settings().contracts_dir


def list_contracts(directory: Path | None = None) -> list[str]:
    """The project's datasets (registered in the project file or with a contract in `contracts/`)."""
    settings = get_settings()
    if directory is None and settings.has_project:
        return settings.project_config.dataset_names()
    d = directory or contracts_dir()
    return sorted(p.stem for p in d.glob("*.yaml") if DATASET_NAME.match(p.stem))


def known_dataset(dataset: str, directory: Path | None = None) -> str:
    """`dataset` when it is one of the project's datasets (`list_contracts`), else an error naming the value and
    listing them (`pipewarden.project.require_dataset`): the one check every dataset name from outside passes
    before it becomes a contract path, a landing folder or a table name."""
    return require_dataset(dataset, list_contracts(directory))


def contract_path(dataset: str, directory: Path | None = None) -> Path:
    """The contract file of `dataset`. The name must be one of the project's datasets (`known_dataset`: an
    identifier, never a path); an unknown dataset fails with the known names and a did-you-mean."""
    settings = get_settings()
    if directory is None and settings.has_project:
        return settings.project_config.contract_path(dataset)
    d = directory or contracts_dir()
    known_dataset(dataset, d)
    path = d / f"{dataset}.yaml"
    if not path.exists():
        raise UnknownNameError("dataset", dataset, list_contracts(d))
    return path


def load_contract(dataset: str, directory: Path | None = None) -> Contract:
    """Load the contract of `dataset` (see `contract_path`). A file whose text was parsed before gives the same
    (frozen) contract again without parsing: one guard reads the contract four times, at about 10 ms of YAML each."""
    path = contract_path(dataset, directory)
    return _parse_contract(str(path), path.read_text(encoding="utf-8"))


@lru_cache(maxsize=64)
def _parse_contract(path: str, text: str) -> Contract:
    """The contract `text` read from `path` (both key the cache: the text, not a modification time, says it
    changed)."""
    try:
        raw = yaml.safe_load(text)
        return Contract.model_validate({**raw, "path": path})
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid contract: {exc}", hint="compare it with one `pipewarden contract init` writes") from exc


class SchemaDiff(BaseModel):
    added: list[ColumnSpec] = Field(default_factory=list)
    dropped: list[ColumnSpec] = Field(default_factory=list)
    retyped: list[TypeChange] = Field(default_factory=list)
    extra: list[ColumnSpec] = Field(
        default_factory=list,
        description="Columns not in a non-strict contract when nothing else drifted: noted, kept out, not drift.",
    )

    def notes(self) -> list[str]:
        return [f"column {c.name!r} ({c.type}) is not in the contract; kept out of the accepted rows" for c in self.extra]

    @property
    def clean(self) -> bool:
        return not (self.added or self.dropped or self.retyped)

    def describe(self) -> list[str]:
        out = [f"column {c.name!r} ({c.type}) is not in the contract" for c in self.added]
        out += [f"contract column {c.name!r} ({c.type}) is missing" for c in self.dropped]
        out += [f"column {t.column!r} is {t.observed}, the contract says {t.expected}" for t in self.retyped]
        return out


def schema_diff(contract: Contract, frame: Any, sample_size: int = 5, ignore_prefix: str = "_") -> SchemaDiff:
    """Compare a DataFrame's columns with the contract. Columns starting with `_` (load metadata) are ignored."""
    cols = [c for c in frame.columns if not str(c).startswith(ignore_prefix)]
    diff = SchemaDiff()
    for name in cols:
        obs = observed_type(frame[name])
        if name not in contract.names:
            diff.added.append(ColumnSpec(name=name, type=obs, samples=_samples(frame[name], sample_size)))
        elif frame[name].notna().any() and not compatible(contract.column(name).type, obs):
            # an all-null column has no type to disagree with; its nulls meet the row checks instead
            diff.retyped.append(TypeChange(column=name, expected=contract.column(name).type, observed=obs))
        elif contract.column(name).type == "timestamp" and obs == "string" and not _iso_dates(frame[name]):
            # text dates in another format ('03/01/2013 05:00') are a type change, not a row-by-row failure
            diff.retyped.append(TypeChange(column=name, expected="timestamp", observed="string"))
    for c in contract.columns:
        if c.name not in cols:
            diff.dropped.append(ColumnSpec(name=c.name, type=c.type))
    if diff.added and not contract.strict and not (diff.dropped or diff.retyped):
        # only new columns: a non-strict contract notes them and keeps them out (a rename would also drop one)
        diff.extra, diff.added = diff.added, []
    return diff


def _iso_dates(series: Any, probe: int = 200, share: float = 0.9) -> bool:
    """Whether (nearly) all of the first `probe` non-null values are ISO 8601 dates."""
    import pandas as pd

    head = series.dropna().head(probe)
    if not len(head):
        return True
    parsed = pd.to_datetime(head.astype("str").str.strip(), errors="coerce", utc=True, format="ISO8601")
    return bool(parsed.notna().mean() >= share)


def _samples(series: Any, n: int) -> list[Any]:
    vals = series.dropna().head(n).tolist()
    return [v.item() if hasattr(v, "item") else v for v in vals]
