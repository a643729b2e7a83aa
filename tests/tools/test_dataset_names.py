"""A dataset name from outside is one of the project's datasets, never a path (issue 11): `check --dataset
/abs/path` and `--dataset ../approvers` used to load any YAML as a contract. One validator
(`policies.contract.known_dataset`, over `pipewarden.project.require_dataset`) names the value and lists the
project's datasets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipewarden.errors import UnknownNameError, UserError
from pipewarden.project import require_dataset
from tests.conftest import CliResult

DATASETS = "airlines, airports, flights, planes, weather"


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    path = tmp_path / "b.csv"
    path.write_text("year,month\n2013,1\n")
    return path


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(("value", "did_you_mean"), [
    ("{project}/contracts/flights", "did you mean 'flights'?"),
    ("{project}/contracts/flights.yaml", "did you mean 'flights'?"),
    ("../approvers", None),
    ("contracts/../approvers", None),
])
def test_a_path_as_dataset_is_refused_naming_it_and_listing_the_datasets(
    pw: Callable[..., CliResult], pw_project: Path, pw_home: Path, batch: Path, command: str, value: str,
    did_you_mean: str | None,
) -> None:
    value = value.format(project=pw_project)
    args = ("check", batch, "--dataset", value) if command == "check" else ("run", "--file", batch, "--dataset", value)
    res = pw(*args)
    assert res.code != 0
    assert f"dataset '{value}' is not a dataset name (the project's datasets: {DATASETS})" in res.err_text
    assert "never a path" in res.err_text
    if did_you_mean:
        assert did_you_mean in res.err_text
    assert "not a valid contract" not in res.err_text  # approvers.yaml was never parsed as a contract
    assert not (pw_home / "landing").exists()  # nothing landed


def test_an_identifier_that_is_not_a_dataset_is_unknown_with_a_did_you_mean(
    pw: Callable[..., CliResult], batch: Path
) -> None:
    for name in ("approvers", "flightz"):
        res = pw("check", batch, "--dataset", name)
        assert res.code != 0 and f"unknown dataset '{name}' (known: {DATASETS})" in res.err_text
    assert "did you mean 'flights'?" in pw("check", batch, "--dataset", "flightz").err_text


def test_the_validator_alone() -> None:
    assert require_dataset("flights", ["flights", "planes"]) == "flights"
    with pytest.raises(UnknownNameError):
        require_dataset("approvers", ["flights"])
    for bad in ("", "/etc/passwd", "..", "a b", "x" * 64, "flights.yaml", "C:\\data\\flights"):
        with pytest.raises(UserError, match="is not a dataset name"):
            require_dataset(bad, ["flights"])
