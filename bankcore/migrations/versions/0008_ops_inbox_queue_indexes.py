"""The ops inbox's review queue within a channel and over a date range, served by indexes.

The inbox pages a status's messages fallbacks first, then by rising confidence. 0006's (status, is_fallback,
confidence) index serves that for all channels; filtered by channel or by dates, every page read and sorted
the whole status (100,000 messages: up to 0.4 s a page idle, more under load). `make bench-ops-inbox` measures.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ops_inbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ops_inbox_channel_review", ["status", "channel", "is_fallback", "confidence"], unique=False
        )
        batch_op.create_index("ix_ops_inbox_status_ts", ["status", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ops_inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_ops_inbox_status_ts")
        batch_op.drop_index("ix_ops_inbox_channel_review")
