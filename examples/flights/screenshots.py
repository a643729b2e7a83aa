#!/usr/bin/env python3
"""Screenshots of the inbox's proposal page, one per kind, for docs/inbox.md, taken of this example project: `python examples/flights/screenshots.py`.

It copies the flights example project to a temporary folder, stores one proposal of each kind in a fresh
PIPEWARDEN_HOME (a schema-drift mapping, a quality quarantine, a cost SQL patch, a retrain model promotion, one
that needs a human, and a mapping already applied and verified), starts the real `pipewarden serve --no-worker`
on a free port, signs in as alice with a personal token in Debian's Chromium (Playwright drives it; run
`scripts/ensure-chromium` first) and saves `docs/screenshots/<kind>.png`. The proposals' contents are written out
here (no agent or LLM runs) so the pictures are the same on every run, apart from ages and ids.

Options: `--out DIR` (default docs/screenshots), `--width`/`--height` of the viewport (default 1280 x 900),
`--full-page` to capture the whole page instead of the first screen.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(project: Path) -> dict[str, str]:
    """Store one proposal of each page kind; returns {screenshot name: proposal id}."""
    from datetime import timedelta

    from pipewarden.events import ColumnSpec, CostRegression, ModelDrift, QualityAnomaly, SchemaDrift, TypeChange
    from pipewarden.ids import utcnow
    from pipewarden.models import (
        CheckResult,
        Citation,
        ColumnMapping,
        DryRun,
        ModelPromotion,
        NoChange,
        Proposal,
        ProposalStatus,
        Quarantine,
        Risk,
        SqlModelPatch,
        Verdict,
    )
    from pipewarden.store import StateStore

    store = StateStore()
    now = utcnow()
    runbook = Citation(chunk_id="rb-1", source="runbooks/schema-drift.md", kind="runbook", dataset="flights",
                       owner="flights-data-team", updated_at=now - timedelta(days=12), score=0.82,
                       excerpt="A renamed column keeps its values: map it back to the contract's name rather than "
                               "changing the contract.")
    contract = Citation(chunk_id="c-1", source="contracts/flights.yaml", kind="contract", dataset="flights",
                        owner="flights-data-team", updated_at=now - timedelta(days=40), score=0.77,
                        excerpt="dep_delay: float, nullable, min -120, max 1500. Departure delay in minutes.")
    ids: dict[str, str] = {}

    def add(name: str, event: Any, **fields: Any) -> Proposal:
        store.append_event(event)
        p = store.create_proposal(Proposal(event_id=event.id, dataset=event.dataset, thread_id=f"t-{event.id}",
                                           **fields))
        ids[name] = str(p.id)
        return p

    sample = [dict(year=2013, month=2, day=1 + i, carrier="UA", flight=1545 + i, origin="EWR", dest="IAH",
                   dep_delay=2.0 + 3 * i, arr_delay=11.0 - i) for i in range(5)]
    drift = SchemaDrift(dataset="flights", load_id="flights-2013-02", batch_path=str(project / "feb.csv"),
                        contract_version="flights@v1",
                        added=[ColumnSpec(name="departureDelay", type="float", samples=[2.0, -3.0, 14.0])],
                        dropped=[ColumnSpec(name="dep_delay", type="float")],
                        retyped=[TypeChange(column="flight", expected="integer", observed="string")])
    mapping = dict(
        agent="schema_drift", title="flights: map departureDelay -> dep_delay, cast flight to integer",
        diagnosis="The February batch calls dep_delay departureDelay (same values and range as January's "
                  "dep_delay) and sends flight numbers as strings.",
        change=ColumnMapping(dataset="flights", renames={"departureDelay": "dep_delay"}, casts={"flight": "integer"}),
        dry_run=DryRun(before=CheckResult(passed=False, rows=27004, schema_errors=[
            "contract column 'dep_delay' (float) is missing", "flight is string, the contract says integer"]),
            after=CheckResult(passed=True, rows=27004), sample=sample),
        citations=[runbook, contract])
    add("schema-drift-mapping", drift, **mapping)

    verified = add("verified", drift.model_copy(update={"id": drift.id.__class__(int=drift.id.int + 1),
                                                         "load_id": "flights-2013-03"}), **mapping)
    from pipewarden.inbox import service

    service.decide(str(verified.id), Verdict.approve, "alice", "the values match dep_delay", via="web", resume=False,
                   store=store)
    from pipewarden.tools.apply import apply_change, mark_verified

    apply_change(verified.id)  # the kernel's real apply: a new mapping version, active
    mark_verified(verified.id, {"rerun_status": "completed", "load_id": "flights-2013-03", "rows_in": 27004,
                                "rows_quarantined": 12})

    anomaly = QualityAnomaly(dataset="flights", load_id="flights-2013-04", check="range", column="dep_delay",
                             batch_path=str(project / "apr.csv"), observed=0.004, expected=0.0)
    add("quality", anomaly, agent="quality", title="flights: quarantine rows with dep_delay over 1500 minutes",
        diagnosis="108 rows of the April batch have dep_delay of 9999, a sentinel the source writes for 'unknown'; "
                  "every other column of those rows is sound.",
        change=Quarantine(dataset="flights", load_id="flights-2013-04", predicate="dep_delay >= 9999",
                          reason="9999 is the source's sentinel for an unknown delay", rows=108, batch_rows=27004),
        dry_run=DryRun(before=CheckResult(passed=False, rows=27004, failed_rows=108,
                                          failed_checks=["range on dep_delay: 108 rows over 1500"]),
                       after=CheckResult(passed=True, rows=26896),
                       metrics={"rows_taken_out": 108.0, "fraction_taken_out": 0.004},
                       notes=["108 of 27004 rows (0.4%) match 'dep_delay >= 9999' and go to quarantine; the rest of "
                              "the batch passes"],
                       sample=[{**r, "dep_delay": 9999.0} for r in sample[:3]]),
        citations=[Citation(chunk_id="rb-2", source="runbooks/quality.md", kind="runbook", dataset="flights",
                            owner="flights-data-team", updated_at=now - timedelta(days=3), score=0.74,
                            excerpt="Sentinel values (9999, -1) are quarantined with their reason, never dropped.")])

    base = (REPO / "examples/flights/models/carrier_daily.sql").read_text(encoding="utf-8")
    faster = base.replace("COUNT(DISTINCT s.tailnum) AS planes", "APPROX_COUNT_DISTINCT(s.tailnum) AS planes")
    cost = CostRegression(dataset="flights", model="carrier_daily", baseline=410.0, observed=1930.0, ratio=4.7)
    add("cost-sql", cost, agent="cost", title="carrier_daily: count planes approximately (4.7x slower since v3)",
        diagnosis="carrier_daily's build went from 410 ms to 1,930 ms; the profile puts 78% of it in the exact "
                  "distinct count of tail numbers.", risk=Risk.medium,
        change=SqlModelPatch(model="carrier_daily", sql=faster, base_sql=base,
                             reason="an approximate distinct count is within 2% here and 5x cheaper"),
        dry_run=DryRun(before=CheckResult(passed=True, rows=5840), after=CheckResult(passed=True, rows=5840),
                       metrics={"cost_before_ms": 1930.0, "cost_after_ms": 388.0, "max_relative_difference": 0.018},
                       notes=["same rows and columns; planes differs by at most 1.8%"]))

    drifted = ModelDrift(dataset="flights", model="delay_model", metric="auc", value=0.61, threshold=0.7,
                         drifted_features=["dep_delay", "hour"])
    add("retrain-model", drifted, agent="retrain", title="delay_model: promote version 5 (AUC 0.61 -> 0.78)",
        diagnosis="The champion's AUC on the last 3 loads fell to 0.61; dep_delay and hour drifted. A challenger "
                  "trained on the recent loads scores 0.78 on the held-out load.", risk=Risk.high,
        change=ModelPromotion(model_name="delay_model", from_version="4", to_version="5", run_id="9f1c2a"),
        dry_run=DryRun(before=CheckResult(passed=False, rows=8100), after=CheckResult(passed=True, rows=8100),
                       metrics={"champion_auc": 0.61, "challenger_auc": 0.78}))

    human = QualityAnomaly(dataset="flights", load_id="flights-2013-05", check="volume", observed=4100,
                           expected=27000)
    add("needs-a-human", human, status=ProposalStatus.needs_human, agent="quality", title="flights: the May batch has 15% of its usual rows",
            diagnosis="4,100 rows where 27,000 are usual; the source file ends mid-day on May 3rd. No change on "
                      "this batch can bring the missing rows back.",
            change=NoChange(reason="the rows are missing from the source; ask the provider to re-deliver May"),
            tried=["a re-ingest of the same file (it is the same 4,100 rows)"])
    return ids


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args.add_argument("--width", type=int, default=1280)
    args.add_argument("--height", type=int, default=900)
    args.add_argument("--full-page", action="store_true")
    opts = args.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: run scripts/ensure-chromium first", file=sys.stderr)
        return 2
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pw-screens-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(REPO / "examples" / "flights", project,
                        ignore=shutil.ignore_patterns("__pycache__", ".pipewarden"))
        env = {**os.environ, "PIPEWARDEN_PROJECT": str(project), "PIPEWARDEN_HOME": str(Path(tmp) / "home"),
               "PIPEWARDEN_EMIT_PREFECT_EVENTS": "false"}
        os.environ.update(env)
        from pipewarden.settings import get_settings
        from pipewarden.store import StateStore

        get_settings.cache_clear()
        ids = seed(project)
        token = StateStore().issue_token("alice")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "pipewarden", "serve", "--no-worker", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            shoot(f"http://127.0.0.1:{port}", proc, token, ids, opts)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def shoot(base: str, proc: subprocess.Popen, token: str, ids: dict[str, str], opts: argparse.Namespace) -> None:
    import httpx
    from playwright.sync_api import sync_playwright

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"pipewarden serve exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"pipewarden serve did not answer within {STARTUP_TIMEOUT_S:.0f}s")
        time.sleep(0.2)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": opts.width, "height": opts.height})
            page.goto(f"{base}/login")
            page.fill("input[name=token]", token)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#signed-in-as")
            for name, pid in ids.items():
                page.goto(f"{base}/proposals/{pid}")
                page.wait_for_selector("#decision-bar")
                path = opts.out / f"{name}.png"
                page.screenshot(path=str(path), full_page=opts.full_page)
                print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
            page.goto(f"{base}/?status=all")
            page.screenshot(path=str(opts.out / "queue.png"))
            print(f"wrote {opts.out / 'queue.png'}")
        finally:
            browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
