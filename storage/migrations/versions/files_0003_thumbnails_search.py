"""File drive: each file's thumbnail, the document that makes its text searchable, and stuck resends.

Revision ID: files_0003
Revises: files_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "files_0003"
down_revision = "files_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as table:
        table.add_column(sa.Column("thumbnail_path", sa.String(1000)))
        table.add_column(sa.Column("thumbnail_width", sa.Integer))
        table.add_column(sa.Column("thumbnail_height", sa.Integer))
        table.add_column(sa.Column("document_id", sa.Integer))
        table.add_column(sa.Column("stuck_resends", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("files") as table:
        for name in ("stuck_resends", "document_id", "thumbnail_height", "thumbnail_width", "thumbnail_path"):
            table.drop_column(name)
