"""The cost agent, a spec (`SPEC`): from a CostRegression event to a proven, cheaper SQL model patch.

    gather -> plan -> propose -> (shared tail: heed -> submit -> await_decision -> apply -> verify)

- gather (`CostCase`, read once): the SQL the regressed build ran (by its hash in `model_sql`, else the active
  version or the file), the model's build history, and the last known-good SQL: the newest earlier build with
  other SQL whose cost was under the policy's threshold (else the previous `sql:<model>` version, else the file);
  then the current SQL is built once on the current data with DuckDB's profiler, and `tools.cost.diagnose` reads
  the plan and the SQL: lost filter, cartesian join, `SELECT *` over a wide table, non-sargable predicate,
  repeated scan.
- plan: candidates are the known-good SQL and `tools.cost.rule_rewrites`; the planner (`agents.llm.plan`: the
  OpenAI planner when configured, else the offline one) may add its own SQL. Every candidate passes
  `tools.sql_guard.check_select` over the tables the model reads, then `tools.cost.prove`: the same rows as the
  current SQL (EXCEPT ALL both ways, row counts) and at least `prove.min_saving` cheaper (rows or bytes scanned, or
  the median of timed builds). The cheapest proven candidate wins, with its proof (`CostProof`): proving is how
  the plan picks, so the spec has no separate prove step. None proven: the proposal needs a human. The fault's
  precedents (`case.precedents`, gathered like every planning agent's; empty while a cost regression names no
  fault signature) act before proving: a patch a person rejected is never proven again (and fails an LLM answer's
  validation), one people accepted wins when proven.
- propose: the proposal: a `sql_model_patch` (base_sql = the current SQL) with the cost before and after in
  `DryRun.metrics` and the diagnosis in `DryRun.notes`.
- verify (after approval): the active version's SQL is built on the current data: its rows must equal the regressed
  SQL's and its cost must be back under the policy's threshold over the event's baseline; else it rolls back.

Public names: `SPEC`, `AGENT`, `CostCase`, `CostProof`, `CostRewriteAnswer`, `verify_cost`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipewarden.agents.lifecycle import Verification, proposal_for
from pipewarden.agents.precedent import Precedent, change_identity, gather_precedents, rank, refusal
from pipewarden.agents.spec import AgentSpec, Plan
from pipewarden.events import CostRegression
from pipewarden.models import CheckResult, DryRun, NoChange, Proposal, ProposalStatus, Risk, SqlModelPatch
from pipewarden.runtime import Runtime
from pipewarden.store import StateStore

log = logging.getLogger(__name__)
AGENT = "cost"
SLOW_BUILD_MS = 500.0  # a current build slower than this is timed twice, not `timed_runs` times
SOURCE_ORDER = ("known_good", "rule", "llm")


class CostRewriteAnswer(BaseModel):
    """A planner's rewrite of a SQL model: one read-only SELECT and why it is cheaper."""

    model_config = ConfigDict(extra="forbid")
    sql: str = Field(description="One read-only SELECT returning exactly the current model's rows and columns.")
    rationale: str = Field(description="Why it returns the same rows and costs less, in one or two sentences.")


class CostCase(BaseModel):
    """What the agent gathered for one CostRegression event, read once: the SQL and its history (`evidence`), the
    current SQL's build on the current data (`current`, a `tools.cost.Measurement` as JSON) and the diagnosis."""

    event: CostRegression
    evidence: dict[str, Any]
    current: dict[str, Any]
    findings: list[dict[str, Any]] = Field(default_factory=list)
    precedents: list[Precedent] = Field(default_factory=list)
    """What people decided on this fault (this model's regressed cost measure) before
    (`agents.precedent.gather_precedents`), heard before drafting."""


class CostProof(BaseModel):
    """The chosen rewrite's proof (same rows, cheaper: `tools.cost.prove`, summarised) and every candidate's."""

    chosen: dict[str, Any]
    candidates: list[dict[str, Any]] = Field(default_factory=list)


