"""Media actors (queue ``media``): videos and playlists to metadata, a timed transcript and frames.

Every actor takes the same path through ``_process_source``: metadata, limits (before any download),
captions or a Whisper transcript, frames, then one transaction that writes the video with its
segments and frames. A failed job leaves neither rows nor frame files behind.

A playlist fans out one ``process_youtube_video`` job per video as a Dramatiq group. Each of those
jobs reports its end to a callback actor (``on_success`` / ``on_failure``); the callback for the last
video to end records the playlist's outcome, naming the videos that failed and why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from periodiq import cron

from middleware.job_status import report_progress
from processing import captions as captions_proc
from processing import frames as frames_proc
from processing import housekeeping, netguard, transcription
from processing import media as media_proc
from processing.errors import InvalidArgument, NotFound, PermanentError
from settings import settings
from storage import media as store

logger = logging.getLogger(__name__)

# User-given URLs reach public addresses only, unless the operator trusts a private network.
netguard.set_policy(netguard.OutboundPolicy.parse(settings.url_allowed_networks))

QUEUE = "media"
SOFT_TIME_LIMIT_MS = 30 * 60_000
HARD_TIME_LIMIT_MS = 40 * 60_000
AUDIO_METRICS = {"audio_seconds": "media_transcribed_audio_seconds_total"}
FRAMES_SUBDIR = Path("media") / "frames"


def _current_message_id() -> str | None:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else None


def _stage(low: float, high: float, *, min_interval: float = 0.5) -> Callable[[float, str | None], None]:
    """A progress callback mapping a step's 0–100 onto ``low``–``high`` of the job, at most every 0.5 s."""
    last = [0.0]

    def callback(percent: float, note: str | None = None) -> None:
        now = time.monotonic()
        if percent < 100 and now - last[0] < min_interval:
            return
        last[0] = now
        report_progress(low + (high - low) * max(0.0, min(100.0, percent)) / 100, note)

    return callback


def _download(info: media_proc.MediaInfo, *, with_video: bool, on_progress: Callable[..., None]) -> Path:
    """The media file of ``info``: local in place, else from the download cache or downloaded into it."""
    if info.local_path is not None:
        return info.local_path
    key = hashlib.sha256(f"{info.source}|{'video' if with_video else 'audio'}".encode()).hexdigest()
    cached = store.cached_download(key)
    if cached is not None:
        on_progress(100.0, "download cache hit")
        return cached
    cache_root = settings.cache_dir / "media"
    partial = cache_root / f".part-{uuid.uuid4().hex}"
    path = media_proc.download_media(
        info,
        partial,
        with_video=with_video,
        max_bytes=settings.max_download_bytes,
        on_progress=on_progress,
    )
    final_dir = cache_root / key
    try:
        if final_dir.exists():
            shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(partial, final_dir)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = final_dir / path.name
    store.remember_download(key, url=info.source, path=final)
    return final


