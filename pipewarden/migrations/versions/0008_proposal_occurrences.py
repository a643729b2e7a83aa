"""Proposal occurrences: one fault, one proposal.

`proposal_occurrences`: one row per event that belongs to a fault's proposal, keyed by the event. The first event
of a fault (its `origin`) holds the fault's signature in `open_signature` while its proposal is open; the unique
index on it lets only one event be the origin of an open fault, so two workers claiming two events of one fault at
once make one proposal. Later events of the same signature are `attached` to the origin's proposal. Once the
proposal is decided the origin's `open_signature` is cleared (NULL is never unique) and the next event of the
fault starts a new proposal.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proposal_occurrences",
        sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), primary_key=True),
        sa.Column("proposal_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.Column("open_signature", sa.String(64)),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("load_id", sa.String(64)),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_proposal_occurrences_proposal_id", "proposal_occurrences", ["proposal_id"])
    op.create_index("ix_proposal_occurrences_signature", "proposal_occurrences", ["signature"])
    op.create_index("uq_occurrence_open", "proposal_occurrences", ["open_signature"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_occurrence_open", "proposal_occurrences")
    op.drop_index("ix_proposal_occurrences_signature", "proposal_occurrences")
    op.drop_index("ix_proposal_occurrences_proposal_id", "proposal_occurrences")
    op.drop_table("proposal_occurrences")
