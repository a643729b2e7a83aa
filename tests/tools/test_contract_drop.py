"""Dropping a column from a contract (the schema-drift agent's loosening change) keeps the contract valid: a unique
key that named the dropped column goes with it, and the change says so."""

from __future__ import annotations

from pipewarden.tools.contracts import contract_change_for, contract_from_dict


def _customers() -> object:
    return contract_from_dict({
        "dataset": "customers", "version": 1, "owner": "crm-team",
        "columns": [{"name": "id", "type": "integer"}, {"name": "email", "type": "string"},
                    {"name": "tier", "type": "string"}],
        "unique": [["id"], ["email", "tier"]],
    }, where="test")


def test_dropping_a_key_column_drops_its_key_and_the_new_contract_loads() -> None:
    change = contract_change_for(_customers(), ["email"])  # type: ignore[arg-type]
    new = contract_from_dict(change.contract, where="the proposed v2")  # raised ConfigError before: key named email
    assert [c.name for c in new.columns] == ["id", "tier"]
    assert new.unique == [["id"]] and new.version == 2
    assert "unique key ['email', 'tier']" in change.summary


def test_dropping_a_column_in_no_key_keeps_every_key() -> None:
    contract = contract_from_dict({**_customers().model_dump(exclude={"path"}),  # type: ignore[attr-defined]
                                   "columns": [{"name": "id", "type": "integer"}, {"name": "email", "type": "string"},
                                               {"name": "tier", "type": "string"}, {"name": "note", "type": "string"}]},
                                  where="test")
    change = contract_change_for(contract, ["note"])
    new = contract_from_dict(change.contract, where="the proposed v2")
    assert new.unique == [["id"], ["email", "tier"]] and "unique key" not in change.summary