def _process_source(
    source: str,
    *,
    want_transcript: bool,
    use_captions: bool,
    want_frames: bool,
    frame_interval: float,
    word_timestamps: bool = False,
) -> dict[str, Any]:
    job_id = _current_message_id()
    report_progress(1.0, "reading metadata")
    info = media_proc.fetch_metadata(source, storage_root=settings.storage_root, with_video=want_frames)
    limits = {"max_seconds": settings.max_media_seconds, "max_bytes": settings.max_download_bytes}
    media_proc.check_limits(info, **limits)
    report_progress(5.0, f"metadata of {info.title or info.id!r}")

    segments: list[transcription.Segment] | None = None
    transcript_source, language, model = "none", None, None
    if want_transcript and use_captions:
        track = media_proc.choose_captions(info.captions, settings.caption_language)
        if track is not None:
            try:
                segments = media_proc.fetch_captions(track, max_bytes=settings.max_caption_bytes)
            except PermanentError as error:
                logger.info("captions of %r unusable (%s); transcribing the audio instead", source, error)
            else:
                transcript_source = "automatic_captions" if track.automatic else "captions"
                language = track.language
                report_progress(10.0, f"{len(segments)} caption segments ({track.language}, {track.ext})")

    need_transcription = want_transcript and segments is None
    frames_possible = want_frames and info.has_video is not False
    media_path: Path | None = None
    if need_transcription or frames_possible:
        media_path = _download(info, with_video=want_frames, on_progress=_stage(10.0, 40.0))
        if info.duration is None:
            # Nothing told the duration up front (a site without it, a stream without a header):
            # check the cap on the file before the expensive part.
            info.duration = frames_proc.probe_media(media_path).duration
            media_proc.check_limits(info, **limits)

    audio_seconds = 0.0
    if need_transcription:
        assert media_path is not None
        transcript = transcription.transcribe(
            media_path,
            model=settings.whisper_model,
            compute_type=settings.whisper_compute_type,
            word_timestamps=word_timestamps,
            on_progress=_stage(40.0, 85.0),
        )
        segments = transcript.segments
        transcript_source, language, model = "whisper", transcript.language, transcript.model
        audio_seconds = transcript.duration

    frame_rows: list[store.FrameRow] = []
    frame_dir = settings.storage_root / FRAMES_SUBDIR / (job_id or uuid.uuid4().hex)
    try:
        if frames_possible:
            assert media_path is not None
            probe = frames_proc.probe_media(media_path)
            if probe.has_video:
                taken = frames_proc.extract_frames(
                    media_path, frame_dir, interval_seconds=frame_interval, on_progress=_stage(85.0, 98.0)
                )
                root = settings.storage_root.resolve()
                frame_rows = [store.FrameRow(time=f.time, path=str(f.path.resolve().relative_to(root))) for f in taken]
        metadata = info.as_dict()
        if info.duration is None and audio_seconds:
            metadata["duration"] = audio_seconds
        video_id = store.save_video(
            job_id=job_id,
            metadata=metadata,
            transcript_source=transcript_source,
            language=language,
            model=model,
            segments=[
                store.SegmentRow(start=s.start, end=s.end, text=s.text, words=captions_proc.as_dict(s)["words"] or None)
                for s in segments or []
            ],
            frames=frame_rows,
            frame_interval_seconds=frame_interval if want_frames else None,
        )
    except BaseException:
        frames_proc.remove_frames(frame_dir)
        raise
    return {
        "video_id": video_id,
        "title": info.title,
        "duration": metadata.get("duration"),
        "transcript_source": transcript_source,
        "segments": len(segments or []),
        "frames": len(frame_rows),
        "audio_seconds": round(audio_seconds, 3),
    }


def _interval(frame_interval: float | None) -> float:
    value = float(frame_interval if frame_interval is not None else settings.frame_interval_seconds)
    if value <= 0:
        raise InvalidArgument(f"frame_interval must be a positive number of seconds, got {frame_interval}")
    return value


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=3,
    soft_time_limit=SOFT_TIME_LIMIT_MS,
    time_limit=HARD_TIME_LIMIT_MS,
    result_metrics=AUDIO_METRICS,
)
def process_youtube_video(url: str, extract_frames: bool = True, frame_interval: float | None = None) -> dict[str, Any]:
    """A video (YouTube, any yt-dlp site, a direct media URL or a path under the storage root) to
    metadata, a transcript (captions when offered, else Whisper) and, optionally, frames every
    ``frame_interval`` seconds (default ``FRAME_INTERVAL_SECONDS``, 30)."""
    return _process_source(
        url,
        want_transcript=True,
        use_captions=True,
        want_frames=extract_frames,
        frame_interval=_interval(frame_interval),
    )


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=3,
    soft_time_limit=SOFT_TIME_LIMIT_MS,
    time_limit=HARD_TIME_LIMIT_MS,
    result_metrics=AUDIO_METRICS,
)
def transcribe_media(source: str, word_timestamps: bool = False, use_captions: bool = False) -> dict[str, Any]:
    """Transcribe a media URL or file with Whisper (captions only when ``use_captions``), no frames."""
    return _process_source(
        source,
        want_transcript=True,
        use_captions=use_captions,
        want_frames=False,
        frame_interval=_interval(None),
        word_timestamps=word_timestamps,
    )


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=3,
    soft_time_limit=SOFT_TIME_LIMIT_MS,
    time_limit=HARD_TIME_LIMIT_MS,
)
def extract_frames(source: str, interval: float | None = None) -> dict[str, Any]:
    """Take a JPEG every ``interval`` seconds of a video URL or file; no transcript."""
    return _process_source(
        source,
        want_transcript=False,
        use_captions=False,
        want_frames=True,
        frame_interval=_interval(interval),
    )


