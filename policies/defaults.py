"""Where a policy file is read from: the project's `policies/` folder first, else the package's default.

The package ships defaults for the threshold files (`quality.yaml`, `cost.yaml`, `retrain.yaml`, `slack.yaml`);
a project overrides one by placing a file of the same name in its policies folder (`policies = "..."` in the
project file). Contracts, approvers and runbooks are the project's own and have no package default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from pipewarden.errors import ConfigError
from pipewarden.settings import get_settings

M = TypeVar("M", bound=BaseModel)

PACKAGE_DEFAULTS = Path(__file__).resolve().parent


def policy_file(name: str) -> Path:
    """The project's `<policies>/<name>` when it exists, else the package's default `<name>`."""
    own = get_settings().policies_dir / name
    return own if own.is_file() else PACKAGE_DEFAULTS / name


def read_policy(path: Path, model: type[M], *, hint: str) -> M:
    """The policy file at `path` as `model` (an empty file is the model's defaults); a ConfigError naming the file
    and the first bad field, with `hint` saying what the file holds."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", hint="fix the file's syntax") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: field {where!r}: {first['msg']}", hint=hint) from exc