def _connect() -> Any:
    """The sandbox the model's and the rules' SQL runs in: `tools.cost.open_warehouse`, DuckDB's locked read-only
    connection. Deliberately not the runtime's warehouse port: least privilege for SQL nobody vetted is the tool's
    guarantee, not something a runtime could swap for an unlocked connection."""
    from pipewarden.tools.cost import open_warehouse

    return open_warehouse(read_only=True)


def _metric(build: Any, metric: str) -> float | None:
    value = getattr(build, metric, None)
    return float(value) if value is not None else None


def _current_sql(con: Any, ev: CostRegression, history: list[Any], store: StateStore) -> tuple[str, str]:
    """The SQL the regressed build ran, and where it was found."""
    from pipewarden.tools.cost import sql_for_hash
    from pipewarden.tools.lineage import load_models

    mine = [b for b in history if b.load_id == ev.load_id]
    if mine and (sql := sql_for_hash(con, mine[-1].sql_hash)):
        return sql, f"model_sql {mine[-1].sql_hash}"
    active = store.active_version(f"sql:{ev.model}")
    if active is not None and isinstance(active.content.get("sql"), str):
        return active.content["sql"], f"sql:{ev.model} v{active.number}"
    return load_models()[ev.model].sql, "file"


def _hash(sql: str) -> str:
    """The hash transform records for a model's SQL (`flows.transform.sql_hash`, same formula)."""
    import hashlib

    return hashlib.sha256(sql.strip().encode()).hexdigest()[:12]


def _known_good(con: Any, ev: CostRegression, history: list[Any], current: str,
                store: StateStore) -> tuple[str | None, str, list[Any]]:
    """The last known-good SQL: the newest earlier build with other SQL and a cost under the threshold."""
    from pipewarden.policies.cost import load_cost_policy
    from pipewarden.tools.cost import sql_for_hash
    from pipewarden.tools.lineage import load_models
    
    rule = load_cost_policy().rule(ev.metric)
    limit = ev.baseline * (rule.ratio if rule else 1.5)
    cur_hash = _hash(current)
    regressed = max((i for i, b in enumerate(history) if b.load_id == ev.load_id), default=len(history))
    for build in reversed(history[:regressed]):
        value = _metric(build, ev.metric)
        if build.sql_hash != cur_hash and value is not None and value < limit:
            sql = sql_for_hash(con, build.sql_hash)
            if sql:
                return sql, f"build of load {build.load_id} ({ev.metric} {value:g}, SQL {build.sql_hash})", build.scans
    versions = [v for v in store.list_versions(f"sql:{ev.model}") if not v.active]
    for v in reversed(versions):
        sql = v.content.get("sql")
        if isinstance(sql, str) and _hash(sql) != cur_hash:
            return sql, f"sql:{ev.model} v{v.number}", []
    try:
        file_sql = load_models()[ev.model].sql
    except KeyError:
        return None, "none", []
    if _hash(file_sql) != cur_hash:
        return file_sql, f"the model file models/{ev.model}.sql", []
    return None, "none", []


def gather(ev: CostRegression, rt: Runtime) -> CostCase:
    """The SQL the regressed build ran, the model's build history, the last known-good SQL, and the current SQL
    built once on the current data with DuckDB's profiler, read by `tools.cost.diagnose`."""
    from pipewarden.tools.cost import ScanStat, measure, model_history, table_widths
    from pipewarden.tools.cost import diagnose as diagnose_sql

    store = rt.store()
    con = _connect()  # one sandbox connection for the reads and the build (opening one took 0.1-0.5 s under load)
    try:
        history = model_history(con, ev.model)
        current, current_source = _current_sql(con, ev, history, store)
        good, good_source, good_scans = _known_good(con, ev, history, current, store)
        widths = table_widths(con)
        m = measure(con, current, runs=1)
    finally:
        con.close()
    evidence = {
        "model": ev.model, "metric": ev.metric, "baseline": ev.baseline, "observed": ev.observed, "ratio": ev.ratio,
        "current_sql": current, "current_source": current_source, "known_good_sql": good,
        "known_good_source": good_source, "known_good_scans": [s.model_dump() for s in good_scans],
        "table_widths": widths,
        "history": [{"load_id": b.load_id, "elapsed_ms": b.elapsed_ms, "rows_scanned": b.rows_scanned,
                     "bytes_scanned": b.bytes_scanned, "sql_hash": b.sql_hash} for b in history[-8:]],
    }
    findings = diagnose_sql(current, m.profile, known_good_sql=good,
                            baseline_scans=[ScanStat.model_validate(s) for s in evidence["known_good_scans"]],
                            table_widths=widths)
    return CostCase(event=ev, evidence=evidence, current=m.model_dump(mode="json"),
                    findings=[f.model_dump(mode="json") for f in findings], precedents=gather_precedents(ev, state=store))


