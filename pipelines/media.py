"""Starting media work and reading its results: what application code and the ``cli`` call.

Each ``process_*`` function sends one job and returns its message id; poll the job table with it
(``storage.jobs.get_job``) and read what it produced with ``video_for_job`` / ``playlist_for_job``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from settings import PROJECT_ROOT, settings

#: The clip the repository ships (speech of a known sentence over a test picture) and where the demo
#: puts it: sources given as paths must lie under the storage root.
SAMPLE_CLIP = PROJECT_ROOT / "samples" / "media" / "clip.mp4"
DEMO_PATH = Path("samples") / "media-demo-clip.mp4"


def process_video(url_or_path: str, *, extract_frames: bool = True, frame_interval: float | None = None) -> str:
    """Process one video (URL or path under the storage root); returns the job's message id."""
    from actors.media import process_youtube_video

    message = process_youtube_video.send(url_or_path, extract_frames=extract_frames, frame_interval=frame_interval)
    return str(message.message_id)


def process_playlist(url: str, *, extract_frames: bool = True, frame_interval: float | None = None) -> str:
    """Expand a playlist and process its videos; returns the playlist job's message id."""
    from actors.media import process_youtube_playlist

    message = process_youtube_playlist.send(url, extract_frames=extract_frames, frame_interval=frame_interval)
    return str(message.message_id)


def transcribe(source: str, *, word_timestamps: bool = False) -> str:
    """Transcribe a media URL or file with Whisper; returns the job's message id."""
    from actors.media import transcribe_media

    return str(transcribe_media.send(source, word_timestamps=word_timestamps).message_id)


def extract_frames(source: str, *, interval: float | None = None) -> str:
    """Take frames every ``interval`` seconds of a video; returns the job's message id."""
    from actors.media import extract_frames as extract_frames_actor

    return str(extract_frames_actor.send(source, interval=interval).message_id)


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


def demo() -> list[str]:
    """Transcribe the shipped clip (``make demo``); returns the message id to follow."""
    return [transcribe(stage_sample_clip(), word_timestamps=True)]


# ----------------------------------------------------------------------------------------------------
# cli
# ----------------------------------------------------------------------------------------------------


def _wait(message_id: str, timeout: float) -> Any:
    from middleware.job_status import flush
    from storage.jobs import get_job
    from storage.models import FINISHED_STATES

    finished = {state.value for state in FINISHED_STATES}
    deadline = time.monotonic() + timeout
    while True:
        flush()
        job = get_job(message_id)
        if job is not None and job.state in finished:
            return job
        if time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def _print_video(message_id: str, args: argparse.Namespace) -> int:
    if not args.wait:
        print(message_id)
        return 0
    job = _wait(message_id, args.timeout)
    if job is None or job.state != "succeeded":
        state = job.state if job is not None else "unknown"
        reason = f": {job.error_message}" if job is not None and job.error_message else ""
        print(f"job {message_id} {state}{reason}", file=sys.stderr)
        return 1
    video = video_for_job(message_id)
    if args.json:
        print(json.dumps(video, indent=2, default=str))
        return 0
    assert video is not None
    print(f"{video['title']} ({video['duration'] or 0:.1f}s, transcript from {video['transcript_source']})")
    for segment in video["segments"]:
        print(f"[{segment['start']:7.2f} → {segment['end']:7.2f}] {segment['text']}")
    for frame in video["frames"]:
        print(f"frame {frame['time']:7.2f}s  {frame['path']}")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    source = stage_sample_clip() if args.source == "sample" else args.source
    return _print_video(transcribe(source, word_timestamps=args.words), args)


def _cmd_video(args: argparse.Namespace) -> int:
    message_id = process_video(args.source, extract_frames=not args.no_frames, frame_interval=args.interval)
    return _print_video(message_id, args)


def _cmd_playlist(args: argparse.Namespace) -> int:
    message_id = process_playlist(args.url, extract_frames=not args.no_frames, frame_interval=args.interval)
    if not args.wait:
        print(message_id)
        return 0
    job = _wait(message_id, args.timeout)
    if job is None or job.state != "succeeded":
        print(f"job {message_id} {job.state if job else 'unknown'}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    outcome = playlist_for_job(message_id)
    while outcome is not None and outcome["finished_at"] is None and time.monotonic() < deadline:
        time.sleep(1)
        outcome = playlist_for_job(message_id)
    print(json.dumps(outcome, indent=2, default=str))
    return 0 if outcome is not None and outcome["status"] == "succeeded" else 1


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="wait for the job and print what it produced")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait (default 1800)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def register_cli(subparsers: Any) -> None:
    """Add ``transcribe``, ``video`` and ``playlist`` subcommands to the operator's cli."""
    p = subparsers.add_parser("transcribe", help="transcribe a media URL or file (Whisper)")
    p.add_argument("source", help="URL, path under the storage root, or 'sample' for the shipped clip")
    p.add_argument("--words", action="store_true", help="keep word timestamps")
    _common(p)
    p.set_defaults(handler=_cmd_transcribe)

    p = subparsers.add_parser("video", help="process a video: metadata, captions or transcript, frames")
    p.add_argument("source", help="YouTube (or other) URL, direct media URL, or path under the storage root")
    p.add_argument("--no-frames", action="store_true", help="skip frame extraction")
    p.add_argument("--interval", type=float, default=None, help="seconds between frames")
    _common(p)
    p.set_defaults(handler=_cmd_video)

    p = subparsers.add_parser("playlist", help="process every video of a playlist")
    p.add_argument("url")
    p.add_argument("--no-frames", action="store_true", help="skip frame extraction")
    p.add_argument("--interval", type=float, default=None, help="seconds between frames")
    _common(p)
    p.set_defaults(handler=_cmd_playlist)
