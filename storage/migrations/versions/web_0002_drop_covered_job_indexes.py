"""Drop the four single-column job indexes that the listing indexes already cover.

``ix_jobs_state``, ``ix_jobs_actor``, ``ix_jobs_parent_id`` and ``ix_jobs_enqueued_at`` are each the
leading column of a ``web_0001`` index (``state, enqueued_at, id`` and so on), which serves every query
they served. Each index costs every job-row write: a submit's ``queued`` row and each state change
updated eleven b-trees, now seven.

Revision ID: web_0002
Revises: web_0001
"""

from __future__ import annotations

from alembic import op

revision = "web_0002"
down_revision = "web_0001"
branch_labels = None
depends_on = None

COVERED = {
    "ix_jobs_state": ["state"],
    "ix_jobs_actor": ["actor"],
    "ix_jobs_parent_id": ["parent_id"],
    "ix_jobs_enqueued_at": ["enqueued_at"],
}


def upgrade() -> None:
    for name in COVERED:
        op.drop_index(name, table_name="jobs")


def downgrade() -> None:
    for name, columns in COVERED.items():
        op.create_index(name, "jobs", columns)
