"""Media tables: videos with their transcript segments and frames, playlists, and the download cache.

A video row and everything under it is written in one transaction when its job has produced
everything, so a failed job leaves no half-written video behind. Playlist items are updated by the
callbacks of the video jobs; the last one to finish records the playlist's outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base, session_scope


def _now() -> datetime:
    return datetime.now(UTC)


class Video(Base):
    """One processed video or media file: its metadata and where its transcript came from."""

    __tablename__ = "media_videos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The message id of the job that produced the row; a redelivered job replaces its own row.
    job_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(Text)
    source_id: Mapped[str | None] = mapped_column(String(200))
    extractor: Mapped[str | None] = mapped_column(String(50))
    title: Mapped[str | None] = mapped_column(String(500))
    channel: Mapped[str | None] = mapped_column(String(300))
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    upload_date: Mapped[str | None] = mapped_column(String(8))
    webpage_url: Mapped[str | None] = mapped_column(Text)
    # captions | automatic_captions | whisper | none
    transcript_source: Mapped[str] = mapped_column(String(30))
    language: Mapped[str | None] = mapped_column(String(20))
    model: Mapped[str | None] = mapped_column(String(300))
    frame_interval_seconds: Mapped[float | None] = mapped_column(Float)
    details: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class TranscriptSegment(Base):
    """A timed piece of a video's transcript (seconds from the start)."""

    __tablename__ = "media_transcript_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("media_videos.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    start_seconds: Mapped[float] = mapped_column(Float)
    end_seconds: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    # JSON list of {"start", "end", "text"} when word times were asked for or the captions carry them.
    words: Mapped[str | None] = mapped_column(Text)


