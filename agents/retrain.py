"""The retrain agent, a spec (`SPEC`): from a ModelDrift event to a verified champion alias move.

    gather -> plan -> prove -> propose -> (shared tail: heed -> submit -> await_decision -> apply -> verify)

- gather (`RetrainCase`, read once): the event's scored batch judged again with `tools.drift.model_health`
  (feature drift against the scoring version's training reference, performance decay on labelled feedback,
  feedback per slice), the current champion from the registry, and knowledge citations (when an index exists).
- plan: the planner (`agents.llm.plan`: OpenAI when configured, else the deterministic solver) decides whether
  to retrain and on how many recent days, and which features and slices the diagnosis should highlight. Every
  answer is validated: only real features and slices, a window inside the policy's bounds, only given citations,
  and no "do not retrain" when performance decayed.
- prove (`RetrainProof`): trains a challenger with the champion's recipe on the recent window
  (`tools.challenger.train_challenger`: an MLflow run with params, metrics and a reference sample, registered,
  alias `challenger`; idempotent: the version is tagged with the event, and a re-run finds it again), then compares
  champion and challenger on the recent holdout, overall and per slice, under the gates of `policies/retrain.yaml`
  (`tools.challenger.compare_models`). `DryRun.before` is the champion's gate (it fails when it decayed or is
  beaten by the margin), `after` the challenger's (margin and slice bounds).
- propose: a `model_promotion` (champion alias -> challenger version; high risk, so the two-person rule applies)
  when the dry-run heals, else "needs a human" (NoChange) with the numbers and what was tried.

The verifier (`verify_promotion`) checks that the alias points at the new version and that scoring through the
alias works on the event's batch; if not, the shared tail rolls the alias back (to `from_version`) and re-opens.

Public names: `SPEC`, `RetrainAnswer`, `SliceRef`, `RetrainCase`, `RetrainProof`, `verify_promotion`,
`offline_solution`, `validate_answer`, `plan_request`, `AGENT`.
"""

from __future__ import annotations

import logging
import math
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.agents.lifecycle import Verification, proposal_for
from pipewarden.agents.spec import AgentSpec, Plan
from pipewarden.errors import PipewardenError, UnknownNameError
from pipewarden.events import ModelDrift
from pipewarden.models import (
    CheckResult,
    Citation,
    DryRun,
    ModelPromotion,
    NoChange,
    Proposal,
    ProposalStatus,
    Risk,
)
from pipewarden.policies.retrain import RetrainPolicy, load_retrain_policy
from pipewarden.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "retrain"
READER_ROLE = "engineer"  # the role the agent reads the knowledge index as
REQUIRED_ROLES = ["ml_owner", "owner"]
MAX_HIGHLIGHTS = 5


# --------------------------------------------------------------------------- the planner's answer
class SliceRef(BaseModel):
    """A slice of the model's rows: one of its slice columns and one of that column's values."""

    model_config = ConfigDict(extra="forbid")
    column: str = Field(description="A slicing column named in the data's feedback slices.")
    value: str = Field(description="One of that column's values listed in the data's feedback slices.")


class RetrainAnswer(BaseModel):
    """The planner's decision for one drifted or decayed model."""

    model_config = ConfigDict(extra="forbid")
    retrain: bool = Field(description="Train a challenger on recent data (false only when performance holds).")
    window_days: int = Field(description="How many recent days to train and hold out on, within the policy bounds.")
    highlight_features: list[str] = Field(description="Drifted features the diagnosis should name, worst first.")
    highlight_slices: list[SliceRef] = Field(description="Feedback slices the diagnosis should name, worst first.")
    rationale: str = Field(description="Why, in two or three sentences, with the numbers.")
    cited_chunks: list[str] = Field(description="Ids of the knowledge chunks used; only ids given in the data.")


class RetrainCase(BaseModel):
    """What the agent gathered for one ModelDrift event, read once: the event, the scored batch judged again
    (`tools.drift.ModelHealth` as JSON), the champion (`RegisteredVersion` as JSON), citations, and why the agent
    cannot go on (missing data, no champion...)."""

    event: ModelDrift
    health: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None
    citations: list[Citation] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


class RetrainProof(BaseModel):
    """The challenger trained on the planned window (`ChallengerRun` as JSON) and its comparison with the champion
    on the recent holdout (`Comparison` as JSON), or what failed on the way."""

    challenger: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    problems: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- helpers
