"""File drive tables: uploaded files, their status and what the analysis found.

Revision ID: files_0001
Revises:
Depends on: core_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "files_0001"
down_revision = None
branch_labels = ("files",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("filename", sa.String(500), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False, server_default=""),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_path", sa.String(1000), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("mime_type", sa.String(200)),
        sa.Column("kind", sa.String(20)),
        sa.Column("type_mismatch", sa.Text),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("step", sa.String(20)),
        sa.Column("failed_step", sa.String(20)),
        sa.Column("error", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("suggested_filename", sa.String(500)),
        sa.Column("summary", sa.Text),
        sa.Column("tags", sa.Text),
        sa.Column("ai_provider", sa.String(32)),
        sa.Column("ai_model", sa.String(128)),
        sa.Column("message_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_files_status", "files", ["status"])
    op.create_index("ix_files_owner", "files", ["owner"])
    op.create_index("ix_files_sha256", "files", ["sha256"])
    op.create_index("ix_files_message_id", "files", ["message_id"])


def downgrade() -> None:
    for name in ("ix_files_message_id", "ix_files_sha256", "ix_files_owner", "ix_files_status"):
        op.drop_index(name, table_name="files")
    op.drop_table("files")
