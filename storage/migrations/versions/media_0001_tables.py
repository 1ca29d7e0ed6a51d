"""Media tables: videos, transcript segments, frames, playlists and their items, download cache.

Revision ID: media_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "media_0001"
down_revision = None
branch_labels = ("media",)
depends_on = "core_0001"


def upgrade() -> None:
    op.create_table(
        "media_videos",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_id", sa.String(200)),
        sa.Column("extractor", sa.String(50)),
        sa.Column("title", sa.String(500)),
        sa.Column("channel", sa.String(300)),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("upload_date", sa.String(8)),
        sa.Column("webpage_url", sa.Text),
        sa.Column("transcript_source", sa.String(30), nullable=False),
        sa.Column("language", sa.String(20)),
        sa.Column("model", sa.String(300)),
        sa.Column("frame_interval_seconds", sa.Float),
        sa.Column("details", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "media_transcript_segments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("video_id", sa.Integer, sa.ForeignKey("media_videos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("start_seconds", sa.Float, nullable=False),
        sa.Column("end_seconds", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("words", sa.Text),
    )
    op.create_index("ix_media_transcript_segments_video_id", "media_transcript_segments", ["video_id"])
    op.create_table(
        "media_frames",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("video_id", sa.Integer, sa.ForeignKey("media_videos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("time_seconds", sa.Float, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
    )
    op.create_index("ix_media_frames_video_id", "media_frames", ["video_id"])
    op.create_table(
        "media_playlists",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), unique=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("title", sa.String(500)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "media_playlist_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "playlist_id",
            sa.Integer,
            sa.ForeignKey("media_playlists.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("title", sa.String(500)),
        sa.Column("message_id", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("video_id", sa.Integer, sa.ForeignKey("media_videos.id", ondelete="SET NULL")),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_media_playlist_items_playlist_id", "media_playlist_items", ["playlist_id"])
    op.create_table(
        "media_download_cache",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cache_key", sa.String(64), nullable=False, unique=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("media_download_cache")
    op.drop_table("media_playlist_items")
    op.drop_table("media_playlists")
    op.drop_index("ix_media_frames_video_id", "media_frames")
    op.drop_table("media_frames")
    op.drop_index("ix_media_transcript_segments_video_id", "media_transcript_segments")
    op.drop_table("media_transcript_segments")
    op.drop_table("media_videos")
