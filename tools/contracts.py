"""The active data contract of a dataset, and drafting new contract versions.

A dataset's contract is its YAML file (`contracts/<dataset>.yaml`) until an approved `ContractChange`
activates a version of `contract:<dataset>` in the state DB; from then on that version is the contract every
stage and agent holds the data to (rollback re-activates the previous version, or the file again).

`contract_without(contract, columns)` drafts the loosened contract a dropped column needs (the column leaves the
contract, the version goes up by one); `contract_change_for` wraps it as the `ContractChange` a proposal carries.
Reading is side-effect free; activating a version goes through `tools.apply` with an approved Decision.

Public names: `active_contract`, `active_contract_version`, `contract_from_dict`, `contract_to_dict`,
`contract_without`, `contract_change_for`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipewarden.errors import ConfigError, UnknownNameError
from pipewarden.models import ContractChange
from pipewarden.policies.contract import Contract, load_contract
from pipewarden.store import StateStore


def contract_to_dict(contract: Contract) -> dict[str, Any]:
    """The contract as its YAML file holds it (every field but `path`)."""
    return contract.model_dump(mode="json", exclude={"path"})


def contract_from_dict(data: dict[str, Any], *, where: str) -> Contract:
    """A Contract from a dict (a `ContractChange.contract`); `where` names its origin in the error."""
    try:
        return Contract.model_validate({**data, "path": where})
    except ValidationError as exc:
        raise ConfigError(f"{where}: not a valid contract: {exc}",
                          hint="roll the contract change back, or fix it and approve a new one") from exc


def active_contract_version(dataset: str, store: StateStore | None = None) -> int | None:
    """The number of the active `contract:<dataset>` version in the state DB, or None (the file is in force)."""
    version = (store or StateStore()).active_version(f"contract:{dataset}")
    return None if version is None else version.number


def active_contract(dataset: str, store: StateStore | None = None) -> Contract:
    """The contract in force for `dataset`: the active `contract:<dataset>` version, else its YAML file.

    Raises UnknownNameError for a dataset with no contract file (even when a version exists: the file is the
    dataset's registration) and ConfigError for a stored version that does not validate.
    """
    base = load_contract(dataset)
    version = (store or StateStore()).active_version(f"contract:{dataset}")
    if version is None:
        return base
    data = version.content.get("contract")
    if not isinstance(data, dict):
        raise ConfigError(f"contract:{dataset} v{version.number} holds no contract",
                          hint="roll it back with the proposal that activated it")
    return contract_from_dict(data, where=f"contract:{dataset} v{version.number}")


def contract_without(contract: Contract, columns: list[str]) -> dict[str, Any]:
    """The contract as a dict with `columns` removed and the version bumped (what a dropped column needs)."""
    unknown = [c for c in columns if c not in contract.names]
    if unknown:
        raise UnknownNameError(f"column of {contract.dataset}", unknown[0], contract.names)
    out = contract_to_dict(contract)
    out["version"] = contract.version + 1
    out["columns"] = [c for c in out["columns"] if c["name"] not in set(columns)]
    if out.get("unique"):  # a key that loses a column is no key any more (a subset of it would be stricter): drop it
        out["unique"] = [key for key in out["unique"] if not set(key) & set(columns)]
    if not out["columns"]:
        raise ConfigError(f"removing {columns} would leave {contract.version_tag} with no column",
                          hint="a batch that lost every column is a broken feed: ask for a re-ingest")
    return out


def contract_change_for(contract: Contract, dropped: list[str], reason: str = "") -> ContractChange:
    """The loosening `ContractChange` that accepts batches without the `dropped` columns (high risk)."""
    new = contract_without(contract, dropped)
    lost_keys = [key for key in contract.unique if set(key) & set(dropped)]
    summary = (f"{contract.version_tag} -> v{new['version']}: remove " + ", ".join(repr(c) for c in dropped)
               + " (the feed no longer sends " + ("it" if len(dropped) == 1 else "them") + ")"
               + "".join(f", and the unique key {key} it was part of" for key in lost_keys)
               + (f"; {reason}" if reason else ""))
    return ContractChange(dataset=contract.dataset, contract=new, summary=summary, loosens=True)
