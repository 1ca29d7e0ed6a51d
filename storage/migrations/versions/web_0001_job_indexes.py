"""Indexes for the HTTP API's job listings and event stream.

``GET /jobs`` pages newest first by (enqueued_at, id) under an optional filter on state, actor, queue or
parent; each filter gets an index that serves both the filter and the order, so a page is an index range
scan at any depth. The event stream reads rows by ``updated_at``.

Revision ID: web_0001
Revises:
Depends on: core_0001
"""

from __future__ import annotations

from alembic import op

revision = "web_0001"
down_revision = None
branch_labels = ("web",)
depends_on = "core_0001"

INDEXES = {
    "ix_jobs_enqueued_id": ["enqueued_at", "id"],
    "ix_jobs_state_enqueued_id": ["state", "enqueued_at", "id"],
    "ix_jobs_actor_enqueued_id": ["actor", "enqueued_at", "id"],
    "ix_jobs_queue_enqueued_id": ["queue", "enqueued_at", "id"],
    "ix_jobs_parent_enqueued_id": ["parent_id", "enqueued_at", "id"],
    "ix_jobs_updated_at": ["updated_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "jobs", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="jobs")
