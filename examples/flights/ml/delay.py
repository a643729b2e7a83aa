"""The delay model's training entry point, declared in pipewarden.toml as `trainer = "ml.delay:train"`.

pipewarden calls it with the training rows (the oldest part of `features_flights`, split by time; the latest days
are its holdout), the label and the feature columns the declaration names, and the declared `params`. It returns a
fitted scikit-learn classifier; pipewarden scores the holdout, logs the run to MLflow, registers the version and
moves the `champion` alias. A challenger is the same recipe (the champion's pipeline, cloned) fitted on recent days.

The classifier: carrier and origin ordinal-encoded (unknown -> missing), the numbers passed through, then a
HistGradientBoostingClassifier, which takes the history features' nulls as they are.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

CATEGORICAL = ("carrier", "origin")
DEFAULT_PARAMS: dict[str, Any] = {
    "max_iter": 150, "learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 40, "l2_regularization": 1.0,
}


def build(features: list[str], params: dict[str, Any] | None = None) -> Any:
    """The unfitted pipeline for `features` (the categorical ones first, as the encoder emits them)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    categorical = [f for f in features if f in CATEGORICAL]
    numeric = [f for f in features if f not in CATEGORICAL]
    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                       encoded_missing_value=-1), categorical),
         ("numbers", "passthrough", numeric)],
        verbose_feature_names_out=False,
    )
    mask = [True] * len(categorical) + [False] * len(numeric)
    model = HistGradientBoostingClassifier(categorical_features=mask, early_stopping=False, random_state=0,
                                           **{**DEFAULT_PARAMS, **(params or {})})
    return Pipeline([("encode", encode), ("model", model)])


def train(frame: pd.DataFrame, *, label: str, features: list[str], params: dict[str, Any]) -> Any:
    """Fit the delay classifier on `frame` (the training rows) and return it."""
    pipe = build(features, params)
    pipe.fit(frame[features], frame[label].astype(int))
    return pipe
