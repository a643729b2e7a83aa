"""Where a policy file is read from: the project's `policies/` folder first, else the package's default.

The package ships defaults for the threshold files (`quality.yaml`, `cost.yaml`, `retrain.yaml`, `slack.yaml`);
a project overrides one by placing a file of the same name in its policies folder (`policies = "..."` in the
project file). Contracts, approvers and runbooks are the project's own and have no package default.
"""

from __future__ import annotations

from pathlib import Path

from pipewarden.settings import get_settings

PACKAGE_DEFAULTS = Path(__file__).resolve().parent


def policy_file(name: str) -> Path:
    """The project's `<policies>/<name>` when it exists, else the package's default `<name>`."""
    own = get_settings().policies_dir / name
    return own if own.is_file() else PACKAGE_DEFAULTS / name
