"""The ops console: staff accounts, sessions, the audit log, the NLU review inbox.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ops_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_users")),
        sa.UniqueConstraint("username", name=op.f("uq_ops_users_username")),
    )
    op.create_table(
        "ops_sessions",
        sa.Column("token_digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["ops_users.id"], name=op.f("fk_ops_sessions_user_id_ops_users")),
        sa.PrimaryKeyConstraint("token_digest", name=op.f("pk_ops_sessions")),
    )
    with op.batch_alter_table("ops_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ops_sessions_user_id"), ["user_id"], unique=False)
    op.create_table(
        "ops_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_audit")),
    )
    with op.batch_alter_table("ops_audit", schema=None) as batch_op:
        batch_op.create_index("ix_ops_audit_at", ["at"], unique=False)
    op.create_table(
        "ops_inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("conversation", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("intent", sa.String(length=64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("entities", sa.JSON(), nullable=False),
        sa.Column("is_fallback", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_inbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ops_inbox_event_id")),
    )
    with op.batch_alter_table("ops_inbox", schema=None) as batch_op:
        batch_op.create_index("ix_ops_inbox_review", ["status", "is_fallback", "confidence"], unique=False)
        batch_op.create_index("ix_ops_inbox_channel_ts", ["channel", "ts"], unique=False)


def downgrade() -> None:
    op.drop_table("ops_inbox")
    op.drop_table("ops_audit")
    with op.batch_alter_table("ops_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_sessions_user_id"))
    op.drop_table("ops_sessions")
    op.drop_table("ops_users")
