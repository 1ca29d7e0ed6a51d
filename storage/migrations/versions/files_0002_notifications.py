"""Notifications: webhook endpoints and one row per delivery of an event (webhook or LINE).

Revision ID: files_0002
Revises: files_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "files_0002"
down_revision = "files_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("webhook_endpoints.id", ondelete="SET NULL")),
        sa.Column("event_type", sa.String(50), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("webhook_id", sa.String(64), nullable=False),
        sa.Column("retry_key", sa.String(36)),
        sa.Column("replay_of", sa.Integer),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_response", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("message_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_notification_deliveries_endpoint_id", "notification_deliveries", ["endpoint_id"])
    op.create_index("ix_notification_deliveries_event_type", "notification_deliveries", ["event_type"])
    op.create_index("ix_notification_deliveries_webhook_id", "notification_deliveries", ["webhook_id"])
    op.create_index("ix_notification_deliveries_status", "notification_deliveries", ["status"])


def downgrade() -> None:
    for name in (
        "ix_notification_deliveries_status",
        "ix_notification_deliveries_webhook_id",
        "ix_notification_deliveries_event_type",
        "ix_notification_deliveries_endpoint_id",
    ):
        op.drop_index(name, table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_table("webhook_endpoints")