def _with_earlier(now: Any, earlier: Any) -> Any:
    """`now`'s measurement with `earlier`'s timed builds of the same SQL on the same data counted in (diagnose's
    build is the first of the timed runs, so a slow regressed model is not built once more just to be timed)."""
    import statistics

    times = [*earlier.elapsed_ms, *now.elapsed_ms]
    return now.model_copy(update={"elapsed_ms": times, "median_ms": round(statistics.median(times), 3)})


def _source_rank(source: str) -> int:
    head = source.split(":")[0]
    return SOURCE_ORDER.index(head) if head in SOURCE_ORDER else len(SOURCE_ORDER)


def _better(c: dict[str, Any], best: dict[str, Any]) -> bool:
    """Is proven candidate `c` cheaper than `best`? Exact scan counts first; time only when clearly lower."""
    if c["rows_scanned"] < best["rows_scanned"] * 0.98:
        return True
    if c["rows_scanned"] > best["rows_scanned"] * 1.02:
        return False
    if c["bytes_scanned"] < best["bytes_scanned"] * 0.95:
        return True
    if c["bytes_scanned"] > best["bytes_scanned"] * 1.05:
        return False
    return bool(c["median_ms"] < best["median_ms"] * 0.5)  # time decides only when clearly lower (noisy)


def _summary(source: str, sql: str, reason: str, proof: Any) -> dict[str, Any]:
    return {"source": source, "sql": sql, "reason": reason, "proven": proof.proven,
            "failure": "" if proof.proven else proof.failure(), "basis": proof.verdict.basis,
            "ratio": proof.verdict.ratio, "verdict": proof.verdict.reason, "median_ms": proof.after.median_ms,
            "rows_scanned": proof.after.rows_scanned, "bytes_scanned": proof.after.bytes_scanned,
            "rows_out": proof.after.rows_out, "before_median_ms": proof.before.median_ms,
            "before_rows_scanned": proof.before.rows_scanned, "before_bytes_scanned": proof.before.bytes_scanned,
            "before_rows_out": proof.before.rows_out, "before_runs": len(proof.before.elapsed_ms),
            "after_runs": len(proof.after.elapsed_ms), "only_current": proof.same.only_left,
            "only_rewrite": proof.same.only_right}


