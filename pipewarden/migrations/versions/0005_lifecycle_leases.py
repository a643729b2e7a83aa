"""Leases, attempts and dead letters for events and proposals (crash recovery).

Every piece of work (a claimed event, a proposal being resumed) has one owner at a time by a lease with a heartbeat
instead of a fixed ten-minute wait:

- events: `lease_expires_at` (a claim's lease; the owner is `claimed_by`), `next_attempt_at` (an event whose agent
  failed waits here, with exponential backoff, before it is claimed again) and `failure` (`failed`: the agent's code
  raised; `crashed`: the worker died and its lease expired). An event out of attempts ends `dead`.
- proposals: `lease_owner` and `lease_expires_at` (who is resuming its graph), `resume_requested_at` (a stored
  decision asks a worker to resume the graph: the durable hand-off from the inbox to `supervise`), `attempts` and
  `next_attempt_at` (backoff after a failed resume).

Proposals a worker still has to finish (approved, applying, applied, rolled back) are marked as requested, so an
upgrade picks them up.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UNFINISHED = ("approved", "applying", "applied", "rolled_back")


def upgrade() -> None:
    with op.batch_alter_table("events") as t:
        t.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
        t.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
        t.add_column(sa.Column("failure", sa.String(16)))
    with op.batch_alter_table("proposals") as t:
        t.add_column(sa.Column("lease_owner", sa.String(128)))
        t.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
        t.add_column(sa.Column("resume_requested_at", sa.DateTime(timezone=True)))
        t.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.create_index("ix_proposals_resume_requested_at", "proposals", ["resume_requested_at"])
    proposals = sa.table("proposals", sa.column("status", sa.String), sa.column("updated_at", sa.DateTime),
                         sa.column("resume_requested_at", sa.DateTime))
    op.execute(proposals.update().where(proposals.c.status.in_(UNFINISHED))
               .values(resume_requested_at=proposals.c.updated_at))


def downgrade() -> None:
    op.drop_index("ix_proposals_resume_requested_at", table_name="proposals")
    with op.batch_alter_table("proposals") as t:
        for name in ("next_attempt_at", "attempts", "resume_requested_at", "lease_expires_at", "lease_owner"):
            t.drop_column(name)
    with op.batch_alter_table("events") as t:
        for name in ("failure", "next_attempt_at", "lease_expires_at"):
            t.drop_column(name)
