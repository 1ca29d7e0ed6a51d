"""Document vectors per window of a chunk, and a version counter for the search matrix.

Revision ID: documents_0002
Revises: documents_0001

A chunk (4,000 characters) is longer than the embedding model reads, so it gets one vector per window
(``document_vectors``, which replaces ``document_embeddings``: its key was the chunk). The vectors
already stored move over as the first window of their chunk. ``document_index_version`` is one row
that every change to what search sees increments, so a process knows when to reload its matrix.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "documents_0002"
down_revision = "documents_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_vectors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("chunk_id", sa.Integer, sa.ForeignKey("document_chunks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("char_start", sa.Integer, nullable=False, server_default="0"),
        sa.Column("char_end", sa.Integer, nullable=False, server_default="0"),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_document_vectors_document_id", "document_vectors", ["document_id"])
    op.create_index("ix_document_vectors_chunk_id", "document_vectors", ["chunk_id"])
    op.create_index("ix_document_vectors_model", "document_vectors", ["model"])
    op.execute(
        "INSERT INTO document_vectors (chunk_id, document_id, position, char_start, char_end, model, dimensions, "
        "vector) SELECT e.chunk_id, e.document_id, 0, 0, c.char_end - c.char_start, e.model, e.dimensions, "
        "e.vector FROM document_embeddings e JOIN document_chunks c ON c.id = e.chunk_id"
    )
    op.drop_index("ix_document_embeddings_document_id", "document_embeddings")
    op.drop_index("ix_document_embeddings_model", "document_embeddings")
    op.drop_table("document_embeddings")
    version = op.create_table(
        "document_index_version",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "version": 1}])


def downgrade() -> None:
    op.drop_table("document_index_version")
    op.create_table(
        "document_embeddings",
        sa.Column("chunk_id", sa.Integer, sa.ForeignKey("document_chunks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_document_embeddings_document_id", "document_embeddings", ["document_id"])
    op.create_index("ix_document_embeddings_model", "document_embeddings", ["model"])
    op.execute(
        "INSERT INTO document_embeddings (chunk_id, document_id, model, dimensions, vector) "
        "SELECT chunk_id, document_id, model, dimensions, vector FROM document_vectors WHERE position = 0"
    )
    op.drop_table("document_vectors")
