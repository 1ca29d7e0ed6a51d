"""``transcribe``, ``video`` and ``playlist``: the media pipeline from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cli.common import job_failure, wait_for_job
from pipelines.media import (
    playlist_for_job,
    process_playlist,
    process_video,
    stage_sample_clip,
    transcribe,
    video_for_job,
)


def _print_video(message_id: str, args: argparse.Namespace) -> int:
    if not args.wait:
        print(message_id)
        return 0
    job = wait_for_job(message_id, args.timeout)
    if job is None or job.state != "succeeded":
        print(job_failure(message_id, job, queued="unknown"), file=sys.stderr)
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
    return _print_video(transcribe(source, word_timestamps=args.words).id, args)


def _cmd_video(args: argparse.Namespace) -> int:
    run = process_video(args.source, extract_frames=not args.no_frames, frame_interval=args.interval)
    return _print_video(run.id, args)


def _cmd_playlist(args: argparse.Namespace) -> int:
    message_id = process_playlist(args.url, extract_frames=not args.no_frames, frame_interval=args.interval).id
    if not args.wait:
        print(message_id)
        return 0
    job = wait_for_job(message_id, args.timeout)
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
