"""The model registry tool: MLflow plumbing, champion and challenger lookups, and the alias move that promotes a
model (the `model_promotion` Effect) and its rollback.

MLflow runs on SQLite under `PIPEWARDEN_HOME` (or `PIPEWARDEN_MLFLOW_TRACKING_URI`); artifacts live under
`PIPEWARDEN_HOME/mlartifacts`. Registry aliases, not stages: `champion` is the version the pipeline scores with,
`challenger` the latest candidate.

`ALIAS_MOVE` is registered in `tools.apply.EFFECTS` for `model_promotion`. It checks inside itself that the
proposal is approved (invariant 1) and is idempotent both ways: applying when the alias already points at the new
version, or rolling back when it already points at the old one, changes nothing. It never overwrites an alias that
someone moved in the meantime: applying then moves nothing (and reports the conflict, so verification fails),
rolling back leaves it and says so.

Which model a name means comes from the project file (`[ml_models.NAME]`, `declared_model`): its registered name,
features table, label, id, time and load columns, slices and predictions table.

Public names: `declared_model`, `registered_name`, `quiet_mlflow`, `mlflow_client`, `experiment_id`, `register_version`, `RegisteredVersion`,
`version_info`, `alias_version`, `champion`, `challenger`, `find_versions`, `load_model`, `load_version`, `reference_sample`,
`AliasMove`, `ALIAS_MOVE`, `RegistryError`, `ModelRef`, `TOOLS`, `CHAMPION`, `CHALLENGER`,
`trusted_types`, `REFERENCE_SAMPLE_ARTIFACT`, `EVENT_TAG`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.errors import ModelRetry, NotApproved, PipewardenError
from pipewarden.settings import get_settings
from pipewarden.tools.registry import Tool

if TYPE_CHECKING:
    import pandas as pd

    from pipewarden.models import ModelPromotion, Proposal
    from pipewarden.project import MLModelConfig

CHAMPION = "champion"
CHALLENGER = "challenger"
REFERENCE_SAMPLE_ARTIFACT = "reference_sample.parquet"
EVENT_TAG = "pipewarden.event_id"
"""Tag on a challenger's run and version: the event it was trained for (a re-run of the agent finds it again)."""



def trusted_types(model: Any) -> list[str]:
    """The types beyond skops' defaults that `model` holds, to be allowed back in when it is loaded.

    Models are saved with skops (no pickle: loading runs no code). The model was just built by the project's own
    training entry point, so the types it holds are the project's choice; they are recorded with the model, and
    loading still refuses any other type.
    """
    import skops.io as sio

    return list(sio.get_untrusted_types(data=sio.dumps(model)))


class RegistryError(PipewardenError):
    """The registry does not hold what was asked for (an unknown model, version or alias)."""


# --------------------------------------------------------------------------- the declaration
def declared_model(name: str | None = None, *, registered: str | None = None) -> tuple[str, MLModelConfig]:
    """The project's declared ML model (its key and config): by key (`[ml_models.NAME]`), by MLflow registered name,
    or, with neither, the only one declared. Unknown names fail with the declared ones and a did-you-mean."""
    from pipewarden.errors import ConfigError

    project = get_settings().project_config
    if name is not None:
        return name, project.ml_model(name)
    if registered is not None:
        return project.ml_model_named(registered)
    models = project.ml_models
    if len(models) != 1:
        raise ConfigError(
            f"{project.file}: {len(models)} ML models are declared ({', '.join(models) or 'none'}); name one",
            hint="pass the model's name (the NAME of [ml_models.NAME])" if models
            else "declare one under [ml_models.NAME] in the project file (see docs/supervise-your-own-pipeline.md)",
        )
    return next(iter(models.items()))


def registered_name(model_name: str | None) -> str:
    """`model_name`, or the registered name of the project's only declared ML model when it is None."""
    return model_name if model_name else declared_model()[1].registered_model


