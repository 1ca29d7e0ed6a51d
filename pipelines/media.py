"""Starting media work and reading its results: what application code and the ``cli`` call.

Each start function sends one job and returns its run's handle (``pipelines.Run``): ``wait(timeout)``
returns what it produced, the video (``video_for_job``) or the playlist's outcome (``playlist_for_job``),
and raises ``RunFailed`` with the job's error. The handle's ``id`` is the job's message id, which
``transcript`` and ``frames`` take too.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.runs import Run
from processing.errors import NotFound
from settings import PROJECT_ROOT, settings

#: The clip the repository ships (speech of a known sentence over a test picture) and where the demo
#: puts it: sources given as paths must lie under the storage root.
SAMPLE_CLIP = PROJECT_ROOT / "samples" / "media" / "clip.mp4"
DEMO_PATH = Path("samples") / "media-demo-clip.mp4"


def video_run(message_id: str) -> Run:
    """The handle of a video job (``process_video``, ``transcribe``, ``extract_frames``): its result is
    the stored video, ``video_for_job(message_id)``."""
    return Run(message_id, result=lambda: video_for_job(message_id))


def playlist_run(message_id: str) -> Run:
    """The handle of a playlist job: its children are the video jobs, its result ``playlist_for_job``
    once every video ended."""

    def settled() -> bool:
        outcome = playlist_for_job(message_id)
        return outcome is not None and outcome["finished_at"] is not None

    return Run(message_id, result=lambda: playlist_for_job(message_id), settled=settled)


def process_video(url_or_path: str, *, extract_frames: bool = True, frame_interval: float | None = None) -> Run:
    """Process one video (URL or path under the storage root); returns the job's handle, whose
    ``wait()`` returns the video (metadata, segments, frames)."""
    from actors.media import process_youtube_video

    message = process_youtube_video.send(url_or_path, extract_frames=extract_frames, frame_interval=frame_interval)
    return video_run(message.message_id)


def process_playlist(url: str, *, extract_frames: bool = True, frame_interval: float | None = None) -> Run:
    """Expand a playlist and process its videos; returns the playlist job's handle, whose ``wait()``
    returns the playlist's outcome once every video ended (``RunFailed`` when one of them failed)."""
    from actors.media import process_youtube_playlist

    message = process_youtube_playlist.send(url, extract_frames=extract_frames, frame_interval=frame_interval)
    return playlist_run(message.message_id)


def transcribe(source: str, *, word_timestamps: bool = False) -> Run:
    """Transcribe a media URL or file with Whisper; returns the job's handle (``wait()``: the video)."""
    from actors.media import transcribe_media

    return video_run(transcribe_media.send(source, word_timestamps=word_timestamps).message_id)


def extract_frames(source: str, *, interval: float | None = None) -> Run:
    """Take frames every ``interval`` seconds of a video; returns the job's handle (``wait()``: the video)."""
    from actors.media import extract_frames as extract_frames_actor

    return video_run(extract_frames_actor.send(source, interval=interval).message_id)


@dataclass(frozen=True)
class Segment:
    """A timed piece of a transcript: ``start`` and ``end`` in seconds from the start of the media;
    ``words`` holds ``{"start", "end", "text"}`` per word when word times were asked for (or the captions
    carry them), else is empty."""

    start: float
    end: float
    text: str
    words: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class FrameImage:
    """A still taken at ``time`` seconds; ``path`` is relative to the storage root (``STORAGE_ROOT``)."""

    time: float
    path: str


def _video(video: int | str) -> dict[str, Any]:
    from storage.media import get_video

    found = get_video(video) if isinstance(video, int) else get_video(job_id=video)
    if found is None:
        raise NotFound(f"no video {'with id' if isinstance(video, int) else 'made by job'} {video!r}")
    return found


def transcript(video: int | str) -> list[Segment]:
    """The transcript of a video, by its id or by the message id of the job that made it (the ``id`` of
    the handle ``process_video`` and ``transcribe`` return); ``NotFound`` when there is none."""
    return [Segment(s["start"], s["end"], s["text"], tuple(s["words"])) for s in _video(video)["segments"]]


def frames(video: int | str) -> list[FrameImage]:
    """The frames taken from a video, in time order, by video id or job message id (see ``transcript``)."""
    return [FrameImage(f["time"], f["path"]) for f in _video(video)["frames"]]


def video_for_job(message_id: str) -> dict[str, Any] | None:
    """The video (metadata, segments, frames) a job produced, once it succeeded."""
    from storage.media import get_video

    return get_video(job_id=message_id)


def playlist_for_job(message_id: str) -> dict[str, Any] | None:
    """The playlist run a playlist job started: items, status and failures once all videos ended."""
    from storage.media import get_playlist

    return get_playlist(job_id=message_id)


def stage_sample_clip() -> str:
    """Copy the shipped clip under the storage root; returns its path relative to the root."""
    target = settings.storage_root / DEMO_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.stat().st_size != SAMPLE_CLIP.stat().st_size:
        shutil.copyfile(SAMPLE_CLIP, target)
    return str(DEMO_PATH)


def demo() -> list[Run]:
    """Transcribe the shipped clip (``make demo``); returns its run."""
    return [transcribe(stage_sample_clip(), word_timestamps=True)]