def _model_of(ev: ModelDrift) -> tuple[str, str | None]:
    """The model name and scoring version the event names (detail first, else `name@vN`)."""
    name = ev.detail.get("model_name")
    version = ev.detail.get("model_version")
    if not name:
        name, _, ver = ev.model.partition("@")
        version = ver.lstrip("v") or None
    return str(name), (str(version) if version else None)


def _citations(ev: ModelDrift, features: list[str], rt: Runtime) -> list[Citation]:
    """Knowledge chunks about the model's data, read as the agent's role."""
    name = _model_of(ev)[0]
    return rt.cite(f"{ev.dataset} {name} model drift and decay; retrain, challenger, promotion; features "
                + ", ".join(features[:6]), role=READER_ROLE)


def _policy() -> RetrainPolicy:
    return load_retrain_policy()


# --------------------------------------------------------------------------- gather
def gather(ev: ModelDrift, rt: Runtime) -> RetrainCase:
    """The event's scored batch judged again (`tools.drift.model_health`), the champion, and citations."""
    from pipewarden.tools.drift import DriftInputError, ModelHealthInput, model_health
    from pipewarden.tools.model_registry import RegistryError, champion

    policy = _policy()
    name, version = _model_of(ev)
    problems: list[str] = []
    health = None
    try:
        health = model_health(ModelHealthInput(load_id=ev.load_id or "", model_name=name, version=version), policy)
    except (DriftInputError, RegistryError, UnknownNameError) as exc:
        problems.append(f"cannot judge load {ev.load_id}: {exc.message}")
    current = None
    try:
        current = champion(name)
    except PipewardenError as exc:
        problems.append(f"cannot read the registry: {exc.message}")
    if current is None and not problems:
        problems.append(f"no version of {name!r} holds the alias 'champion'; nothing to retrain against")
    features = (health.drift.drifted_features if health and health.drift else []) or list(ev.drifted_features)
    return RetrainCase(event=ev, health=health.model_dump(mode="json") if health else None,
                       champion=current.model_dump(mode="json") if current else None,
                       citations=_citations(ev, features, rt), problems=problems)


# --------------------------------------------------------------------------- plan
TASK = ("A registered model's scored batch shows feature drift and/or performance decay on labelled feedback. "
        "Decide whether to train a challenger on recent data and on how many recent days (window_days), and "
        "which drifted features and which feedback slices the diagnosis should highlight, worst first. Explain "
        "why with the numbers. Answer with the JSON object only.")
RULES = [
    "highlight_features: only names listed in data.features; highlight_slices: only (column, value) pairs listed "
    "in data.feedback_slices.",
    "window_days must lie between data.window.min_days and data.window.max_days.",
    "retrain may be false only when data.decay.decayed is false.",
    "cited_chunks: only ids listed in data.citations.",
]


def plan_request(health: Any, champion_info: Any, citations: list[Citation], policy: RetrainPolicy) -> Any:
    """The PlanRequest for one model's health report (evidence in `data`, untrusted)."""
    from pipewarden.agents.llm import PlanRequest

    drift = health.drift
    return PlanRequest(
        agent=AGENT, task=TASK, rules=RULES,
        data={
            "model": {"name": health.model_name, "scored_version": health.version,
                      "champion_version": champion_info.version if champion_info else None,
                      "champion_training_metrics": {k: round(v, 4) for k, v in (champion_info.metrics if champion_info
                                                                               else {}).items()
                                                    if k in ("auc", "accuracy", "brier", "rows_train")}},
            "load_id": health.load_id,
            "features": [
                {"name": f.feature, "kind": f.kind, "method": f.method, "statistic": round(f.statistic, 6),
                 "threshold": f.threshold, "drifted": f.drifted} for f in (drift.features if drift else [])
            ] or [{"name": f, "drifted": None} for f in health.features],
            "dataset_drift": {"share": drift.share, "threshold": drift.share_threshold,
                              "drifted": drift.dataset_drift} if drift else None,
            "decay": health.decay.model_dump(mode="json"),
            "feedback_slices": [{"column": s.column, "value": s.value, "rows": s.rows,
                                 "metric": s.metric, "score": None if s.score is None else round(s.score, 4)}
                                for s in health.feedback_slices],
            "window": {"default_days": policy.retrain.window_days, "min_days": policy.retrain.min_window_days,
                       "max_days": policy.retrain.max_window_days},
            "citations": [{"id": c.chunk_id, "source": c.source, "excerpt": c.excerpt[:300]} for c in citations],
        },
    )


