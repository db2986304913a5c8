"""Chat channels: the durable inbox (platform message dedupe) and outbox (replies owed), pending bindings,
subscribe-message consents.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_inbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("platform_msg_id", sa.String(length=160), nullable=False),
        sa.Column("external_user", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("sealed_body", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_inbox")),
        sa.UniqueConstraint("channel", "platform_msg_id", name=op.f("uq_channel_inbox_channel")),
    )
    with op.batch_alter_table("channel_inbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channel_inbox_external_user"), ["external_user"], unique=False)
        batch_op.create_index("ix_channel_inbox_status_lease", ["status", "lease_until"], unique=False)

    op.create_table(
        "channel_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("external_user", sa.String(length=128), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("platform_msg_id", sa.String(length=128), nullable=True),
        sa.Column("partial_failure", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["inbox_id"], ["channel_inbox.id"], name=op.f("fk_channel_outbox_inbox_id_channel_inbox")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_channel_outbox_idempotency_key")),
    )
    with op.batch_alter_table("channel_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channel_outbox_external_user"), ["external_user"], unique=False)
        batch_op.create_index(batch_op.f("ix_channel_outbox_inbox_id"), ["inbox_id"], unique=False)
        batch_op.create_index("ix_channel_outbox_status_next", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "pending_bindings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=True),
        sa.Column("phone_tail", sa.String(length=4), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_pending_bindings_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_bindings")),
        sa.UniqueConstraint("channel", "external_id", name=op.f("uq_pending_bindings_channel")),
    )

    op.create_table(
        "subscription_consents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("openid", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=True),
        sa.Column("template_id", sa.String(length=128), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_subscription_consents_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_consents")),
        sa.UniqueConstraint("openid", "template_id", name=op.f("uq_subscription_consents_openid")),
    )
    with op.batch_alter_table("subscription_consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscription_consents_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("subscription_consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscription_consents_customer_id"))
    op.drop_table("subscription_consents")
    op.drop_table("pending_bindings")
    with op.batch_alter_table("channel_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_outbox_status_next")
        batch_op.drop_index(batch_op.f("ix_channel_outbox_inbox_id"))
        batch_op.drop_index(batch_op.f("ix_channel_outbox_external_user"))
    op.drop_table("channel_outbox")
    with op.batch_alter_table("channel_inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_inbox_status_lease")
        batch_op.drop_index(batch_op.f("ix_channel_inbox_external_user"))
    op.drop_table("channel_inbox")