@dramatiq.actor(queue_name=QUEUE, max_retries=3, soft_time_limit=5 * 60_000, time_limit=10 * 60_000)
def process_youtube_playlist(
    url: str, extract_frames: bool = True, frame_interval: float | None = None
) -> dict[str, Any]:
    """Expand a playlist and process each video in its own job, as a group; the last one to end
    records the playlist's outcome (see ``storage.media.get_playlist``)."""
    interval = _interval(frame_interval)
    report_progress(5.0, "listing the playlist")
    playlist = media_proc.expand_playlist(url)
    if not playlist.entries:
        raise NotFound(f"playlist {url!r} lists no videos")
    parent_id = _current_message_id()
    messages = [
        process_youtube_video.message_with_options(
            args=(entry.url,),
            kwargs={"extract_frames": extract_frames, "frame_interval": interval},
            on_success=playlist_video_succeeded.actor_name,
            on_failure=playlist_video_failed.actor_name,
            parent_id=parent_id,
        )
        for entry in playlist.entries
    ]
    playlist_id = store.create_playlist(
        job_id=parent_id,
        url=url,
        title=playlist.title,
        items=[
            store.ItemRow(position=entry.position, url=entry.url, title=entry.title, message_id=message.message_id)
            for entry, message in zip(playlist.entries, messages, strict=True)
        ],
    )
    dramatiq.group(messages).run()
    report_progress(100.0, f"{len(messages)} video jobs sent")
    return {"playlist_id": playlist_id, "videos": len(messages), "title": playlist.title}


def _record_outcome(outcome: dict[str, Any] | None) -> dict[str, Any]:
    if outcome is None:
        return {"playlist_finished": False}
    logger.info(
        "playlist %s %s: %d of %d videos succeeded; failed: %s",
        outcome["id"],
        outcome["status"],
        outcome["succeeded"],
        outcome["total"],
        [f"{f['url']}: {f['reason']}" for f in outcome["failures"]] or "none",
    )
    return {
        "playlist_finished": True,
        "playlist_id": outcome["id"],
        "status": outcome["status"],
        "succeeded": outcome["succeeded"],
        "failed": outcome["failed"],
        "failures": outcome["failures"],
    }


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("40 2 * * *"))
def cleanup_media_cache(days: float | None = None) -> dict[str, Any]:
    """Delete downloads older than ``days`` (default ``CACHE_RETENTION_DAYS``) and forget their entries.

    It runs on the media queue because the downloads are where the media workers keep them: a cleanup
    elsewhere would find no files, and would forget every entry of a cache it cannot see.
    """
    removed = housekeeping.delete_files_older_than(settings.cache_dir / "media", days or settings.cache_retention_days)
    forgotten = store.prune_download_cache()
    return {"files": removed.files, "bytes": removed.bytes, "cache_entries_forgotten": forgotten}


@dramatiq.actor(queue_name=QUEUE, actor_name="media_playlist_video_succeeded", max_retries=5, min_backoff=500)
def playlist_video_succeeded(message_data: dict, result: dict | None) -> dict[str, Any]:
    """Callback of a playlist's video job that succeeded."""
    video_id = (result or {}).get("video_id")
    outcome = store.finish_playlist_item(
        message_data["message_id"], succeeded=True, video_id=video_id if isinstance(video_id, int) else None
    )
    return _record_outcome(outcome)


@dramatiq.actor(queue_name=QUEUE, actor_name="media_playlist_video_failed", max_retries=5, min_backoff=500)
def playlist_video_failed(message_data: dict, failure: dict) -> dict[str, Any]:
    """Callback of a playlist's video job that ended failed or dead: its reason goes on the item."""
    reason = f"{failure.get('type', 'Error')}: {failure.get('message', '')}".strip()
    outcome = store.finish_playlist_item(message_data["message_id"], succeeded=False, error=reason)
    return _record_outcome(outcome)
