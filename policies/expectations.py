"""A contract's column rules as checks: a typed list of `CheckSpec`, and the great-expectations suite built from it.

`check_specs(contract)` is the pipeline-as-data form (no GX import): one spec per rule, in contract order,
each with a readable label ("arr_delay: not null") that row reasons and failed-check lines reuse.
`build_suite(contract)` turns the same specs into a GX 1.x `ExpectationSuite`; each expectation carries its
spec's kind and label in `meta`, so a validation result maps back to the rule that produced it. Column types
are not an expectation: `policies.contract.schema_diff` checks them before any row is looked at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from pipewarden.policies.column_types import NUMERIC
from pipewarden.policies.contract import Contract

if TYPE_CHECKING:  # pragma: no cover - typing only; great_expectations loads lazily
    from great_expectations import ExpectationSuite

CheckKind = Literal["exists", "not_null", "between", "in_set", "length", "unique"]

# The GX 1.x expectation class for each kind of check.
GX_EXPECTATIONS: dict[str, str] = {
    "exists": "ExpectColumnToExist",
    "not_null": "ExpectColumnValuesToNotBeNull",
    "between": "ExpectColumnValuesToBeBetween",
    "in_set": "ExpectColumnValuesToBeInSet",
    "length": "ExpectColumnValueLengthsToBeBetween",
    "unique": "ExpectColumnValuesToBeUnique",  # a key of two or more columns: ExpectCompoundColumnsToBeUnique
}


class CheckSpec(BaseModel):
    """One contract rule on one column. `exists` is table-level; every other kind judges rows.

    Nulls pass every row rule except `not_null` (as in GX): a nullable column's nulls are allowed.
    """

    model_config = ConfigDict(frozen=True)
    kind: CheckKind
    column: str
    min_value: float | None = None
    max_value: float | None = None
    values: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    """`unique`: the key's columns (`column` is the first)."""
    label: str

    @property
    def row_level(self) -> bool:
        return self.kind != "exists"

    @property
    def gx_expectation(self) -> str:
        """The GX 1.x expectation class of this check."""
        return "ExpectCompoundColumnsToBeUnique" if len(self.columns) > 1 else GX_EXPECTATIONS[self.kind]

    def gx_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of this check's GX expectation."""
        if len(self.columns) > 1:
            return {"column_list": list(self.columns), "ignore_row_if": "any_value_is_missing"}
        kw: dict[str, Any] = {"column": self.column}
        if self.kind in ("between", "length"):
            if self.min_value is not None:
                kw["min_value"] = _num(self.min_value)
            if self.max_value is not None:
                kw["max_value"] = _num(self.max_value)
        elif self.kind == "in_set":
            kw["value_set"] = list(self.values)
        return kw


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def _bounds_label(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f">= {_num(lo)}"
    return f"<= {_num(hi)}"  # type: ignore[arg-type]


def check_specs(contract: Contract) -> tuple[CheckSpec, ...]:
    """Every rule of the contract as a check, column by column: exists, not null, bounds, allowed set, length; then
    each unique key."""
    specs: list[CheckSpec] = []
    for col in contract.columns:
        name = col.name
        specs.append(CheckSpec(kind="exists", column=name, label=f"{name}: exists"))
        if not col.nullable:
            specs.append(CheckSpec(kind="not_null", column=name, label=f"{name}: not null"))
        if (col.min is not None or col.max is not None) and col.type in NUMERIC:
            specs.append(CheckSpec(kind="between", column=name, min_value=col.min, max_value=col.max,
                                   label=f"{name}: {_bounds_label(col.min, col.max)}"))
        if col.allowed:
            specs.append(CheckSpec(kind="in_set", column=name, values=tuple(col.allowed),
                                   label=f"{name}: in {{{', '.join(col.allowed)}}}"))
        if col.max_length is not None and col.type == "string":
            specs.append(CheckSpec(kind="length", column=name, max_value=col.max_length,
                                   label=f"{name}: length <= {col.max_length}"))
    for key in contract.unique:
        specs.append(CheckSpec(kind="unique", column=key[0], columns=tuple(key), label=f"unique ({', '.join(key)})"))
    return tuple(specs)


def build_suite(contract: Contract, specs: tuple[CheckSpec, ...] | None = None) -> ExpectationSuite:
    """The contract's GX 1.x ExpectationSuite, named after `contract.version_tag`.

    Each expectation's `meta` holds `{"check": kind, "label": label}` of the spec it came from.
    Pass `specs` to build a suite of a subset of the contract's checks.
    """
    import great_expectations as gx

    expectations = [
        getattr(gx.expectations, spec.gx_expectation)(
            **spec.gx_kwargs(), meta={"check": spec.kind, "label": spec.label}
        )
        for spec in (specs if specs is not None else check_specs(contract))
    ]
    # Passed to the constructor, the expectations need no Data Context (add_expectation would look one up).
    return gx.ExpectationSuite(name=contract.version_tag, expectations=expectations,
                               meta={"contract": contract.version_tag})
