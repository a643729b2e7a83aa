"""Indexes for the inbox queue: proposals by agent, dataset, risk and creation time (status had one already).

The queue filters on those columns and pages newest first; without them a page scans every proposal.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("agent", "dataset", "risk", "created_at")


def upgrade() -> None:
    for column in COLUMNS:
        op.create_index(f"ix_proposals_{column}", "proposals", [column])


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_proposals_{column}", table_name="proposals")