def offline_solution(request: Any) -> RetrainAnswer:
    """The deterministic planner: retrain on the policy's default window when performance decayed or the dataset
    drifted; highlight the most severe drifted features and the worst feedback slices."""
    data = request.data
    decay = data.get("decay") or {}
    drift = data.get("dataset_drift") or {}
    decayed, drifted = bool(decay.get("decayed")), bool(drift.get("drifted"))
    features = [f["name"] for f in data.get("features", []) if f.get("drifted")][:MAX_HIGHLIGHTS]
    scored = [s for s in data.get("feedback_slices", []) if s.get("score") is not None]
    worst = sorted(scored, key=lambda s: s["score"])[:3]
    parts = []
    if decayed:
        parts.append(f"Performance decayed: {decay.get('verdict')}.")
    if drift:
        parts.append(f"{round(100 * drift['share'])}% of the features drifted (threshold "
                     f"{round(100 * drift['threshold'])}%)" + (f", worst {', '.join(features[:3])}." if features else "."))
    if worst:
        parts.append("Weakest feedback slices: " + ", ".join(f"{s['column']}={s['value']} ({s['metric']} "
                                                           f"{s['score']:.3f})" for s in worst) + ".")
    retrain = decayed or drifted
    window = int(data.get("window", {}).get("default_days", 42))
    parts.append(f"Train a challenger on the last {window} days and compare it with the champion on the latest of "
                 "them." if retrain else "Neither decay nor dataset drift: no retraining.")
    return RetrainAnswer(
        retrain=retrain, window_days=window, highlight_features=features,
        highlight_slices=[{"column": s["column"], "value": s["value"]} for s in worst],  # type: ignore[misc]
        rationale=" ".join(parts), cited_chunks=[c["id"] for c in data.get("citations", [])[:2]],
    )


def validate_answer(answer: RetrainAnswer, request: Any) -> list[str]:
    """Deterministic checks of a planner's answer against the evidence it was given."""
    data = request.data
    errors: list[str] = []
    features = {f["name"] for f in data.get("features", [])}
    bad = [f for f in answer.highlight_features if f not in features]
    if bad:
        errors.append(f"highlight_features names unknown feature(s) {', '.join(map(repr, bad))}; "
                      f"use only {', '.join(sorted(features))}")
    slices = {(s["column"], s["value"]) for s in data.get("feedback_slices", [])}
    bad_slices = [f"{s.column}={s.value}" for s in answer.highlight_slices if (s.column, s.value) not in slices]
    if bad_slices:
        errors.append(f"highlight_slices names unknown slice(s) {', '.join(bad_slices)}; use only the listed "
                      "feedback_slices")
    window = data.get("window", {})
    lo, hi = window.get("min_days", 1), window.get("max_days", 365)
    if not lo <= answer.window_days <= hi:
        errors.append(f"window_days {answer.window_days} is outside the policy's bounds {lo}..{hi}")
    if not answer.retrain and (data.get("decay") or {}).get("decayed"):
        errors.append("retrain is false but performance decayed; a challenger must be tried")
    cited = {c["id"] for c in data.get("citations", [])}
    bad_cites = [c for c in answer.cited_chunks if c not in cited]
    if bad_cites:
        errors.append(f"cited_chunks names chunk(s) not given: {', '.join(bad_cites)}")
    if not answer.rationale.strip():
        errors.append("the rationale is empty")
    return errors


def plan(case: RetrainCase, rt: Runtime) -> Plan[RetrainAnswer, RetrainProof]:
    """The planner (`agents.llm.plan`: OpenAI when configured, else `offline_solution`), every answer through
    `validate_answer`; nothing to plan when the evidence is missing (`problems`)."""
    from pipewarden.agents.llm import OfflinePlanner
    from pipewarden.agents.llm import plan as ask
    from pipewarden.tools.drift import TOOLS as DRIFT_TOOLS
    from pipewarden.tools.drift import ModelHealth
    from pipewarden.tools.model_registry import TOOLS as REGISTRY_TOOLS
    from pipewarden.tools.model_registry import RegisteredVersion

    if case.problems or not case.health:
        return Plan(planner="offline", tried=list(case.problems))
    health = ModelHealth.model_validate(case.health)
    champ = RegisteredVersion.model_validate(case.champion) if case.champion else None
    request = plan_request(health, champ, case.citations, _policy())
    outcome = ask(request, RetrainAnswer, offline=OfflinePlanner(offline_solution),
                  validate=lambda a: validate_answer(a, request), tools=[*DRIFT_TOOLS, *REGISTRY_TOOLS],
                  primary=rt.planner())
    return Plan(answer=outcome.answer, planner=outcome.planner or "offline", tried=list(outcome.tried),
                usage=outcome.usage.model_dump(mode="json"))


