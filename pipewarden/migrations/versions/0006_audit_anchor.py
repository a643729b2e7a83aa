"""The audit chain's anchor: what makes truncation and state edits visible to audit verify.

Reserved in the migration chain so the three changes of this wave can land in any order; the change that owns
this revision fills in upgrade() and downgrade() and this docstring.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
