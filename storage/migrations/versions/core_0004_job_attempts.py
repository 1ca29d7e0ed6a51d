"""Each failed attempt of a job, with its error and traceback.

Revision ID: core_0004
Revises: core_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0004"
down_revision = "core_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_attempts",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error_type", sa.String(200)),
        sa.Column("error_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("job_attempts")