# --------------------------------------------------------------------------- prove: train and compare
def prove(answer: RetrainAnswer, case: RetrainCase, rt: Runtime) -> RetrainProof:
    """Train a challenger with the champion's recipe on the planned window (`tools.challenger.train_challenger`:
    an MLflow run, registered, alias `challenger`; idempotent: tagged with the event, a re-run finds it again),
    then compare it with the champion on the recent holdout under the retrain policy's gates
    (`tools.challenger.compare_models`). Nothing to train when the plan advises against it."""
    from pipewarden.tools.challenger import (
        ChallengerError,
        ChallengerSpec,
        CompareInput,
        compare_models,
        train_challenger,
    )
    from pipewarden.tools.drift import DriftInputError
    from pipewarden.tools.model_registry import RegistryError

    if not answer.retrain:
        return RetrainProof()
    champ = case.champion or {}
    spec = ChallengerSpec(  # holdout share, sample sizes: the retrain policy's; tables: the model's declaration
        model_name=champ["model_name"], base_version=champ["version"], window_days=answer.window_days,
        event_id=str(case.event.id),
    )
    try:
        run = train_challenger(spec)
    except (ChallengerError, RegistryError, UnknownNameError) as exc:
        return RetrainProof(problems=[f"training a challenger failed: {exc.message}"])
    challenger = run.model_dump(mode="json")
    try:
        cmp = compare_models(CompareInput(
            model_name=challenger["model_name"], champion_version=champ["version"],
            challenger_version=challenger["version"]), _policy())
    except (ChallengerError, DriftInputError, RegistryError, UnknownNameError) as exc:
        return RetrainProof(challenger=challenger, problems=[f"comparing failed: {exc.message}"])
    return RetrainProof(challenger=challenger, comparison=cmp.model_dump(mode="json"))


