"""The retrain agent on a model that is not the flights example's: a synthetic `accounts` project built here, whose
project file declares a churn model (`[ml_models.churn]`: its own features table, label, id, time and slice columns,
predictions table and a scikit-learn trainer in the project's own package). Nothing in pipewarden knows its names.

The concept flips after day 90 (churn follows `usage` at first, then `tenure`): the champion trained on the first
90 days decays on the later load, the detector raises a model-drift event on the `accounts` dataset, the retrain
agent trains a challenger with the champion's recipe on the declared time column's recent days, compares them under
the gates, and proposes the alias move; two people approve it; the alias moves and verification scores through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipewarden.errors import ConfigError, UnknownNameError

PROJECT_FILE = """\
name = "accounts"
approvers = "approvers.yaml"

[datasets.accounts]
owner = "accounts-team"
contract = "contracts/accounts.yaml"

[ml_models.churn]
registered_model = "acme-churn"
dataset = "accounts"
features = "account_features"
feature_columns = ["usage", "tenure", "plan"]
label = "churned"
id_column = "account_id"
time_column = "observed_on"
load_column = "batch"
slices = ["region"]
predictions = "churn_scores"
trainer = "acme_ml.churn:fit"
params = { C = 1.0 }
min_rows = 500
"""

APPROVERS = """\
approvers:
  - {name: mia, roles: [ml_owner], datasets: [accounts]}
  - {name: olga, roles: [owner], datasets: [accounts]}