def plan(case: CostCase, rt: Runtime) -> Plan[CostRewriteAnswer, CostProof]:
    """Candidates (the known-good SQL, `tools.cost.rule_rewrites`, and the planner's own SQL) each pass
    `check_select` and are proven (`tools.cost.prove`): proving is how the cheapest is picked, so the answer
    comes with its proof."""
    from pipewarden.agents.llm import OfflinePlanner, PlanRequest, plan
    from pipewarden.agents.precedent import with_precedents
    from pipewarden.policies.cost import load_cost_policy
    from pipewarden.tools.cost import TOOLS, Candidate, Measurement, measure, prove, rule_rewrites, tables_read
    from pipewarden.tools.sql_guard import check_select

    ev = case.evidence
    current = ev["current_sql"]
    policy = load_cost_policy()
    allowed = tables_read(current) | (tables_read(ev["known_good_sql"]) if ev.get("known_good_sql") else set())
    allowed.discard(ev["model"].lower())
    deterministic: list[Candidate] = []
    if ev.get("known_good_sql"):
        deterministic.append(Candidate(source="known_good", sql=ev["known_good_sql"],
                                       reason=f"the last known-good version ({ev['known_good_source']})"))
    deterministic += rule_rewrites(current)

    def patch(sql: str) -> SqlModelPatch:
        return SqlModelPatch(model=ev["model"], sql=sql, base_sql=current)

    deterministic, ranked_notes = rank(deterministic, lambda c: change_identity(patch(c.sql)), case.precedents,
                                       describe=lambda c: f"the {c.source} rewrite")

    con = _connect()
    results: dict[str, dict[str, Any]] = {}
    tried: list[str] = []
    try:
        first = Measurement.model_validate(case.current)
        runs = policy.prove.timed_runs if first.median_ms < SLOW_BUILD_MS else min(policy.prove.timed_runs, 2)
        before = _with_earlier(measure(con, current, runs=max(1, runs - len(first.elapsed_ms)), into="__pw_cost_current"),
                               first)

        def check(source: str, sql: str, reason: str) -> list[str]:
            if sql in results:
                r = results[sql]
                return [] if r["proven"] else [r["failure"]]
            if case.precedents and (refused := refusal(case.precedents, patch(sql))):
                return [refused]  # rejected for this fault before: not proven again
            errors = check_select(sql, allowed_tables=allowed)
            if errors:
                return ["unsafe SQL: " + "; ".join(errors)]
            try:
                proof = prove(con, current, sql, runs=runs, min_saving=policy.prove.min_saving,
                              max_time_growth=policy.prove.max_time_growth, before=before)
            except Exception as exc:  # noqa: BLE001  # a candidate that fails in DuckDB is a rejected candidate
                return [f"the SQL failed on the current data: {getattr(exc, 'message', exc)}"]
            results[sql] = _summary(source, sql, reason, proof)
            return [] if proof.proven else [results[sql]["failure"]]

        for c in deterministic:
            errors = check(c.source, c.sql, c.reason)
            tried.append(f"{c.source}: " + ("proven: " + results[c.sql]["verdict"] if not errors else errors[0]))
        proven = sorted((r for r in results.values() if r["proven"]), key=lambda r: _source_rank(r["source"]))

        def solve(_request: PlanRequest) -> CostRewriteAnswer:
            best = _pick(proven)
            if best is None:
                return CostRewriteAnswer(sql="", rationale="no deterministic rewrite returned the same rows cheaper")
            return CostRewriteAnswer(sql=best["sql"], rationale=best["reason"] + "; " + best["verdict"])

        request = with_precedents(PlanRequest(
            agent=AGENT,
            task=(f"SQL model {ev['model']!r} regressed in cost ({ev['metric']} {ev['observed']:g} vs baseline "
                  f"{ev['baseline']:g}, x{ev['ratio']:g}). Write one DuckDB SELECT that returns exactly the same "
                  "rows and columns (names, order and types) as current_sql on the current data and costs at least "
                  f"{policy.prove.min_saving:.0%} less. Use the findings and the known-good SQL."),
            rules=["Keep every output column, its name, order and type; do not filter, add or drop rows.",
                   f"Read only these tables: {', '.join(sorted(allowed))}.",
                   "The rewrite is proven by running it: rows must match exactly and it must be measurably cheaper."],
            data={"model": ev["model"], "current_sql": current, "known_good_sql": ev.get("known_good_sql"),
                  "findings": [f["detail"] for f in case.findings],
                  "current_cost": {"median_ms": before.median_ms, "rows_scanned": before.rows_scanned,
                                   "bytes_scanned": before.bytes_scanned},
                  "history": ev.get("history", []), "tables": sorted(allowed)},
        ), case.precedents)

        def validate(answer: CostRewriteAnswer) -> list[str]:
            source = "llm" if answer.sql not in results or results[answer.sql]["source"] == "llm" else \
                results[answer.sql]["source"]
            return check(source, answer.sql, answer.rationale)

        outcome = plan(request, CostRewriteAnswer, offline=OfflinePlanner(solve), validate=validate, tools=TOOLS,
                       primary=rt.planner())
    finally:
        con.close()
    tried += outcome.tried + ranked_notes
    all_proven = sorted((r for r in results.values() if r["proven"]), key=lambda r: _source_rank(r["source"]))
    accepted = {p.identity for p in case.precedents if p.outcome == "accepted"}
    chosen = next((r for r in all_proven if change_identity(patch(r["sql"])) in accepted), None) or _pick(all_proven)
    planner = "offline"
    if chosen is not None and chosen["source"] == "llm":
        planner = outcome.planner or "openai"
    elif outcome.planner and outcome.planner != "offline" and chosen is not None:
        planner = outcome.planner if chosen["sql"] == (outcome.answer.sql if outcome.answer else None) else "offline"
    if chosen is None:
        return Plan(planner=planner, tried=tried, usage=outcome.usage.model_dump(mode="json"))
    return Plan(answer=CostRewriteAnswer(sql=chosen["sql"], rationale=chosen["reason"]), planner=planner, tried=tried,
                usage=outcome.usage.model_dump(mode="json"),
                proof=CostProof(chosen=chosen, candidates=list(results.values())))