class Frame(Base):
    """A still taken from a video; ``path`` is relative to the storage root."""

    __tablename__ = "media_frames"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("media_videos.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    time_seconds: Mapped[float] = mapped_column(Float)
    path: Mapped[str] = mapped_column(Text)


class Playlist(Base):
    """A playlist run: how many videos it fanned out and, once all have ended, how it went."""

    __tablename__ = "media_playlists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(String(500))
    # running | succeeded | partial (some videos failed) | failed (all failed)
    status: Mapped[str] = mapped_column(String(20))
    total: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PlaylistItem(Base):
    """One video of a playlist run and the job that processes it."""

    __tablename__ = "media_playlist_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    playlist_id: Mapped[int] = mapped_column(ForeignKey("media_playlists.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(String(500))
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    # queued | succeeded | failed
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    video_id: Mapped[int | None] = mapped_column(ForeignKey("media_videos.id", ondelete="SET NULL"))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DownloadCacheEntry(Base):
    """A downloaded media file kept under the cache directory, keyed by source and format."""

    __tablename__ = "media_download_cache"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


# ----------------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentRow:
    start: float
    end: float
    text: str
    words: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class FrameRow:
    time: float
    path: str


def save_video(
    *,
    job_id: str | None,
    metadata: dict[str, Any],
    transcript_source: str,
    language: str | None,
    model: str | None,
    segments: list[SegmentRow],
    frames: list[FrameRow],
    frame_interval_seconds: float | None,
) -> int:
    """Write a video with its segments and frames in one transaction; return the video id.

    A row already written by the same job (a redelivered message) is replaced, not duplicated.
    """
    with session_scope() as session:
        if job_id is not None:
            session.execute(delete(Video).where(Video.job_id == job_id))
        video = Video(
            job_id=job_id,
            source=str(metadata.get("source") or ""),
            source_id=_cut(metadata.get("id"), 200),
            extractor=_cut(metadata.get("extractor"), 50),
            title=_cut(metadata.get("title"), 500),
            channel=_cut(metadata.get("channel"), 300),
            duration_seconds=metadata.get("duration"),
            upload_date=_cut(metadata.get("upload_date"), 8),
            webpage_url=metadata.get("webpage_url"),
            transcript_source=transcript_source,
            language=_cut(language, 20),
            model=_cut(model, 300),
            frame_interval_seconds=frame_interval_seconds,
            details=json.dumps(metadata, default=str),
        )
        session.add(video)
        session.flush()
        session.add_all(
            TranscriptSegment(
                video_id=video.id,
                position=i,
                start_seconds=s.start,
                end_seconds=s.end,
                text=s.text,
                words=json.dumps(s.words) if s.words else None,
            )
            for i, s in enumerate(segments)
        )
        session.add_all(
            Frame(video_id=video.id, position=i, time_seconds=f.time, path=f.path) for i, f in enumerate(frames)
        )
        return video.id


def _cut(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def get_video(video_id: int | None = None, *, job_id: str | None = None) -> dict[str, Any] | None:
    """A video with its segments and frames as plain data, by id or by the job that made it."""
    with session_scope() as session:
        query = select(Video).where(Video.id == video_id) if video_id is not None else None
        if query is None:
            query = select(Video).where(Video.job_id == job_id)
        video = session.scalars(query).first()
        if video is None:
            return None
        segments = session.scalars(
            select(TranscriptSegment).where(TranscriptSegment.video_id == video.id).order_by(TranscriptSegment.position)
        ).all()
        frames = session.scalars(select(Frame).where(Frame.video_id == video.id).order_by(Frame.position)).all()
        return {
            "id": video.id,
            "job_id": video.job_id,
            "source": video.source,
            "source_id": video.source_id,
            "extractor": video.extractor,
            "title": video.title,
            "channel": video.channel,
            "duration": video.duration_seconds,
            "upload_date": video.upload_date,
            "webpage_url": video.webpage_url,
            "transcript_source": video.transcript_source,
            "language": video.language,
            "model": video.model,
            "frame_interval": video.frame_interval_seconds,
            "segments": [
                {
                    "start": s.start_seconds,
                    "end": s.end_seconds,
                    "text": s.text,
                    "words": json.loads(s.words) if s.words else [],
                }
                for s in segments
            ],
            "frames": [{"time": f.time_seconds, "path": f.path} for f in frames],
        }


def count_videos(source: str | None = None) -> int:
    """How many video rows exist (for one source, when given)."""
    with session_scope() as session:
        query = select(Video.id)
        if source is not None:
            query = query.where(Video.source == source)
        return len(session.scalars(query).all())


# ----------------------------------------------------------------------------------------------------
# Playlists
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRow:
    position: int
    url: str
    title: str | None
    message_id: str


def create_playlist(*, job_id: str | None, url: str, title: str | None, items: list[ItemRow]) -> int:
    """Record a playlist run and its items (before their jobs are sent); return the playlist id."""
    with session_scope() as session:
        if job_id is not None:
            session.execute(delete(Playlist).where(Playlist.job_id == job_id))
        playlist = Playlist(
            job_id=job_id,
            url=url,
            title=_cut(title, 500),
            status="running",
            total=len(items),
            updated_at=_now(),
        )
        session.add(playlist)
        session.flush()
        session.add_all(
            PlaylistItem(
                playlist_id=playlist.id,
                position=item.position,
                url=item.url,
                title=_cut(item.title, 500),
                message_id=item.message_id,
                status="queued",
            )
            for item in items
        )
        return playlist.id


def finish_playlist_item(
    message_id: str, *, succeeded: bool, error: str | None = None, video_id: int | None = None
) -> dict[str, Any] | None:
    """Record how one playlist video ended; when it was the last, record the playlist's outcome.

    Returns the playlist's outcome when this call finished the playlist, else ``None``. The playlist row
    is written first so that concurrent callers for one playlist take turns (SQLite's write lock, a row
    lock on PostgreSQL) and exactly one of them sees the last item end.
    """
    with session_scope() as session:
        playlist_id = session.scalar(select(PlaylistItem.playlist_id).where(PlaylistItem.message_id == message_id))
        if playlist_id is None:
            return None
        now = _now()
        session.execute(update(Playlist).where(Playlist.id == playlist_id).values(updated_at=now))
        session.execute(
            update(PlaylistItem)
            .where(PlaylistItem.message_id == message_id)
            .values(
                status="succeeded" if succeeded else "failed",
                error=None if succeeded else (error or "failed"),
                video_id=video_id,
                finished_at=now,
            )
        )
        items = session.scalars(select(PlaylistItem).where(PlaylistItem.playlist_id == playlist_id)).all()
        playlist = session.get(Playlist, playlist_id)
        assert playlist is not None
        if any(item.status == "queued" for item in items) or playlist.finished_at is not None:
            return None
        ok = sum(1 for item in items if item.status == "succeeded")
        bad = len(items) - ok
        playlist.succeeded, playlist.failed = ok, bad
        playlist.status = "succeeded" if bad == 0 else ("failed" if ok == 0 else "partial")
        playlist.finished_at = now
    return get_playlist(playlist_id)


def get_playlist(playlist_id: int | None = None, *, job_id: str | None = None) -> dict[str, Any] | None:
    """A playlist run with its items and the reason of each failed video."""
    with session_scope() as session:
        if playlist_id is not None:
            playlist = session.get(Playlist, playlist_id)
        else:
            playlist = session.scalars(select(Playlist).where(Playlist.job_id == job_id)).first()
        if playlist is None:
            return None
        items = session.scalars(
            select(PlaylistItem).where(PlaylistItem.playlist_id == playlist.id).order_by(PlaylistItem.position)
        ).all()
        return {
            "id": playlist.id,
            "job_id": playlist.job_id,
            "url": playlist.url,
            "title": playlist.title,
            "status": playlist.status,
            "total": playlist.total,
            "succeeded": playlist.succeeded,
            "failed": playlist.failed,
            "finished_at": playlist.finished_at.isoformat() if playlist.finished_at else None,
            "items": [
                {
                    "position": item.position,
                    "url": item.url,
                    "title": item.title,
                    "message_id": item.message_id,
                    "status": item.status,
                    "error": item.error,
                    "video_id": item.video_id,
                }
                for item in items
            ],
            "failures": [
                {"position": item.position, "url": item.url, "title": item.title, "reason": item.error}
                for item in items
                if item.status == "failed"
            ],
        }


# ----------------------------------------------------------------------------------------------------
# Download cache
# ----------------------------------------------------------------------------------------------------


def cached_download(cache_key: str) -> Path | None:
    """The cached file for ``cache_key``, marked used now; ``None`` (and the entry forgotten) when gone."""
    with session_scope() as session:
        entry = session.scalars(select(DownloadCacheEntry).where(DownloadCacheEntry.cache_key == cache_key)).first()
        if entry is None:
            return None
        path = Path(entry.path)
        if not path.is_file():
            session.delete(entry)
            return None
        entry.last_used_at = _now()
    try:
        path.touch()  # the cache cleanup removes files by age; a used file is young again
    except OSError:
        pass
    return path


def remember_download(cache_key: str, *, url: str, path: Path) -> None:
    """Record a finished download in the cache (replacing an older entry for the same key)."""
    with session_scope() as session:
        session.execute(delete(DownloadCacheEntry).where(DownloadCacheEntry.cache_key == cache_key))
        session.add(DownloadCacheEntry(cache_key=cache_key, url=url, path=str(path), bytes=path.stat().st_size))


def prune_download_cache() -> int:
    """Forget cache entries whose file is gone (after the cache cleanup removed it); return how many."""
    with session_scope() as session:
        entries = session.scalars(select(DownloadCacheEntry)).all()
        gone = [entry for entry in entries if not Path(entry.path).is_file()]
        for entry in gone:
            session.delete(entry)
        return len(gone)
