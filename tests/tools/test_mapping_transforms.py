"""Value transforms in a column mapping: unit scales, date formats and epoch numbers, with failures kept visible."""

from __future__ import annotations

import pandas as pd
import pytest

from pipewarden.errors import ConfigError
from pipewarden.models import ColumnMapping, ColumnTransform
from pipewarden.policies.contract import load_contract
from pipewarden.tools.mapping import apply_transform, map_frame


def test_unit_scale_multiplies_and_reports_values_that_are_not_numbers() -> None:
    out, failed = apply_transform(pd.Series([120, "60", None, "n/a"]),
                                  ColumnTransform(column="dep_delay", kind="unit_scale", factor=1 / 60))
    assert out.tolist()[:2] == [2.0, 1.0] and pd.isna(out.iloc[2]) and pd.isna(out.iloc[3])
    assert failed.tolist() == [False, False, False, True]


def test_date_format_parses_with_the_format_and_epoch_reads_seconds_or_milliseconds() -> None:
    dates, bad = apply_transform(pd.Series(["03/01/2013 05:00", "13/01/2013 05:00"]),
                                 ColumnTransform(column="time_hour", kind="date_format", format="%m/%d/%Y %H:%M"))
    assert dates.iloc[0] == pd.Timestamp("2013-03-01 05:00", tz="UTC") and bad.tolist() == [False, True]
    secs, _ = apply_transform(pd.Series([1359712800]), ColumnTransform(column="time_hour", kind="epoch"))
    ms, _ = apply_transform(pd.Series(["1359712800000"]), ColumnTransform(column="time_hour", kind="epoch", factor=0.001))
    assert secs.iloc[0] == ms.iloc[0] == pd.Timestamp("2013-02-01 10:00", tz="UTC")


def test_a_transform_without_its_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no factor"):
        apply_transform(pd.Series([1.0]), ColumnTransform(column="x", kind="unit_scale"))
    with pytest.raises(ConfigError, match="has no format"):
        apply_transform(pd.Series(["x"]), ColumnTransform(column="x", kind="date_format"))


def test_map_frame_renames_then_transforms_then_casts_and_keeps_failures_visible() -> None:
    contract = load_contract("flights")
    df = pd.DataFrame({"dep_delay_sec": [600.0, -120.0], "time_hour": ["02/01/2013 10:00", "garbage"]})
    mapping = ColumnMapping(
        dataset="flights", renames={"dep_delay_sec": "dep_delay"},
        transforms=[ColumnTransform(column="dep_delay", kind="unit_scale", factor=1 / 60),
                    ColumnTransform(column="time_hour", kind="date_format", format="%m/%d/%Y %H:%M")],
    )
    mf = map_frame(df, mapping, contract)
    assert mf.frame["dep_delay"].tolist() == [10.0, -2.0]
    assert mf.transformed == ["dep_delay", "time_hour"]
    assert mf.cast_failures["time_hour"].tolist() == ["garbage"]
    assert df["dep_delay_sec"].tolist() == [600.0, -120.0]  # the input is not changed
    with pytest.raises(ConfigError, match="targets 'nope'"):
        map_frame(df, ColumnMapping(dataset="flights", transforms=[ColumnTransform(column="nope", kind="epoch")]),
                  contract)