def _pick(proven: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for c in proven:
        if best is None or _better(c, best):
            best = c
    return best


def propose(case: CostCase, plan: Plan[CostRewriteAnswer, CostProof], proof: CostProof | None,
            rt: Runtime) -> Proposal:
    """A `sql_model_patch` (base_sql = the current SQL) with the cost before and after in `DryRun.metrics` and the
    diagnosis in `DryRun.notes`; no proven rewrite: "needs a human"."""
    from pipewarden.policies.cost import load_cost_policy

    ev_obj = case.event
    ev = case.evidence
    rule = load_cost_policy().rule(ev["metric"])
    threshold = rule.ratio if rule else 0.0
    cur = case.current
    failed = (f"cost: {ev['metric']} {ev['observed']:g} is x{ev['ratio']:g} its baseline {ev['baseline']:g} "
              f"(policy: x{threshold:g})")
    findings = [f"{f['kind']} ({f['seen_in']}): {f['detail']}" for f in case.findings]
    before = CheckResult(passed=False, rows=int(cur.get("rows_out", 0)), failed_checks=[failed])
    chosen = proof.chosen if proof is not None else None
    notes = ["diagnosis: " + line for line in findings] or ["diagnosis: nothing in the plan or the SQL explains it"]
    notes.append(f"current SQL from {ev['current_source']}; known-good from {ev['known_good_source']}")
    common = dict(dataset=ev_obj.dataset, required_roles=["owner"], planner=plan.planner, tried=plan.tried)
    if chosen is None:
        evidence = DryRun(before=before, after=before, notes=notes + [f"tried {t}" for t in plan.tried])
        return proposal_for(
            ev_obj, AGENT, **common, title=f"{ev['model']}: cost regression needs a human",
            diagnosis=(f"SQL model {ev['model']} costs x{ev['ratio']:g} its baseline ({ev['metric']}). No rewrite "
                       "returned the same rows and was cheaper.\n" + "\n".join(f"- {f}" for f in findings)),
            change=NoChange(reason="no proven rewrite; " + " | ".join(plan.tried[-3:])),
            dry_run=evidence, risk=Risk.high, status=ProposalStatus.needs_human)
    metrics = {
        "cost_before_ms": chosen["before_median_ms"], "cost_after_ms": chosen["median_ms"],
        "rows_scanned_before": float(chosen["before_rows_scanned"]), "rows_scanned_after": float(chosen["rows_scanned"]),
        "bytes_scanned_before": float(chosen["before_bytes_scanned"]),
        "bytes_scanned_after": float(chosen["bytes_scanned"]),
        "ratio": chosen["ratio"], "rows_before": float(chosen["before_rows_out"]), "rows_after": float(chosen["rows_out"]),
        "rows_only_in_current": float(chosen["only_current"]), "rows_only_in_rewrite": float(chosen["only_rewrite"]),
        "timed_runs": float(chosen["after_runs"]), "baseline": float(ev["baseline"]), "observed": float(ev["observed"]),
    }
    notes.append(f"rewrite from {chosen['source']}: {chosen['reason']}")
    notes.append(f"same rows: {chosen['rows_out']} rows, EXCEPT ALL empty both ways (floats to 10 significant digits)")
    notes.append(f"cheaper by {chosen['basis']}: {chosen['verdict']} (policy: at least "
                 f"{load_cost_policy().prove.min_saving:.0%})")
    after = CheckResult(passed=True, rows=int(chosen["rows_out"]))
    change = SqlModelPatch(model=ev["model"], sql=chosen["sql"], base_sql=ev["current_sql"],
                           reason=(findings[0] if findings else "cost regression") + f"; {chosen['verdict']}")
    return proposal_for(
        ev_obj, AGENT, **common, title=f"{ev['model']}: {chosen['verdict']}",
        diagnosis=(f"SQL model {ev['model']} costs x{ev['ratio']:g} its baseline ({ev['metric']} {ev['observed']:g} "
                   f"vs {ev['baseline']:g}).\n" + "\n".join(f"- {f}" for f in findings)
                   + f"\n\nProposed: the {chosen['source']} rewrite, proven on the current data to return the same "
                   f"{chosen['rows_out']} rows; {chosen['verdict']}."),
        change=change, dry_run=DryRun(before=before, after=after, metrics=metrics, notes=notes), risk=Risk.medium,
        status=ProposalStatus.pending)


def verify_cost(proposal: Proposal, event: Any, rt: Runtime) -> Verification:
    """Build the active version of the patched model on the current data: same rows as the regressed SQL, and its
    cost on the event's metric back under the policy's threshold over the event's baseline."""
    from pipewarden.policies.cost import load_cost_policy
    from pipewarden.tools.cost import measure, same_rows

    change = proposal.change
    if not isinstance(change, SqlModelPatch) or not isinstance(event, CostRegression):
        return Verification(True, {"verify": "nothing to check"})
    active = rt.store().active_version(change.target)
    if active is None or active.content.get("sql") != change.sql:
        return Verification(False, {"active": active.number if active else None},
                            f"the active {change.target} is not the approved SQL")
    policy = load_cost_policy()
    rule = policy.rule(event.metric)
    ratio_limit = rule.ratio if rule else 1.5
    con = _connect()
    try:
        new = measure(con, change.sql, runs=min(policy.prove.timed_runs, 3), into="__pw_verify_new")
        measure(con, change.base_sql, runs=1, into="__pw_verify_old")
        same = same_rows(con, "__pw_verify_old", "__pw_verify_new")
    finally:
        con.close()
    observed = {"elapsed_ms": new.median_ms, "rows_scanned": new.rows_scanned,
                "bytes_scanned": new.bytes_scanned}.get(event.metric, new.median_ms)
    ratio = observed / event.baseline if event.baseline else 0.0
    detail = {"model": change.model, "metric": event.metric, "observed": observed, "baseline": event.baseline,
              "ratio": round(ratio, 4), "threshold": ratio_limit, "rows": new.rows_out, "same_rows": same.same}
    if not same.same:
        return Verification(False, detail, f"the patched {change.model} returns different rows: {same.detail}")
    if ratio >= ratio_limit:
        return Verification(False, detail, f"{change.model} still costs x{ratio:.2f} its baseline ({event.metric})")
    return Verification(True, detail)


SPEC: AgentSpec[CostCase, CostRewriteAnswer, CostProof] = AgentSpec(
    name=AGENT, handles=("cost_regression",), case=CostCase, gather=gather, answer=CostRewriteAnswer, plan=plan,
    proof=CostProof, propose=propose, verifier=verify_cost,
)