# --------------------------------------------------------------------------- MLflow plumbing
@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's and alembic's INFO logs and the warnings MLflow raises on every log_model."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic", "alembic.runtime.migration")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def mlflow_client() -> Any:
    """An MlflowClient on the configured tracking URI (SQLite in PIPEWARDEN_HOME by default); the fluent API
    (`mlflow.start_run`) is pointed at the same URI."""
    import mlflow
    from mlflow import MlflowClient

    settings = get_settings()
    settings.ensure_home()
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    return MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name`, created with its artifacts under PIPEWARDEN_HOME/mlartifacts if new."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    artifacts = get_settings().mlflow_artifacts.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=artifacts.as_uri()))


def register_version(client: Any, model_name: str, model_uri: str, run_id: str, model_id: str | None,
                     *, tags: dict[str, str] | None = None, description: str = "") -> str:
    """Register a logged model as a new version of `model_name` (created if new); returns the version."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(model_name, description=description)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    mv = client.create_model_version(model_name, source=model_uri, run_id=run_id, model_id=model_id, tags=tags)
    return str(mv.version)


# --------------------------------------------------------------------------- lookups
class ModelRef(BaseModel):
    """A registered model and one of its aliases."""

    model_config = ConfigDict(extra="forbid")
    model_name: str | None = Field(default=None, description="The registered model's name (named in the data); "
                                   "default: the project's only declared ML model.")
    alias: str = Field(default=CHAMPION, description="The alias to resolve: champion or challenger.")


class RegisteredVersion(BaseModel):
    """One registered model version with what its training run logged."""

    model_name: str
    version: str
    run_id: str | None = None
    aliases: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict, description="The training run's metrics (holdout).")
    params: dict[str, str] = Field(default_factory=dict, description="The training run's params.")
    tags: dict[str, str] = Field(default_factory=dict, description="The version's tags.")
    source: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def features(self) -> list[str]:
        """The model's input columns, as its training run logged them."""
        return [f for f in self.params.get("features", "").split(",") if f]


def _info(client: Any, mv: Any) -> RegisteredVersion:
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    if mv.run_id:
        run = client.get_run(mv.run_id)
        metrics = {k: float(v) for k, v in run.data.metrics.items()}
        params = {k: str(v) for k, v in run.data.params.items()}
    return RegisteredVersion(
        model_name=mv.name, version=str(mv.version), run_id=mv.run_id, aliases=list(getattr(mv, "aliases", []) or []),
        metrics=metrics, params=params, tags={k: str(v) for k, v in (mv.tags or {}).items()}, source=mv.source,
    )


def version_info(model_name: str, version: str) -> RegisteredVersion:
    """A registered version and its run's metrics and params. Raises RegistryError when there is none."""
    from mlflow.exceptions import MlflowException

    with quiet_mlflow():
        client = mlflow_client()
        try:
            mv = client.get_model_version(model_name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"the registry has no version {version} of model {model_name!r}",
                                hint="list versions with the MLflow UI, or train first") from exc
        return _info(client, mv)


def alias_version(model_name: str, alias: str) -> RegisteredVersion | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    with quiet_mlflow():
        client = mlflow_client()
        try:
            mv = client.get_model_version_by_alias(model_name, alias)
        except MlflowException:
            return None
        return _info(client, mv)


def champion(model_name: str) -> RegisteredVersion | None:
    """The version the pipeline scores with (alias `champion`), or None."""
    return alias_version(model_name, CHAMPION)


def challenger(model_name: str) -> RegisteredVersion | None:
    """The latest candidate (alias `challenger`), or None."""
    return alias_version(model_name, CHALLENGER)


def find_versions(model_name: str, tag: str, value: str) -> list[RegisteredVersion]:
    """Versions of `model_name` whose tag `tag` equals `value`, oldest first."""
    from mlflow.exceptions import MlflowException

    with quiet_mlflow():
        client = mlflow_client()
        try:
            found = client.search_model_versions(f"name = '{_quoted(model_name)}' and tags.`{tag}` = '{_quoted(value)}'")
        except MlflowException:
            return []
        return sorted((_info(client, mv) for mv in found), key=lambda v: int(v.version))


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def load_model(model_name: str, version: str | None = None, *, alias: str | None = None) -> Any:
    """The scikit-learn model of a version (or of whatever version `alias` points at now)."""
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    if (version is None) == (alias is None):
        raise ValueError("pass exactly one of version and alias")
    uri = f"models:/{model_name}/{version}" if version is not None else f"models:/{model_name}@{alias}"
    with quiet_mlflow():
        mlflow_client()
        try:
            return mlflow.sklearn.load_model(uri)
        except MlflowException as exc:
            raise RegistryError(f"cannot load {uri}: {exc.message}", hint="check the model name, version and alias") from exc


_LOADED: dict[tuple[str, str, str, str, str], Any] = {}
_KEEP_LOADED = 4


def load_version(info: RegisteredVersion) -> Any:
    """The scikit-learn model of a registered version, as `load_model` reads it, read once per process: a version's
    artifact never changes, so it is kept by the registry, model, version, run and artifact source (a registry
    copied elsewhere, or built again at the same path, is another key). The retrain agent reads the champion to
    clone its recipe and again to score the holdout, and a worker does so for every event while it stays champion.
    Each caller gets its own deep copy (fitting or changing it leaves the kept one alone)."""
    import copy

    key = (get_settings().mlflow_uri, info.model_name, info.version, info.run_id or "", info.source or "")
    if key not in _LOADED:
        if len(_LOADED) >= _KEEP_LOADED:
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = load_model(info.model_name, info.version)
    return copy.deepcopy(_LOADED[key])


def reference_sample(model_name: str, version: str) -> pd.DataFrame | None:
    """The training rows kept with a version as its drift reference, or None when its run logged none."""
    info = version_info(model_name, version)
    if not info.run_id:
        return None
    frame = _reference_sample(get_settings().mlflow_uri, info.run_id)
    return None if frame is None else frame.copy()


@lru_cache(maxsize=8)
def _reference_sample(tracking_uri: str, run_id: str) -> pd.DataFrame | None:
    """A run's artifacts never change, so each is read once per process."""
    import mlflow.artifacts
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with quiet_mlflow(), tempfile.TemporaryDirectory() as tmp:
        mlflow_client()
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_SAMPLE_ARTIFACT,
                                                       dst_path=tmp, tracking_uri=tracking_uri)
        except (MlflowException, OSError):
            return None
        return pd.read_parquet(Path(path))


# --------------------------------------------------------------------------- the alias move (an Effect)
class AliasMove:
    """The `model_promotion` Effect: move `change.alias` from `from_version` to `to_version`, and back."""

    def apply(self, change: ModelPromotion, proposal: Proposal) -> dict[str, Any]:
        """Point the alias at `to_version`. Refuses without an approved decision; a no-op when already there.
        When the alias points at neither version the proposal names (someone moved it since), nothing moves and
        the result says so under `conflict`; the retrain agent's verifier then fails and re-opens the proposal."""
        _require_approval(proposal)
        version_info(change.model_name, change.to_version)  # the target version must exist
        current = alias_version(change.model_name, change.alias)
        now = current.version if current else None
        if now == change.to_version:
            return {"moved": False, "alias": change.alias, "version": change.to_version}
        if now != change.from_version:  # someone moved it since: never overwrite; verification will fail on it
            return {"moved": False, "alias": change.alias, "version": now,
                    "conflict": f"{change.model_name}@{change.alias} points at version {now or 'nothing'}, not at "
                                f"version {change.from_version or 'nothing'} as when the proposal was made"}
        self._set(change.model_name, change.alias, change.to_version)
        return {"moved": True, "alias": change.alias, "from_version": now, "to_version": change.to_version}

    def rollback(self, change: ModelPromotion, proposal: Proposal) -> dict[str, Any]:
        """Point the alias back at `from_version` (remove it when there was none). A no-op when it is already
        there; an alias someone moved elsewhere since is left alone (and reported)."""
        current = alias_version(change.model_name, change.alias)
        now = current.version if current else None
        if now == change.from_version:
            return {"moved": False, "alias": change.alias, "version": now}
        if now != change.to_version:
            return {"moved": False, "alias": change.alias, "version": now,
                    "left_alone": f"the alias points at version {now or 'nothing'}, which this proposal did not set"}
        self._set(change.model_name, change.alias, change.from_version)
        return {"moved": True, "alias": change.alias, "from_version": now, "to_version": change.from_version}

    @staticmethod
    def _set(model_name: str, alias: str, version: str | None) -> None:
        with quiet_mlflow():
            client = mlflow_client()
            if version is None:
                client.delete_registered_model_alias(model_name, alias)
            else:
                client.set_registered_model_alias(model_name, alias, version)


def _require_approval(proposal: Proposal) -> None:
    from pipewarden.models import ProposalStatus
    from pipewarden.store import StateStore

    store = StateStore()
    stored = store.get_proposal(proposal.id)
    if store.approved_decision(stored.id) is None or stored.status not in (
        ProposalStatus.approved, ProposalStatus.applying, ProposalStatus.applied, ProposalStatus.verified
    ):
        raise NotApproved(
            f"proposal {stored.short_id} is {stored.status.value} without an approval in force; the model registry "
            "refuses to move an alias",
            hint=f"the approvers the policy names must run `pipewarden inbox approve {stored.short_id}` first",
        )


ALIAS_MOVE = AliasMove()


# --------------------------------------------------------------------------- tools a model may call
def _champion_info(ref: ModelRef) -> RegisteredVersion:
    name = registered_name(ref.model_name)
    found = alias_version(name, ref.alias)
    if found is None:  # the model asked for something that is not there: tell it, do not crash the agent
        raise ModelRetry(f"no version of {name!r} has the alias {ref.alias!r}",
                         hint="use alias 'champion' or 'challenger' of the model named in the data")
    return found


TOOLS: list[Tool] = [
    Tool(name="model_version", description="The registered model version an alias (champion or challenger) points "
         "at, with its training run's metrics and params.", input=ModelRef, output=RegisteredVersion,
         fn=_champion_info),
]
