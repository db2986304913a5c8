"""Turn claims: a customer message retried through another gateway is answered once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "turn_claims",
        sa.Column("message_key", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_key", name=op.f("pk_turn_claims")),
    )
    with op.batch_alter_table("turn_claims", schema=None) as batch_op:
        batch_op.create_index("ix_turn_claims_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("turn_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_turn_claims_created_at")
    op.drop_table("turn_claims")
