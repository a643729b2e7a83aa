"""The project a team owns: `pipewarden.toml` (or `pipewarden.yaml`) and the folders it names.

A project file says which datasets exist (each with an owner and a contract), where the warehouse is (any
SQLAlchemy URL; DuckDB in the project's home by default), where the SQL models live and in which dialect they are
written, where batches are stored (a local folder or any fsspec URL), who approves, and how a halted batch is
re-run. Every command finds the project file from the working folder upward, as git, dbt and Prefect do;
`--project DIR` (or `PIPEWARDEN_PROJECT`) overrides. Relative paths in the file are relative to the file's folder,
so nothing points into site-packages and a project can be moved or cloned.

`tomllib` reads TOML; edits (`contract init` registering a dataset) go through `tomlkit`, which keeps the user's
comments and layout, rather than re-serialising the whole file.

ML models are declared too (`[ml_models.NAME]`, `MLModelConfig`): the MLflow registered model, the SQL model that
holds its features (one row per example, with its id, time, load and label), the feature and slice columns, the
predictions table and the training entry point (a `module:function` in the project's folder, or an MLflow project
URI). The pipeline scores each accepted load of the model's dataset, and the retrain agent reads the declaration.

`[demo]` (`DemoConfig`) says what `pipewarden demo` runs: the team's flow on a clean batch, then on a drifted one.

Public names: `Project`, `ProjectFile`, `DatasetConfig`, `MLModelConfig`, `DemoConfig`, `PROJECT_FILES`, `find_project`,
`load_project`, `DATASET_NAME`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipewarden.errors import ConfigError, UnknownNameError, UserError

PROJECT_FILES = ("pipewarden.toml", "pipewarden.yaml", "pipewarden.yml")
DATASET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_dataset_name(name: str) -> str:
    """A dataset name is an identifier: it names a contract file and warehouse tables, never a path."""
    if not DATASET_NAME.match(name or ""):
        raise UserError(
            f"dataset name {name!r} is not an identifier",
            hint="use letters, digits and '_' (starting with a letter), at most 63 characters; not a path",
        )
    return name


def require_dataset(name: str, known: Sequence[str]) -> str:
    """The one check a dataset name from outside (a CLI option, a request) passes before it becomes a path or a
    table name: an identifier, and one of `known` (the project's datasets). The error names the value and lists
    the datasets, with a did-you-mean (for a path, on its last part: `contracts/orders.yaml` -> 'orders')."""
    if not DATASET_NAME.match(name or ""):
        from difflib import get_close_matches

        stem = Path(str(name).replace("\\", "/")).stem if name else ""
        close = get_close_matches(stem, list(known), n=3) if stem else []
        listed = ", ".join(sorted(known)) or "none"
        raise UserError(
            f"dataset {name!r} is not a dataset name (the project's datasets: {listed})",
            hint=(f"did you mean {', '.join(repr(c) for c in close)}? " if close else "")
            + "pass a dataset by its name (letters, digits and '_'), never a path",
        )
    if name not in known:
        raise UnknownNameError("dataset", name, list(known))
    return name


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetConfig(_Section):
    owner: str = Field(description="Who owns the dataset (a team or person; approval rules ask the owner).")
    contract: str = Field(description="Path of the dataset's contract, relative to the project file.")
    source: str = Field("", description="Where batches come from (free text: an API, a bucket, a team).")
    reference: bool = Field(
        False, description="A reference table (loaded whole, checked, used by broken-reference checks)."
    )
    description: str = ""


IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TRAINER = re.compile(r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*):(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")
MLFLOW_PROJECT_PREFIX = "mlflow-project:"


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value or ""):
        raise ValueError(f"{what} {value!r} is not a plain table or column name (letters, digits and '_')")
    return value


class MLModelConfig(_Section):
    """One ML model the pipeline scores and the retrain agent watches: `[ml_models.NAME]` in the project file.

    The features live in a SQL model of the project (or any warehouse table): one row per example with the id,
    time, load and label columns and every feature column. The label is binary (true/false or 1/0).
    """

    registered_model: str = Field(description="The MLflow registered model's name (aliases champion, challenger).")
    dataset: str = Field(description="The dataset whose accepted loads the model scores (its features' source).")
    features: str = Field(description="The SQL model (or warehouse table) holding one row per example.")
    feature_columns: list[str] = Field(min_length=1, description="The model's input columns, in that table.")
    label: str = Field(description="The binary label column (true/false or 1/0).")
    id_column: str = Field(description="The column that identifies an example (unique per load).")
    time_column: str = Field(description="A date or timestamp column: splits by time, recent windows.")
    load_column: str = Field("load_id", description="The column holding the load id an example came with.")
    slices: list[str] = Field(default_factory=list, description="Columns cut into slices the gates judge.")
    predictions: str = Field("predictions", description="Warehouse table the scores are written to.")
    trainer: str = Field(
        description="The training entry point: `module:function` importable from the project folder, or "
        "`mlflow-project:URI` (an MLflow project whose run logs a scikit-learn model under `model`)."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Hyperparameters passed to the trainer.")
    min_rows: int = Field(1000, ge=10, description="Fewer labelled rows: the champion is not trained (skipped).")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="The latest share of rows the champion is judged on.")
    owner: str | None = Field(None, description="Who owns the model (shown on proposals).")
    description: str = ""

    @field_validator("features", "label", "id_column", "time_column", "load_column", "predictions")
    @classmethod
    def _names(cls, value: str, info: Any) -> str:
        return _identifier(value, info.field_name)

    @field_validator("feature_columns", "slices")
    @classmethod
    def _columns(cls, value: list[str], info: Any) -> list[str]:
        for v in value:
            _identifier(v, f"{info.field_name} entry")
        if len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} lists a column twice")
        return value

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        if not DATASET_NAME.match(value or ""):
            raise ValueError(f"dataset {value!r} is not a dataset name (letters, digits and '_')")
        return value

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, value: str) -> str:
        if value.startswith(MLFLOW_PROJECT_PREFIX):
            if not value[len(MLFLOW_PROJECT_PREFIX):].strip():
                raise ValueError("trainer 'mlflow-project:' names no project URI")
            return value
        if not TRAINER.match(value):
            raise ValueError(f"trainer {value!r} is neither 'package.module:function' nor 'mlflow-project:URI'")
        return value

    @model_validator(mode="after")
    def _roles_apart(self) -> MLModelConfig:
        special = {"label": self.label, "id_column": self.id_column, "load_column": self.load_column}
        for field, column in special.items():
            if column in self.feature_columns:
                raise ValueError(f"feature_columns includes {column!r}, the {field}; a model must not read it")
        return self

    @property
    def trainer_kind(self) -> Literal["callable", "mlflow_project"]:
        return "mlflow_project" if self.trainer.startswith(MLFLOW_PROJECT_PREFIX) else "callable"


class DemoConfig(_Section):
    """`pipewarden demo` on this project: the team's own flow run on a clean batch, then on a drifted one."""

    flow: str = Field(description="The team's Prefect flow, `module:function` importable from the project folder.")
    dataset: str = Field(description="The dataset whose batch the drifted run halts on.")
    clean: dict[str, Any] = Field(default_factory=dict, description="The flow's parameters for the clean batch.")
    drifted: dict[str, Any] = Field(default_factory=dict, description="The flow's parameters for the drifted batch.")
    approver: str | None = Field(None, description="Who signs in to the demo's inbox (an approver of the dataset).")

    @field_validator("flow")
    @classmethod
    def _flow(cls, value: str) -> str:
        if not TRAINER.match(value):
            raise ValueError(f"flow {value!r} is not 'package.module:function'")
        return value


class WarehouseConfig(_Section):
    url: str | None = Field(
        None, description="Any SQLAlchemy URL (duckdb:///..., postgresql+psycopg://...). Default: DuckDB in home."
    )


class ModelsConfig(_Section):
    path: str = Field("models", description="Folder of SQL models (*.sql), one SELECT each.")
    dialect: str = Field("duckdb", description="The sqlglot dialect the models are written in.")


class StorageConfig(_Section):
    uri: str | None = Field(None, description="Where batches land: a folder or any fsspec URL. Default: home/landing.")


class LimitsConfig(_Section):
    max_batch_bytes: int | str | None = Field(
        None, description="The largest batch file that is read: bytes or a size such as '2GiB' (0: no limit). "
        "Default 512 MiB; PIPEWARDEN_MAX_BATCH_BYTES wins over it.",
    )


class RerunConfig(_Section):
    mode: Literal["auto", "deployment", "recheck"] = Field(
        "auto",
        description="auto: through the Prefect deployment the halted batch came from, else re-check the landed "
        "batch; deployment: always through a deployment; recheck: always re-check the landed batch.",
    )
    deployment: str | None = Field(
        None, description="'flow-name/deployment-name' to re-run through when the batch did not come from one."
    )


class OpenLineageConfig(_Section):
    """`[openlineage]`: where the guard and `build` send OpenLineage run events. Off unless a transport is named;
    `PIPEWARDEN_OPENLINEAGE_*` variables override each field (and carry the API key, never written here)."""

    transport: Literal["off", "http", "file", "console"] = Field(
        "off", description="off; http (POST to url + endpoint); file (JSON lines appended to path); console (log).")
    url: str | None = Field(None, description="http: the receiver's base URL, e.g. http://localhost:5000.")
    endpoint: str = Field("api/v1/lineage", description="http: the path events are POSTed to.")
    path: str | None = Field(None, description="file: the JSON-lines file, relative to the project file.")
    namespace: str | None = Field(None, description="The jobs' namespace. Default: the project's name.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="http: seconds to wait for the receiver.")


class ProjectFile(_Section):
    """The project file's contents, validated where they enter."""

    name: str = Field("pipewarden-project", description="The project's name (shown in the inbox).")
    home: str | None = Field(None, description="State folder (state DB, embedded stores). Default: .pipewarden.")
    approvers: str = Field("approvers.yaml", description="People, roles and tokens (YAML).")
    policies: str = Field("policies", description="Folder that may override the default policy files.")
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    rerun: RerunConfig = Field(default_factory=RerunConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    ml_models: dict[str, MLModelConfig] = Field(
        default_factory=dict, description="ML models the pipeline scores and the retrain agent watches."
    )
    demo: DemoConfig | None = Field(None, description="What `pipewarden demo` runs on this project.")
    openlineage: OpenLineageConfig = Field(default_factory=OpenLineageConfig,
                                           description="OpenLineage run events from the guard and build (off).")


class Project(BaseModel):
    """A loaded project: its folder, its file and the validated contents."""

    model_config = ConfigDict(frozen=True)
    root: Path
    file: Path
    config: ProjectFile

    def path(self, rel: str | Path) -> Path:
        """A path from the project file, resolved against the project's folder (absolute ones stay as they are)."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else (self.root / p)

    @property
    def contracts_dir(self) -> Path:
        return self.root / "contracts"

    @property
    def models_dir(self) -> Path:
        return self.path(self.config.models.path)

    @property
    def approvers_path(self) -> Path:
        return self.path(self.config.approvers)

    @property
    def policies_dir(self) -> Path:
        return self.path(self.config.policies)

    @property
    def home(self) -> Path:
        return self.path(self.config.home or ".pipewarden")

    @property
    def datasets(self) -> dict[str, DatasetConfig]:
        return dict(self.config.datasets)

    @property
    def ml_models(self) -> dict[str, MLModelConfig]:
        return dict(self.config.ml_models)

    def ml_model(self, name: str) -> MLModelConfig:
        """The declared ML model `name` (the key of `[ml_models.NAME]`); unknown names fail with a did-you-mean."""
        found = self.config.ml_models.get(name)
        if found is None:
            raise UnknownNameError("ML model", name, sorted(self.config.ml_models))
        return found

    def ml_model_named(self, registered_model: str) -> tuple[str, MLModelConfig]:
        """The declaration (key and config) whose MLflow registered model is `registered_model`."""
        for key, model in self.config.ml_models.items():
            if model.registered_model == registered_model:
                return key, model
        raise UnknownNameError("registered ML model", registered_model,
                               sorted(m.registered_model for m in self.config.ml_models.values()))

    def load_callable(self, spec: str, *, what: str) -> Any:
        """The function `module:function` names, imported from the project's folder (on `sys.path` for that import
        only). A package of that name imported earlier from another pipewarden project's folder is replaced by this
        project's own; one installed elsewhere is a ConfigError naming both places, never a silent use of other code.
        `what` names the setting in the errors (e.g. `ml_models.delay.trainer`)."""
        import importlib
        import sys

        module_name, _, fn_name = spec.partition(":")
        root = str(self.root.resolve())
        top = module_name.split(".")[0]
        loaded = sys.modules.get(top)
        if loaded is not None and _from_another_project(loaded, self.root.resolve()):
            for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                del sys.modules[name]  # another project's copy of this package: import this project's own
        added = root not in sys.path
        if added:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"{self.file}: {what} {spec!r}: cannot import {module_name!r} from {root}: {exc}",
                              hint="the module must be importable from the project's folder (a package there, "
                                   "with __init__.py)") from exc
        finally:
            if added:
                sys.path.remove(root)
        where = _module_path(sys.modules.get(top, module)) or Path(root)
        if self.root.resolve() not in where.parents:
            raise ConfigError(f"{self.file}: {what} {spec!r}: the module {module_name!r} was imported from {where}, "
                              f"not from the project folder {root}",
                              hint="rename the project's package so it does not clash with an installed one")
        fn = getattr(module, fn_name, None)
        if not callable(fn):
            raise ConfigError(f"{self.file}: {what} {spec!r}: {module_name} has no function {fn_name!r}",
                              hint="point it at a function of that module")
        return fn

    def ml_models_fed_by(self, dataset: str) -> dict[str, MLModelConfig]:
        """The declared ML models that score `dataset`'s loads, in declaration order."""
        return {k: m for k, m in self.config.ml_models.items() if m.dataset == dataset}

    def dataset_names(self) -> list[str]:
        """Registered datasets, plus contracts dropped into `contracts/` that are not registered (yet)."""
        names = set(self.config.datasets)
        if self.contracts_dir.is_dir():
            names |= {p.stem for p in self.contracts_dir.glob("*.yaml") if DATASET_NAME.match(p.stem)}
        return sorted(names)

    def require_dataset(self, name: str) -> str:
        """`name` when it is one of the project's datasets (`require_dataset`), else the error listing them."""
        return require_dataset(name, self.dataset_names())

    def contract_path(self, dataset: str) -> Path:
        """The contract file of `dataset`; an unknown dataset fails with the known ones and a did-you-mean."""
        self.require_dataset(dataset)
        ds = self.config.datasets.get(dataset)
        path = self.path(ds.contract) if ds else self.contracts_dir / f"{dataset}.yaml"
        if not path.exists():
            if ds is not None:
                raise ConfigError(
                    f"{self.file}: dataset {dataset!r} names the contract {ds.contract!r}, which does not exist",
                    hint=f"create it with `pipewarden contract init {dataset} --from FILE` or fix the path",
                )
            raise UnknownNameError("dataset", dataset, self.dataset_names())
        return path

    def register_dataset(self, name: str, dataset: DatasetConfig) -> None:
        """Add (or replace) `[datasets.NAME]` in the project file, keeping the rest of the file as the user wrote it."""
        check_dataset_name(name)
        entry = dataset.model_dump(exclude_defaults=True)
        entry.setdefault("owner", dataset.owner)
        entry.setdefault("contract", dataset.contract)
        if self.file.suffix == ".toml":
            import tomlkit

            doc = tomlkit.parse(self.file.read_text(encoding="utf-8"))
            if "datasets" not in doc:
                doc["datasets"] = tomlkit.table(is_super_table=True)
            table = tomlkit.table()
            for k, v in entry.items():
                table[k] = v
            doc["datasets"][name] = table  # type: ignore[index]
            text = tomlkit.dumps(doc)
        else:
            import yaml

            raw = yaml.safe_load(self.file.read_text(encoding="utf-8")) or {}
            raw.setdefault("datasets", {})[name] = entry
            text = yaml.safe_dump(raw, sort_keys=False)
        _parse(self.file, text)  # never write a file we could not read back
        _atomic_write(self.file, text)


def _module_path(module: Any) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _from_another_project(module: Any, root: Path) -> bool:
    """Whether `module` was imported from the folder of another pipewarden project (not from `root`, not from an
    installed package): then it is that project's code, and this project's own must be imported instead."""
    where = _module_path(module)
    if where is None or root in where.parents:
        return False
    return any((folder / name).is_file() for folder in where.parents for name in PROJECT_FILES)


def find_project(start: Path | None = None) -> Path | None:
    """The nearest project file in `start` (default: the working folder) or a folder above it."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in PROJECT_FILES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def load_project(location: Path | str) -> Project:
    """Load a project from its file or its folder; errors name the file and the field, and say what to do."""
    loc = Path(location).expanduser().resolve()
    if loc.is_dir():
        found = next((loc / n for n in PROJECT_FILES if (loc / n).is_file()), None)
        if found is None:
            raise ConfigError(
                f"{loc} has no project file ({', '.join(PROJECT_FILES)})",
                hint=f"run `pipewarden init {loc}` to make one, or point --project at another folder",
            )
        loc = found
    if not loc.is_file():
        raise ConfigError(f"project file {loc} does not exist", hint="run `pipewarden init` or fix --project")
    config = _parse(loc, loc.read_text(encoding="utf-8"))
    return Project(root=loc.parent, file=loc, config=config)


def _parse(path: Path, text: str) -> ProjectFile:
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError: both carry line and column
        raise ConfigError(f"{path}: cannot be parsed: {exc}", hint="fix the syntax at the position shown") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level", hint="see `pipewarden init`")
    try:
        return ProjectFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}", hint="compare it with the file `pipewarden init` writes") from exc


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
