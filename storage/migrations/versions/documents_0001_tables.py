"""Documents tables: documents, pages, images, chunks, embeddings.

Revision ID: documents_0001
Revises:
Depends on: core_0001

Vectors are float32 bytes in a portable column, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "documents_0001"
down_revision = None
branch_labels = ("documents",)
depends_on = "core_0001"


def _document_id() -> sa.Column:
    return sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(20)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("encoding", sa.String(40)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("step", sa.String(20)),
        sa.Column("failed_step", sa.String(20)),
        sa.Column("error", sa.Text),
        sa.Column("page_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pages_ocr", sa.Integer, nullable=False, server_default="0"),
        sa.Column("image_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("message_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_documents_status", "documents", ["status"])
    op.create_index("ix_documents_message_id", "documents", ["message_id"])
    op.create_table(
        "document_pages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("needs_ocr", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ocr", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("document_id", "number"),
    )
    op.create_index("ix_document_pages_document_id", "document_pages", ["document_id"])
    op.create_table(
        "document_images",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("page", sa.Integer, nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
    )
    op.create_index("ix_document_images_document_id", "document_images", ["document_id"])
    op.create_table(
        "document_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("page", sa.Integer, nullable=False),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.UniqueConstraint("document_id", "position"),
    )
    op.create_index("ix_document_chunks_document_id", "document_chunks", ["document_id"])
    op.create_table(
        "document_embeddings",
        sa.Column(
            "chunk_id",
            sa.Integer,
            sa.ForeignKey("document_chunks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_document_embeddings_document_id", "document_embeddings", ["document_id"])
    op.create_index("ix_document_embeddings_model", "document_embeddings", ["model"])


def downgrade() -> None:
    op.drop_table("document_embeddings")
    op.drop_table("document_chunks")
    op.drop_table("document_images")
    op.drop_table("document_pages")
    op.drop_table("documents")
