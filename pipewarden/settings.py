"""Settings, read from `PIPEWARDEN_*` environment variables (and a `.env` file in the working folder), on top of
the project file (`pipewarden.toml`, found from the working folder upward; see `pipewarden.project`).

Every store defaults to an embedded part under `home` (SQLite, DuckDB, Qdrant local mode, MLflow on SQLite);
a URL setting moves it to a server. An environment variable wins over the project file, which wins over the
defaults. Without a project file the working folder stands in for the project's folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipewarden.errors import ConfigError
from pipewarden.project import Project, find_project, load_project


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPEWARDEN_", env_file=".env", extra="ignore")

    project: Path | None = Field(
        default=None, description="The project folder or file. Default: found from the working folder upward."
    )
    home: Path | None = Field(
        default=None, description="Folder for every embedded store. Default: the project's `.pipewarden`."
    )
    database_url: str | None = Field(
        default=None, description="State DB (outbox, proposals, versions, audit). Default: SQLite in home."
    )
    policies_dir: Path | None = Field(
        default=None, description="Policy files that override the package defaults. Default: the project's policies/."
    )
    models_dir: Path | None = Field(default=None, description="SQL models (*.sql). Default: the project's models.")
    warehouse_url: str | None = Field(
        default=None, description="The warehouse (any SQLAlchemy URL). Default: the project's, else DuckDB in home."
    )
    storage_uri: str | None = Field(
        default=None, description="Where batches land (a folder or fsspec URL). Default: the project's, else home."
    )
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
    max_batch_bytes: ByteSize | None = Field(
        default=None, ge=0,
        description="The largest batch file that is read (`check`, `run`, the guard): a number of bytes or a size "
        "such as '2GiB'; 0 means no limit. Default: the project's `[limits] max_batch_bytes`, else 512 MiB. A bigger "
        "file is refused before it is read.",
    )
    pushdown_min_bytes: ByteSize = Field(
        default=ByteSize(64 * 1024**2), ge=0,
        description="Batch files at least this big are checked in DuckDB over the file, in bounded memory "
        "(`tools.pushdown`), instead of in pandas: 64 MiB by default; 0 means never. The pushdown path does not "
        "apply max_batch_bytes.",
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

    _project: Project | None = PrivateAttr(default=None)

    def model_post_init(self, __context: object) -> None:
        located = self.project if self.project is not None else find_project()
        self._project = load_project(located) if located is not None else None
        p = self._project
        base = p.root if p else Path.cwd()
        self.home = (self.home or (p.home if p else base / ".pipewarden")).expanduser().resolve()
        self.policies_dir = (self.policies_dir or (p.policies_dir if p else base / "policies")).expanduser().resolve()
        self.models_dir = (self.models_dir or (p.models_dir if p else base / "models")).expanduser().resolve()
        if self.max_batch_bytes is None:
            self.max_batch_bytes = _project_size(p, "limits", "max_batch_bytes", DEFAULT_MAX_BATCH_BYTES)

    @property
    def has_project(self) -> bool:
        return self._project is not None

    @property
    def project_config(self) -> Project:
        """The project; a clear error where a command needs one and none was found."""
        if self._project is None:
            raise ConfigError(
                f"no pipewarden project in {Path.cwd()} or any folder above it",
                hint="run `pipewarden init` here, or pass --project DIR (PIPEWARDEN_PROJECT)",
            )
        return self._project

    @property
    def project_root(self) -> Path:
        """The project's folder (the working folder when there is no project file)."""
        return self._project.root if self._project else Path.cwd().resolve()

    @property
    def warehouse(self) -> str:
        """The warehouse's SQLAlchemy URL."""
        if self.warehouse_url:
            return self.warehouse_url
        if self._project and self._project.config.warehouse.url:
            return _resolve_local_url(self._project.config.warehouse.url, self._project.root)
        return f"duckdb:///{self.home / 'warehouse.duckdb'}"

    @property
    def models_dialect(self) -> str:
        return self._project.config.models.dialect if self._project else "duckdb"

    @property
    def storage(self) -> str:
        """Where batches land: a local folder path or an fsspec URL (s3://bucket/prefix)."""
        uri = self.storage_uri or (self._project.config.storage.uri if self._project else None)
        if not uri:
            return str(self.home / "landing")
        if "://" in uri and not uri.startswith("file://"):
            return uri.rstrip("/")
        local = Path(uri.removeprefix("file://")).expanduser()
        return str(local if local.is_absolute() else (self.project_root / local).resolve())

    @property
    def state_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'state.db'}"

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file of the warehouse. A warehouse on a server has none: ConfigError says so."""
        url = self.warehouse
        if not url.startswith("duckdb:///"):
            raise ConfigError(f"the warehouse {url.split('@')[-1]!r} is not a DuckDB file",
                              hint="this step runs on DuckDB only; use a duckdb:/// warehouse URL")
        return Path(url.removeprefix("duckdb:///"))

    @property
    def landing_dir(self) -> Path:
        """The landing zone when batches are stored in a local folder."""
        uri = self.storage
        if "://" in uri:
            raise ConfigError(f"batch storage {uri!r} is not a local folder", hint="read batches by URI instead")
        return Path(uri)

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
        return self._project.contracts_dir if self._project else self.project_root / "contracts"

    @property
    def runbooks_dir(self) -> Path:
        return self.project_root / "runbooks"

    @property
    def approvers_path(self) -> Path:
        if self.approvers_file:
            return self.approvers_file
        return self._project.approvers_path if self._project else self.project_root / "approvers.yaml"

    @property
    def retrain_policy_path(self) -> Path:
        return self.retrain_policy_file or self.policies_dir / "retrain.yaml"  # type: ignore[operator]

    def ensure_home(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


DEFAULT_MAX_BATCH_BYTES = ByteSize(512 * 1024**2)


def _project_size(project: Project | None, section: str, key: str, default: ByteSize) -> ByteSize:
    """A size from the project file (`[section] key`: bytes or '2GiB'), validated here, else `default`."""
    from pydantic import TypeAdapter, ValidationError

    value = getattr(getattr(project.config, section), key) if project is not None else None
    if value is None:
        return default
    try:
        size = TypeAdapter(ByteSize).validate_python(value)
    except ValidationError:
        size = ByteSize(-1)
    if size < 0:
        raise ConfigError(f"{project.file}: [{section}] {key} = {value!r} is not a size",  # type: ignore[union-attr]
                          hint="give a number of bytes or a size such as '512MiB' or '2GiB' (0: no limit)")
    return size


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


def _resolve_local_url(url: str, root: Path) -> str:
    """A `duckdb:///relative.duckdb` in the project file is relative to the project's folder."""
    prefix = "duckdb:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str((root / url.removeprefix(prefix)).resolve())
    return url
