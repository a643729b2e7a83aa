"""Settings, read from `PIPEWARDEN_*` environment variables (and a `.env` file in the working folder).

Every store defaults to an embedded part under `home` (SQLite, DuckDB, Qdrant local mode, MLflow on SQLite);
a URL setting moves it to a server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPEWARDEN_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".pipewarden"), description="Folder for every embedded store.")
    database_url: str | None = Field(
        default=None, description="State DB (outbox, proposals, versions, audit). Default: SQLite in home."
    )
    policies_dir: Path = Field(default=REPO_ROOT / "policies", description="Contracts and approval rules.")
    models_dir: Path = Field(default=REPO_ROOT / "flows" / "models", description="SQL models (*.sql).")
    mlflow_tracking_uri: str | None = Field(default=None, description="Default: MLflow on SQLite in home.")
    qdrant_url: str | None = Field(default=None, description="Qdrant server URL. Default: local mode in home.")
    openai_api_key: SecretStr | None = Field(default=None, description="Set to use the OpenAI planner.")
    openai_base_url: str | None = Field(default=None, description="Any OpenAI-compatible endpoint.")
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = 30.0
    openai_max_retries: int = 2
    check_engine: Literal["gx", "pandas"] = Field(
        default="gx", description="Runs the contract checks: the great-expectations suite, or the same rules in pandas."
    )
    emit_prefect_events: bool = Field(default=True, description="Mirror outbox events as Prefect events.")
    pipeline_runner: str = Field(
        default="flows.pipeline:run_batch", description="Import path of the PipelineRunner port."
    )
    resumer: str = Field(default="agents.supervisor:resume_proposal", description="Import path of the Resumer port.")
    supervisor: str = Field(default="agents.supervisor:supervise_once", description="Import path of the Supervisor port.")
    dry_runner: str = Field(
        default="tools.redry:redry", description="Import path of the DryRunner port (re-runs an edited change's dry-run)."
    )
    trusted_user_header: str | None = Field(
        default=None,
        description="A header set by an authentication proxy (e.g. X-Forwarded-User) that names the signed-in "
        "approver. Only set it when every request reaches the inbox through that proxy.",
    )
    session_secret: SecretStr | None = Field(
        default=None, description="Signs the web inbox's session cookie. Default: generated once into home."
    )
    approvers_file: Path | None = Field(
        default=None, description="Who may approve what (YAML). Default: policies_dir/approvers.yaml."
    )
    retrain_policy_file: Path | None = Field(
        default=None, description="Drift thresholds and retrain gates (YAML). Default: policies_dir/retrain.yaml."
    )
    approval_policy: str = Field(
        default="policies.approval:admit",
        description="Import path of the Admission port: stamps a new proposal with its rule's expiry at creation.",
    )
    proposal_hook: str = Field(
        default="inbox.service:on_proposal_created",
        description="Import path of the ProposalHook port: auto-approval by policy and the notifier, after a proposal "
        "is created.",
    )
    notifier: str = Field(
        default="inbox.slack:notify",
        description="Import path of the Notifier port; the default is a no-op while no Slack bot token is set.",
    )
    slack_bot_token: SecretStr | None = Field(default=None, description="Slack bot token; unset: Slack is off.")
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="Slack app signing secret; verifies requests to POST /slack/events."
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL (a local fake in tests)."
    )
    public_url: str = Field(
        default="http://127.0.0.1:8765", description="Where people reach the web inbox (evidence links in Slack)."
    )

    def model_post_init(self, __context: object) -> None:
        self.home = self.home.expanduser().resolve()

    @property
    def state_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'state.db'}"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def checkpoints_path(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def qdrant_path(self) -> Path:
        return self.home / "qdrant"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def contracts_dir(self) -> Path:
        return self.policies_dir / "contracts"

    @property
    def approvers_path(self) -> Path:
        return self.approvers_file or self.policies_dir / "approvers.yaml"

    @property
    def retrain_policy_path(self) -> Path:
        return self.retrain_policy_file or self.policies_dir / "retrain.yaml"

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Tests call `get_settings.cache_clear()` after changing the environment."""
    return Settings()


@contextmanager
def settings_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set environment variables (a None value unsets one) for a block and re-read the settings; afterwards every
    variable is as it was before, unset ones unset again. For tools that point a process at another home."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
