"""Core tables: jobs, schedule state, health checks.

Revision ID: core_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0001"
down_revision = None
branch_labels = ("core",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        # Nullable: rows are upserted from partial writes that arrive in any order.
        sa.Column("actor", sa.String(200)),
        sa.Column("queue", sa.String(100)),
        sa.Column("args", sa.Text),
        sa.Column("state", sa.String(20)),
        sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer),
        sa.Column("error_type", sa.String(200)),
        sa.Column("error_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("enqueued_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("progress", sa.Float),
        sa.Column("progress_note", sa.String(500)),
        sa.Column("result", sa.Text),
        sa.Column("parent_id", sa.String(64)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_jobs_actor", "jobs", ["actor"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_enqueued_at", "jobs", ["enqueued_at"])
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    op.create_table(
        "schedule_state",
        sa.Column("actor", sa.String(200), primary_key=True),
        sa.Column("last_fire_at", sa.DateTime(timezone=True)),
        sa.Column("last_outcome", sa.String(20)),
    )
    op.create_table(
        "health_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("healthy", sa.Integer, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_health_checks_checked_at", "health_checks", ["checked_at"])


def downgrade() -> None:
    op.drop_table("health_checks")
    op.drop_table("schedule_state")
    op.drop_table("jobs")
