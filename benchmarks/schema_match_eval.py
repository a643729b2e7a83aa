"""How well the schema matcher finds correspondences outside flights: recall at the size of the ground truth per
kind of split, no-match and one-to-many answers, and the calibration error of its probabilities.

    .venv/bin/python benchmarks/schema_match_eval.py [--seeds 5] [--embedder none|minilm|both] [--json]
    .venv/bin/python benchmarks/schema_match_eval.py --fit     # refit tools.schema_match.CALIBRATION, print it

Pairs come from `pipewarden.evals.match_pairs` (vega_datasets' and statsmodels' bundled tables, split the four
ways of Valentine, renamed and perturbed). Figures are measured on `REPORT_TABLES`; `--fit` fits the logistic
calibration on `FIT_TABLES` only (seeds 100 on), so the reported calibration error is on held-out tables.

Recall@GT (Valentine's measure): every listed candidate pair (new column, reference column) of a pair of tables is
ranked by its calibrated probability; of the top |ground truth| pairs, the share that are true. Averaged over the
pairs of tables of a split kind. ECE: expected calibration error over 10 equal-width probability bins, weighted by
the pairs in each bin, for (a) every listed candidate's probability, (b) each answer's probability (the match, the
one-to-many sources or no-match, being right) and (c) the no-match probability of every new column.
A script's part, not a test: it prints figures; tests/tools/test_schema_match_pairs.py keeps the floors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def evaluate(pairs: list[Any], embedder: Any) -> dict[str, Any]:
    from pipewarden.evals.match_pairs import SPLITS, answer_right, ece, recall_at_gt
    from pipewarden.tools.schema_match import match_columns

    per: dict[str, list[float]] = {s: [] for s in SPLITS}
    cand_pts: list[tuple[float, bool]] = []
    answer_pts: list[tuple[float, bool]] = []
    none_pts: list[tuple[float, bool]] = []
    unmatched = no_match_right = matched_cols = false_no_match = merges = merges_found = 0
    t0 = time.process_time()
    for pair in pairs:
        report = match_columns(pair.reference, pair.new, embedder=embedder)
        per[pair.split].append(recall_at_gt(report, pair.truth))
        for m in report.matches:
            for c in m.candidates:
                cand_pts.append((c.probability, (m.column, c.column) in pair.truth))
            answer_pts.append((m.probability, answer_right(m, pair)))
            none = m.column in pair.unmatched
            none_pts.append((m.no_match_probability, none))
            if none:
                unmatched += 1
                no_match_right += m.correspondence == "no_match"
            else:
                matched_cols += 1
                false_no_match += m.correspondence == "no_match"
            if m.column in pair.merged:
                merges += 1
                merges_found += m.correspondence == "one_to_many" and set(m.sources) == set(pair.merged[m.column])
    return {
        "pairs": len(pairs),
        "recall_at_gt": {s: round(sum(v) / len(v), 3) for s, v in per.items() if v},
        "recall_at_gt_all": round(sum(sum(v) for v in per.values()) / max(1, sum(len(v) for v in per.values())), 3),
        "no_match": {"columns": unmatched, "answered_no_match": no_match_right,
                     "true_columns_answered_no_match": false_no_match, "true_columns": matched_cols},
        "one_to_many": {"merged_columns": merges, "found_with_their_sources": merges_found},
        "ece": {"candidates": round(ece(cand_pts), 3), "answers": round(ece(answer_pts), 3),
                "no_match": round(ece(none_pts), 3)},
        "answers_right": round(sum(1 for _, y in answer_pts if y) / max(1, len(answer_pts)), 3),
        "cpu_s": round(time.process_time() - t0, 2),
    }


def fit(pairs: list[Any], embedder: Any) -> dict[str, list[float]]:
    """Logistic fits of the pair and no-match probabilities on every candidate of the pairs (none left out)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import pipewarden.tools.schema_match as sm

    saved, sm._CANDIDATES = sm._CANDIDATES, 10**6
    try:
        xp, yp, xn, yn = [], [], [], []
        for pair in pairs:
            report = sm.match_columns(pair.reference, pair.new, embedder=embedder)
            for m in report.matches:
                cands = m.candidates
                scores = sorted((c.score for c in cands), reverse=True)
                for c in cands:
                    others = [c2.score for c2 in cands if c2 is not c]
                    margin = c.score - max(others) if others else c.score
                    if c.score == 1.0 and c.column == m.column:
                        margin = 1.0
                    xp.append([c.score, margin, c.containment])
                    yp.append((m.column, c.column) in pair.truth)
                best = max(cands, key=lambda c: c.score, default=None)
                if best is None:
                    xn.append([0.0, 0.0, 0.0])
                else:
                    margin = 1.0 if best.column == m.column else (
                        scores[0] - scores[1] if len(scores) > 1 else scores[0])
                    xn.append([best.score, margin, max(c.containment for c in cands)])
                yn.append(m.column in pair.unmatched)
    finally:
        sm._CANDIDATES = saved
    out = {}
    for key, x, y in (("pair", xp, yp), ("no_match", xn, yn)):
        model = LogisticRegression(C=10.0, max_iter=2000).fit(np.array(x), np.array(y))
        out[key] = [round(float(model.intercept_[0]), 3)] + [round(float(w), 3) for w in model.coef_[0]]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per table and split (default 5)")
    ap.add_argument("--embedder", choices=("none", "minilm", "both"), default="both")
    ap.add_argument("--fit", action="store_true", help="fit the calibration on FIT_TABLES and print it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from pipewarden.evals.match_pairs import FIT_TABLES, REPORT_TABLES, pairs

    embedders: list[tuple[str, Any]] = []
    if args.embedder in ("none", "both"):
        embedders.append(("names+values", None))
    if args.embedder in ("minilm", "both"):
        from pipewarden.knowledge.embedder import default_embedder

        embedders.append(("names+embedding+values", default_embedder()))
    if args.fit:
        train = pairs(FIT_TABLES, range(100, 100 + args.seeds))
        for key, emb in embedders:
            print(f'    "{key}": {fit(train, emb)}')
        return 0
    test = pairs(REPORT_TABLES, range(args.seeds))
    results = {key: evaluate(test, emb) for key, emb in embedders}
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    for key, r in results.items():
        print(f"{key}: {r['pairs']} pairs of tables from {', '.join(REPORT_TABLES)} ({r['cpu_s']} s CPU)")
        for split, v in r["recall_at_gt"].items():
            print(f"  recall@GT {split:<22} {v:.3f}")
        print(f"  recall@GT all                    {r['recall_at_gt_all']:.3f}")
        nm, om = r["no_match"], r["one_to_many"]
        print(f"  no-match: {nm['answered_no_match']}/{nm['columns']} unmatched columns answered no_match; "
              f"{nm['true_columns_answered_no_match']}/{nm['true_columns']} matched columns wrongly so")
        print(f"  one-to-many: {om['found_with_their_sources']}/{om['merged_columns']} merged columns found with "
              f"their sources")
        print(f"  answers right {r['answers_right']:.3f}; ECE candidates {r['ece']['candidates']:.3f}, answers "
              f"{r['ece']['answers']:.3f}, no-match {r['ece']['no_match']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