def _evidence(cmp: Any, health: Any) -> DryRun:
    """The comparison as a DryRun: the champion's gate before, the challenger's after, the numbers in metrics."""
    metric = cmp.metric
    metrics: dict[str, float] = {
        f"champion_{metric}": cmp.champion_score, f"challenger_{metric}": cmp.challenger_score,
        f"delta_{metric}": cmp.delta, f"champion_train_{metric}": cmp.champion_train_score,
        f"champion_drop_{metric}": cmp.champion_drop, "min_improvement": cmp.min_improvement,
        "max_slice_regression": cmp.max_slice_regression, "min_slice_rows": float(cmp.min_slice_rows),
        "holdout_rows": float(cmp.rows), "holdout_positives": float(cmp.positives),
    }
    if health is not None:
        if health.decay.value is not None:
            metrics[f"feedback_{health.decay.metric}"] = health.decay.value
        if health.drift is not None:
            metrics["drift_share"] = health.drift.share
    for s in cmp.slices:
        if s.gated:
            metrics[f"slice:{s.name}:champion_{metric}"] = s.champion  # type: ignore[assignment]
            metrics[f"slice:{s.name}:challenger_{metric}"] = s.challenger  # type: ignore[assignment]
    clean = {k: round(float(v), 6) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    notes = [f"holdout {cmp.holdout_start}..{cmp.holdout_end}: {cmp.rows} rows, {cmp.positives} positive"]
    if cmp.champion_score is not None and cmp.challenger_score is not None:
        notes.append(f"overall {metric}: champion v{cmp.champion_version} {cmp.champion_score:.4f}, challenger "
                     f"v{cmp.challenger_version} {cmp.challenger_score:.4f} ({cmp.delta:+.4f}; margin "
                     f"{cmp.min_improvement:g})")
    gated = [s for s in cmp.slices if s.gated]
    notes += [f"slice {s.describe(metric)}" + (" REGRESSED" if s.regressed else "")
              for s in sorted(gated, key=lambda s: s.delta if s.delta is not None else 0.0)]
    ungated = len(cmp.slices) - len(gated)
    if ungated:
        notes.append(f"{ungated} smaller slice(s) (under {cmp.min_slice_rows} rows or one class) reported, not gated")
    notes += cmp.notes
    sample = [{"slice": s.name, "rows": s.rows, f"champion_{metric}": s.champion,
               f"challenger_{metric}": s.challenger, "delta": s.delta, "regressed": s.regressed}
              for s in sorted(gated, key=lambda s: s.delta if s.delta is not None else 0.0)[:8]]
    before = CheckResult(passed=cmp.champion_passes, rows=cmp.rows, failed_checks=cmp.champion_failures)
    after = CheckResult(passed=cmp.challenger_passes, rows=cmp.rows,
                        failed_rows=sum(s.rows for s in cmp.slices if s.regressed),
                        failed_checks=cmp.challenger_failures)
    return DryRun(before=before, after=after, sample=sample, metrics=clean, notes=notes)


# --------------------------------------------------------------------------- propose
def _what_fired(ev: ModelDrift, health: Any) -> list[str]:
    lines = [f"- event: {ev.metric} = {ev.value:g} (threshold {ev.threshold:g}) on load {ev.load_id}"]
    if health is None:
        return lines
    lines.append(f"- performance on labelled feedback: {health.decay.verdict}")
    if health.drift is not None:
        d = health.drift
        lines.append(f"- feature drift: {len(d.drifted_features)} of {len(d.features)} features "
                     f"({100 * d.share:.0f}%, dataset threshold {100 * d.share_threshold:.0f}%)")
    return lines


def propose(case: RetrainCase, plan: Plan[RetrainAnswer, RetrainProof], proof: RetrainProof | None,
            rt: Runtime) -> Proposal:
    """A `model_promotion` (champion alias -> challenger version; high risk, two-person rule) when the comparison
    heals, else "needs a human" (NoChange) with the numbers and what was tried."""
    from pipewarden.tools.challenger import Comparison
    from pipewarden.tools.drift import ModelHealth

    ev = case.event
    health = ModelHealth.model_validate(case.health) if case.health else None
    answer = plan.answer
    cmp = Comparison.model_validate(proof.comparison) if proof is not None and proof.comparison else None
    run = proof.challenger if proof is not None else None
    problems = [*case.problems, *(proof.problems if proof is not None else [])]
    name = (case.champion or {}).get("model_name") or _model_of(ev)[0]
    citations = list(case.citations)
    if answer is not None:
        citations = [c for c in citations if c.chunk_id in set(answer.cited_chunks)] or citations
    tried = list(plan.tried) + [p for p in problems if p not in plan.tried]
    diagnosis = [f"Model {name} (scored load {ev.load_id} with version {health.version if health else '?'}):",
                 *_what_fired(ev, health)]
    if answer is not None:
        if answer.highlight_features and health is not None and health.drift is not None:
            diagnosis.append("- drifted features: " + "; ".join(
                f.describe() for n in answer.highlight_features if (f := health.drift.feature(n)) is not None))
        if answer.highlight_slices and health is not None:
            by_name = {(s.column, s.value): s for s in health.feedback_slices}
            diagnosis.append("- weakest feedback slices: " + "; ".join(
                f"{s.column}={s.value} {m.metric} {m.score:.4f} ({m.rows} rows)" for s in answer.highlight_slices
                if (m := by_name.get((s.column, s.value))) is not None and m.score is not None))
        diagnosis.append(f"\nPlanned by the {plan.planner} planner: {answer.rationale}")
    if run:
        diagnosis.append(f"\nChallenger v{run['version']} (MLflow run {run['run_id']}) trained on "
                         f"{run['window_start']}..{run['split_date']} ({run['rows_train']} rows), held out "
                         f"{run['split_date']}..{run['window_end']} ({run['rows_holdout']} rows).")
    evidence = _evidence(cmp, health) if cmp is not None else None
    heals = evidence is not None and evidence.heals
    if heals and cmp is not None and run:
        change: Any = ModelPromotion(model_name=name, alias="champion", from_version=cmp.champion_version,
                                     to_version=cmp.challenger_version, run_id=run["run_id"])
        status = ProposalStatus.pending
        title = (f"{name}: promote v{cmp.challenger_version} over v{cmp.champion_version} "
                 f"({cmp.metric} {cmp.champion_score:.3f} -> {cmp.challenger_score:.3f} on recent data)")
        diagnosis.append("The champion fails its gate: " + "; ".join(cmp.champion_failures) + ". The challenger "
                         "passes every gate: margin and slices.")
    else:
        reasons: list[str] = []
        if answer is None:
            reasons.append("no valid retrain plan was found")
        elif not answer.retrain:
            reasons.append(f"the {plan.planner} planner advised not to retrain: {answer.rationale}")
        elif cmp is None:
            reasons.append("no challenger could be trained and compared")
        else:
            if cmp.challenger_failures:
                reasons.append("the challenger fails the gates: " + "; ".join(cmp.challenger_failures))
            if cmp.champion_passes:
                reasons.append("the champion holds its gate on the recent holdout (no decay there, and not beaten "
                               "by the margin)")
        reasons += [p for p in problems if p not in reasons]
        change = NoChange(reason="; ".join(reasons)[:2000] or "no promotion is supported by the evidence")
        status = ProposalStatus.needs_human
        title = f"{name}: drift or decay needs a human" + (
            f" (challenger v{cmp.challenger_version} fails the gates)" if cmp is not None and not cmp.challenger_passes
            else "")
        diagnosis.append("No promotion: " + change.reason)
        if evidence is None:
            rows = health.rows if health else 0
            failed = [ev.metric + f" {ev.value:g} past {ev.threshold:g}"]
            evidence = DryRun(before=CheckResult(passed=False, rows=rows, failed_checks=failed),
                              after=CheckResult(passed=False, rows=rows, failed_checks=failed),
                              notes=[*tried[-3:]])
    return proposal_for(
        ev, AGENT, dataset=ev.dataset, title=title, diagnosis="\n".join(diagnosis), change=change, dry_run=evidence,
        citations=citations, risk=Risk.high, required_roles=list(REQUIRED_ROLES), status=status,
        planner=plan.planner, tried=tried,
    )


# --------------------------------------------------------------------------- verify
def verify_promotion(proposal: Proposal, event: Any, rt: Runtime) -> Verification:
    """The alias points at the promoted version, and scoring through the alias works on the event's batch (or the
    challenger's holdout): every probability finite and in [0, 1]."""
    import numpy as np

    from pipewarden.tools.challenger import recent_window
    from pipewarden.tools.drift import sql_ident
    from pipewarden.tools.model_registry import alias_version, declared_model, load_model

    change = proposal.change
    if change.kind != "model_promotion":
        return Verification(True, {"verified": "nothing to verify for " + change.kind})
    current = alias_version(change.model_name, change.alias)
    now = current.version if current else None
    detail: dict[str, Any] = {"alias": change.alias, "points_at": now, "expected": change.to_version}
    if now != change.to_version:
        return Verification(False, detail, f"{change.model_name}@{change.alias} points at version {now or 'nothing'}, "
                                           f"not {change.to_version}")
    assert current is not None
    features = current.features
    try:
        _, decl = declared_model(registered=change.model_name)
        table = decl.features
        with rt.warehouse(read_only=True, wait_s=10.0) as wh:  # a pipeline stage may hold the file for seconds
            frame = None
            if wh.has_table(table) and getattr(event, "load_id", None):
                cols = ", ".join(sql_ident(c) for c in features)
                frame = wh.read_frame(f"SELECT {cols} FROM {sql_ident(table)} WHERE {sql_ident(decl.load_column)} = ?",
                                      [event.load_id])
        if frame is None or frame.empty:
            end = current.params.get("window_end")
            frame, _, _ = recent_window(decl, features, 7, end=date.fromisoformat(end) if end else None)
        model = load_model(change.model_name, alias=change.alias)
        proba = np.asarray(model.predict_proba(frame[features])[:, 1], dtype="float64")
    except (PipewardenError, KeyError, ValueError) as exc:
        return Verification(False, detail, f"scoring with {change.model_name}@{change.alias} failed: {exc}")
    detail |= {"scored_rows": len(proba), "mean_proba": round(float(proba.mean()), 6) if len(proba) else None}
    if not len(proba):
        return Verification(False, detail, "no rows to score with the promoted model")
    if not (np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()):
        return Verification(False, detail, "the promoted model returned probabilities outside [0, 1]")
    return Verification(True, detail)


SPEC: AgentSpec[RetrainCase, RetrainAnswer, RetrainProof] = AgentSpec(
    name=AGENT, handles=("model_drift",), case=RetrainCase, gather=gather, answer=RetrainAnswer, plan=plan,
    proof=RetrainProof, prove=prove, propose=propose, verifier=verify_promotion, reader_role=READER_ROLE,
)
