"""Every change kind describes itself once (`change.text()`), and every surface renders that description.

A conformance test over `CHANGE_KINDS`: a new kind without a description, or a surface that drops one, fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipewarden.inbox import render
from pipewarden.inbox import slack_blocks as sb
from pipewarden.models import (
    CHANGE_KINDS,
    ChangeSet,
    ChangeText,
    ColumnMapping,
    ColumnTransform,
    ContractChange,
    DedupeRule,
    ModelPromotion,
    NoChange,
    Quarantine,
    Reingest,
    SqlModelPatch,
)

SAMPLES: dict[str, Any] = {
    "column_mapping": ColumnMapping(dataset="orders", renames={"amt": "amount"}, casts={"qty": "integer"},
                                    transforms=[ColumnTransform(column="amount", kind="unit_scale", factor=0.01)]),
    "sql_model_patch": SqlModelPatch(model="daily_sales", sql="select 1\nfrom x", base_sql="select 1",
                                     reason="cast before the join"),
    "quarantine": Quarantine(dataset="orders", predicate="amount < 0", reason="negative amounts", rows=3,
                             batch_rows=300),
    "reingest": Reingest(dataset="orders", load_id="2026-12-01", reason="half the file arrived"),
    "dedupe_rule": DedupeRule(dataset="orders", keys=["order_id"], order_by="updated_at"),
    "contract_change": ContractChange(dataset="orders", contract={}, summary="allow null coupons", loosens=True),
    "model_promotion": ModelPromotion(model_name="churn", from_version="3", to_version="4"),
    "no_change": NoChange(reason="no column matches amount"),
}
SAMPLES["change_set"] = ChangeSet(changes=[SAMPLES["column_mapping"], SAMPLES["sql_model_patch"]],
                                  summary="rename, then patch the model that reads it")

# what each description must say in plain text (the title, and the names a reviewer decides on)
MUST_SAY: dict[str, tuple[str, ...]] = {
    "column_mapping": ("Column mapping", "orders", "amt \u2192 amount", "cast qty to integer", "scale amount by 0.01"),
    "sql_model_patch": ("SQL model patch", "daily_sales", "2 lines, was 1", "cast before the join"),
    "quarantine": ("Quarantine", "amount < 0", "3 of 300 rows", "negative amounts"),
    "reingest": ("Re-ingest", "orders", "2026-12-01", "half the file arrived"),
    "dedupe_rule": ("Dedupe", "order_id", "keep the last", "updated_at"),
    "contract_change": ("Contract change", "orders", "loosens the contract", "allow null coupons"),
    "model_promotion": ("Model promotion", "churn", "version 3 \u2192 4"),
    "no_change": ("No change", "no column matches amount"),
    "change_set": ("2 changes, applied together", "rename, then patch"),
}


def test_every_change_kind_has_a_sample() -> None:
    assert set(SAMPLES) == set(CHANGE_KINDS) == set(MUST_SAY)


@pytest.mark.parametrize("kind", CHANGE_KINDS)
def test_each_change_kind_describes_itself(kind: str) -> None:
    text = SAMPLES[kind].text()
    assert isinstance(text, ChangeText)
    for words in MUST_SAY[kind]:
        assert words in text.plain()


@pytest.mark.parametrize("kind", CHANGE_KINDS)
def test_slack_and_the_web_render_the_same_description(kind: str) -> None:
    change = SAMPLES[kind]
    slack = sb.change_summary(change)
    line = render.proposed_line(change)
    assert slack.startswith(f"*{change.text().title}*")
    assert line.startswith(change.text().title)
    for span in change.text().body:
        if span.code:  # a name from data: a code span in Slack, verbatim on the web
            assert f"`{sb.escape(span.text)}`" in slack
            assert span.text in line


def test_a_change_sets_members_follow_its_own_line_on_every_surface() -> None:
    change = SAMPLES["change_set"]
    slack = sb.change_summary(change).splitlines()
    assert slack[0].startswith("*2 changes, applied together*")
    assert slack[1].startswith("• *Column mapping*") and any(s.startswith("• *SQL model patch*") for s in slack)
    assert render.proposed_line(change).endswith(
        "Column mapping for orders: amt \u2192 amount; cast qty to integer; scale amount by 0.01; "
        "SQL model patch daily_sales (2 lines, was 1): cast before the join")


def test_names_from_data_are_code_not_markup_in_slack() -> None:
    hostile = Quarantine(dataset="orders", predicate="note = '*<!channel>*' or `x` > 1", reason="r", rows=1,
                         batch_rows=2)
    slack = sb.change_summary(hostile)
    assert "<!channel>" not in slack  # escaped, so Slack cannot ping anyone
    assert "`note = '*&lt;!channel&gt;*' or 'x' &gt; 1`" in slack  # one code span: backticks cannot end it early


def test_every_editable_kind_has_a_prover_and_nothing_else_does() -> None:
    from pipewarden.models import EDITABLE_KINDS
    from pipewarden.tools.redry import PROVERS

    assert set(PROVERS) == set(EDITABLE_KINDS) <= set(CHANGE_KINDS)