"""

TRAINER = '''\
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def fit(frame, *, label, features, params):
    numbers = [f for f in features if f != "plan"]
    prep = ColumnTransformer([("n", StandardScaler(), numbers), ("c", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression(C=params.get("C", 1.0)))])
    return model.fit(frame[features], frame[label].astype(int))
'''

RETRAIN_POLICY = """\
# the project's own retrain policy: the shipped gates, with slices of 150 holdout rows judged
gates: {metric: auc, min_improvement: 0.01, max_slice_regression: 0.05, min_slice_rows: 150}
"""

ROWS_PER_DAY = 60
FLIP_DAY = 90


def _accounts(first_day: int, last_day: int, seed: int) -> pd.DataFrame:
    """Synthetic accounts, `ROWS_PER_DAY` a day; churn follows usage before FLIP_DAY and tenure after it."""
    rng = np.random.default_rng(seed)
    days = np.repeat(np.arange(first_day, last_day + 1), ROWS_PER_DAY)
    n = len(days)
    usage, tenure = rng.normal(0, 1, n), rng.normal(0, 1, n)
    signal = np.where(days < FLIP_DAY, -2.5 * usage, -2.5 * tenure)
    churned = rng.random(n) < 1 / (1 + np.exp(-signal))
    return pd.DataFrame({
        "account_id": [f"a{seed}-{i}" for i in range(n)],
        "observed_on": pd.Timestamp("2025-01-01") + pd.to_timedelta(days, unit="D"),
        "batch": np.where(days < FLIP_DAY, "early", "late"),
        "usage": usage, "tenure": tenure, "plan": rng.choice(["basic", "pro"], n),
        "region": rng.choice(["north", "south"], n), "churned": churned,
    })


@pytest.fixture
def accounts_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from pipewarden.settings import get_settings

    root = tmp_path / "accounts"
    (root / "acme_ml").mkdir(parents=True)
    (root / "contracts").mkdir()
    (root / "pipewarden.toml").write_text(PROJECT_FILE)
    (root / "approvers.yaml").write_text(APPROVERS)
    (root / "contracts" / "accounts.yaml").write_text("dataset: accounts\ncolumns: []\n")
    (root / "policies").mkdir()
    (root / "policies" / "retrain.yaml").write_text(RETRAIN_POLICY)
    (root / "acme_ml" / "__init__.py").write_text("")
    (root / "acme_ml" / "churn.py").write_text(TRAINER)
    monkeypatch.setenv("PIPEWARDEN_PROJECT", str(root))
    get_settings.cache_clear()
    return root


def _write(frame: pd.DataFrame) -> None:
    from pipewarden.flows.warehouse import connect

    with connect() as con:
        con.register("df", frame)
        con.execute("CREATE TABLE IF NOT EXISTS account_features AS SELECT * FROM df LIMIT 0")
        con.execute("INSERT INTO account_features SELECT * FROM df")
        con.unregister("df")


def test_the_retrain_agent_promotes_a_challenger_of_any_declared_model(accounts_project: Path) -> None:
    from pipewarden.agents.supervisor import resume_proposal, supervise_once
    from pipewarden.flows.ml import run_stages
    from pipewarden.models import ProposalStatus, Verdict
    from pipewarden.policies.approval import decision_gate
    from pipewarden.store import StateStore
    from pipewarden.tools.model_registry import champion, version_info

    _write(_accounts(0, FLIP_DAY - 1, seed=1))
    first = run_stages("early", "churn")  # no champion yet: trained by the project's own function, then scored
    assert first.trained is not None and first.trained["version"] == "1" and first.events == []
    v1 = version_info("acme-churn", "1")
    assert v1.params["trainer"] == "acme_ml.churn:fit" and v1.params["features"] == "usage,tenure,plan"
    assert v1.metrics["auc"] > 0.75

    _write(_accounts(FLIP_DAY, FLIP_DAY + 41, seed=2))
    late = run_stages("late", "churn")  # the champion scores the flipped days: decay on the labelled feedback
    assert late.trained is None and late.scored["rows"] == 42 * ROWS_PER_DAY
    (event,) = StateStore().list_events()
    assert event["kind"] == "model_drift" and event["dataset"] == "accounts"
    stored = StateStore().get_event(event["id"])
    assert stored.metric == "auc_drop" and stored.detail["ml_model"] == "churn"

    report = supervise_once()
    assert [(h.agent, h.status) for h in report.handled] == [("retrain", "pending")], report
    (p,) = StateStore().list_proposals()
    assert p.dataset == "accounts" and p.change.kind == "model_promotion"
    assert (p.change.model_name, p.change.from_version, p.change.to_version) == ("acme-churn", "1", "2")
    assert p.dry_run is not None and p.dry_run.heals
    assert p.dry_run.metrics["challenger_auc"] > p.dry_run.metrics["champion_auc"] + 0.1
    # the declared slice column, gated by the project's own policy
    assert {"slice:region=north:challenger_auc", "slice:region=south:challenger_auc"} <= set(p.dry_run.metrics)
    assert version_info("acme-churn", "2").params["trainer"] == "acme_ml.churn:fit"  # the champion's recipe

    store = StateStore()
    store.decide(p.id, Verdict.approve, "mia", "the challenger learned the new pattern", policy=decision_gate())
    assert store.get_proposal(p.id).status == ProposalStatus.pending  # two people: the ML owner and the owner
    store.decide(p.id, Verdict.approve, "olga", "agreed", policy=decision_gate())
    final = resume_proposal(p.id)
    assert final.status == ProposalStatus.verified, final.status_reason
    assert champion("acme-churn").version == "2"
    (verified,) = [a for a in store.audit_entries(str(p.id)) if a.action == "verified"]
    assert verified.detail["scored_rows"] == 42 * ROWS_PER_DAY


def test_a_declaration_is_checked_where_it_enters(tmp_path: Path) -> None:
    from pipewarden.project import load_project

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pipewarden.toml").write_text(PROJECT_FILE.replace('trainer = "acme_ml.churn:fit"', 'trainer = "fit"'))
    with pytest.raises(ConfigError, match=r"ml_models\.churn\.trainer"):
        load_project(bad)
    (bad / "pipewarden.toml").write_text(PROJECT_FILE.replace('"usage", "tenure"', '"usage", "churned"'))
    with pytest.raises(ConfigError, match=r"ml_models\.churn.*feature_columns includes 'churned', the label"):
        load_project(bad)
    (bad / "pipewarden.toml").write_text(PROJECT_FILE.replace('label = "churned"', 'label = "churned; drop"'))
    with pytest.raises(ConfigError, match=r"ml_models\.churn\.label"):
        load_project(bad)


def test_an_unknown_model_or_a_trainer_that_is_not_there_says_what_to_do(accounts_project: Path) -> None:
    from pipewarden.flows.train import train
    from pipewarden.tools.model_registry import declared_model

    with pytest.raises(UnknownNameError, match="did you mean 'churn'"):
        declared_model("chrun")
    assert declared_model(registered="acme-churn")[0] == "churn"
    _write(_accounts(0, 20, seed=3))
    (accounts_project / "acme_ml" / "churn.py").write_text("def other():\n    pass\n")
    with pytest.raises(ConfigError, match=r"ml_models\.churn\.trainer 'acme_ml\.churn:fit'.*no function 'fit'"):
        train("churn")
