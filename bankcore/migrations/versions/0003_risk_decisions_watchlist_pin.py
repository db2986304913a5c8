"""Transfer risk control: decisions (audit trail), the fraud watchlist, transaction PINs, payee country.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "risk_decisions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("warning_key", sa.String(length=64), nullable=True),
        sa.Column("freeze", sa.Boolean(), nullable=False),
        sa.Column("rules_version", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stepped_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_decisions")),
    )
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_risk_decisions_customer_created", ["customer_id", "created_at"], unique=False)
        batch_op.create_index("ix_risk_decisions_subject", ["subject_id"], unique=False)

    op.create_table(
        "risk_watchlist",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_watchlist")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_risk_watchlist_kind")),
    )
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index("ix_transfers_customer_status", ["customer_id", "status"], unique=False)

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pin_digest", sa.String(length=64), nullable=True))

    with op.batch_alter_table("payees", schema=None) as batch_op:
        batch_op.add_column(sa.Column("country", sa.String(length=2), server_default="CN", nullable=False))
        batch_op.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("payees", schema=None) as batch_op:
        batch_op.drop_column("created_at")
        batch_op.drop_column("country")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_column("pin_digest")

    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_index("ix_transfers_customer_status")

    op.drop_table("risk_watchlist")
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_decisions_subject")
        batch_op.drop_index("ix_risk_decisions_customer_created")

    op.drop_table("risk_decisions")
