"""Collection tables: sources and their health, items, mentions, phrases, trends, runs.

Revision ID: collection_0001
Revises:
Depends on: core_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "collection_0001"
down_revision = None
branch_labels = ("collection",)
depends_on = "core_0001"

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "collection_sources",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("origin", sa.String(40), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("interval_ms", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("configured", sa.Boolean, nullable=False),
        sa.Column("high_frequency", sa.Boolean, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("fetch_state", sa.Text, nullable=False),
        sa.Column("next_check_at", TZ),
        sa.Column("consecutive_errors", sa.Integer, nullable=False),
        sa.Column("failing_since", TZ),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_reason", sa.String(40)),
        sa.Column("last_error_at", TZ),
        sa.Column("last_success_at", TZ),
        sa.Column("last_fetch_at", TZ),
        sa.Column("last_latency_ms", sa.Float),
        sa.Column("last_items", sa.Integer),
        sa.Column("runs_total", sa.Integer, nullable=False),
        sa.Column("runs_succeeded", sa.Integer, nullable=False),
        sa.Column("items_total", sa.Integer, nullable=False),
        sa.Column("duplicates_total", sa.Integer, nullable=False),
        sa.Column("fetch_ms_total", sa.Float, nullable=False),
        sa.Column("errors_by_reason", sa.Text, nullable=False),
        sa.Column("updated_at", TZ),
    )
    op.create_table(
        "collection_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("canonical_url", sa.String(2000), unique=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("published_at", TZ),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.Column("phrases", sa.Text),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("embedding_model", sa.String(200)),
    )
    op.create_index("ix_collection_items_first_seen_at", "collection_items", ["first_seen_at"])
    op.create_table(
        "collection_mentions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("collection_items.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("guid", sa.String(500), nullable=False),
        sa.Column("seen_at", TZ, nullable=False),
        sa.Column("processed_at", TZ),
        sa.UniqueConstraint("source", "guid", name="uq_collection_mentions_source_guid"),
    )
    op.create_index("ix_collection_mentions_item_id", "collection_mentions", ["item_id"])
    op.create_index("ix_collection_mentions_pending", "collection_mentions", ["processed_at", "id"])
    op.create_table(
        "collection_phrases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("phrase", sa.String(300), nullable=False, unique=True),
    )
    op.create_table(
        "collection_phrase_mentions",
        sa.Column(
            "phrase_id", sa.Integer, sa.ForeignKey("collection_phrases.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("collection_items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_collection_phrase_mentions_ts", "collection_phrase_mentions", ["ts", "phrase_id", "item_id", "source"]
    )
    op.create_table(
        "collection_trends",
        sa.Column("phrase", sa.String(300), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("z", sa.Float, nullable=False),
        sa.Column("current", sa.Integer, nullable=False),
        sa.Column("previous", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("topic", sa.String(300), nullable=False),
        sa.Column("related", sa.Text, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("pending", sa.String(20)),
        sa.Column("streak", sa.Integer, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_collection_trends_state", "collection_trends", ["state"])
    op.create_table(
        "collection_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("new_items", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("process_after", sa.Boolean, nullable=False),
        sa.Column("followup_id", sa.String(64)),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
    )
    op.create_index("ix_collection_runs_message_id", "collection_runs", ["message_id"])
    op.create_table(
        "collection_run_items",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("collection_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("message_id", sa.String(64)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("new_items", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("finished_at", TZ),
    )
    op.create_index("ix_collection_run_items_message_id", "collection_run_items", ["message_id"])


def downgrade() -> None:
    for index, table in (
        ("ix_collection_run_items_message_id", "collection_run_items"),
        ("ix_collection_runs_message_id", "collection_runs"),
        ("ix_collection_trends_state", "collection_trends"),
        ("ix_collection_phrase_mentions_ts", "collection_phrase_mentions"),
        ("ix_collection_mentions_pending", "collection_mentions"),
        ("ix_collection_mentions_item_id", "collection_mentions"),
        ("ix_collection_items_first_seen_at", "collection_items"),
    ):
        op.drop_index(index, table_name=table)
    for table in (
        "collection_run_items",
        "collection_runs",
        "collection_trends",
        "collection_phrase_mentions",
        "collection_phrases",
        "collection_mentions",
        "collection_items",
        "collection_sources",
    ):
        op.drop_table(table)
