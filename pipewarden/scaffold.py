"""`pipewarden init`: scaffold a project folder a team then owns and edits.

Writes the project file, `contracts/`, `models/`, `approvers.yaml`, `.env.example` and a `.gitignore` for the
state folder. It never overwrites: an existing project file is an error, other existing files are kept and
reported as kept.

Public names: `init_project`, `ScaffoldReport`.
"""

from __future__ import annotations

import getpass
import re
from pathlib import Path

from pydantic import BaseModel, Field

from pipewarden.errors import UserError
from pipewarden.project import PROJECT_FILES, load_project

PROJECT_TOML = """\
# A pipewarden project. Every `pipewarden` command finds this file from the working folder upward
# (--project DIR or PIPEWARDEN_PROJECT override). Paths are relative to this file; PIPEWARDEN_* environment
# variables override any setting here (see .env.example).
name = "{name}"
approvers = "approvers.yaml"     # people, roles and personal tokens
policies = "policies"            # optional overrides of the default policy files (quality.yaml, cost.yaml, ...)

[warehouse]
# Any SQLAlchemy URL. Unset: DuckDB in .pipewarden/warehouse.duckdb.
# url = "postgresql+psycopg://user@host:5432/warehouse"

[models]
path = "models"                  # SQL models, one SELECT per *.sql file; `pipewarden build` runs them in order
dialect = "duckdb"               # the sqlglot dialect they are written in (transpiled to the warehouse's)

[storage]
# Where batches land: a folder or any fsspec URL. Unset: .pipewarden/landing.
# uri = "s3://my-bucket/pipewarden/landing"

[rerun]
# How a halted batch re-runs after its fix is approved: "auto" re-runs the Prefect deployment the batch came
# from (same parameters) and otherwise re-checks the landed batch; "deployment" or "recheck" force one way.
mode = "auto"

# Datasets are added by `pipewarden contract init NAME --from FILE`, or by hand:
# [datasets.orders]
# owner = "{user}"
# contract = "contracts/orders.yaml"
"""

APPROVERS_YAML = """\
# Who may approve what: one entry per person (roles: owner, steward, ml_owner, engineer, reporter).
#   datasets: the datasets the roles apply to; shell patterns, "*" for all.
# Give someone a personal token with `pipewarden approvers token NAME` (printed once, stored hashed).
approvers:
  - name: {user}
    display_name: {user}
    roles: [owner]
    datasets: ["*"]
"""

ENV_EXAMPLE = """\
# Copy to .env and fill in what you use. Every setting is optional; the defaults are embedded parts.
# PIPEWARDEN_DATABASE_URL=postgresql+psycopg://user@host:5432/pipewarden   # state DB (default: SQLite in .pipewarden)
# PIPEWARDEN_WAREHOUSE_URL=postgresql+psycopg://user@host:5432/warehouse   # overrides [warehouse] url
# PIPEWARDEN_STORAGE_URI=s3://my-bucket/pipewarden/landing                  # overrides [storage] uri
# PIPEWARDEN_OPENAI_API_KEY=                                                # unset: the offline planner decides
# PIPEWARDEN_OPENAI_BASE_URL=                                               # any OpenAI-compatible endpoint
# PIPEWARDEN_SLACK_BOT_TOKEN=
# PIPEWARDEN_SLACK_SIGNING_SECRET=
# PREFECT_API_URL=http://127.0.0.1:4200/api                                 # a Prefect server (default: local)
"""

MODELS_README = """\
# SQL models

One SELECT per `*.sql` file; the file name is the model's name and `pipewarden build` materialises it as a table of
that name in the warehouse, in dependency order (read from the SQL with sqlglot). A dataset's accepted rows are in
the table `raw_<dataset>`.
"""

GITIGNORE = ".pipewarden/\n.env\n"


class ScaffoldReport(BaseModel):
    folder: Path
    project_file: Path
    written: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list, description="Files that existed and were left as they were.")


def init_project(folder: Path, *, name: str | None = None, user: str | None = None) -> ScaffoldReport:
    """Scaffold a project in `folder` (made if missing). Refuses when a project file is already there."""
    folder = folder.expanduser().resolve()
    existing = [n for n in PROJECT_FILES if (folder / n).exists()]
    if existing:
        raise UserError(f"{folder / existing[0]} already exists", hint="this folder is a project already; edit that file")
    folder.mkdir(parents=True, exist_ok=True)
    name = name or folder.name
    user = user or _login()
    report = ScaffoldReport(folder=folder, project_file=folder / "pipewarden.toml")
    files = {
        "pipewarden.toml": PROJECT_TOML.format(name=name.replace('"', ""), user=user),
        "approvers.yaml": APPROVERS_YAML.format(user=user),
        ".env.example": ENV_EXAMPLE,
        "models/README.md": MODELS_README,
        "contracts/.gitkeep": "",
        ".gitignore": GITIGNORE,
    }
    for rel, text in files.items():
        path = folder / rel
        if path.exists():
            report.kept.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        report.written.append(rel)
    load_project(folder)  # what we wrote must load
    return report


def _login() -> str:
    """The OS user as an approver name (letters, digits, '-', '_', '.')."""
    try:
        raw = getpass.getuser()
    except Exception:  # no user database entry (some containers): fall back to a neutral name
        raw = "owner"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw) or "owner"
