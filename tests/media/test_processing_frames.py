"""Frames every N seconds with ffmpeg, and the probe that refuses broken media."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from processing import frames
from processing.errors import CorruptInput, InvalidArgument, NotFound, UnsupportedFormat
from samples.media.make_clip import make_clip
from tests.media.conftest import CLIP_SECONDS


def test_frames_are_taken_every_interval_and_their_count_is_duration_over_interval(
    speech_clip: Path, tmp_path: Path
) -> None:
    # Given an 8-second clip
    out = tmp_path / "frames"
    progress: list[float] = []
    # When a frame is taken every 2 seconds
    taken = frames.extract_frames(
        speech_clip, out, interval_seconds=2, on_progress=lambda pct, note: progress.append(pct)
    )
    # Then there are duration / interval frames, at 0, 2, 4 and 6 seconds
    assert len(taken) == CLIP_SECONDS // 2
    assert [f.time for f in taken] == [0.0, 2.0, 4.0, 6.0]
    # And each is a JPEG in the output folder
    for frame in taken:
        assert frame.path.parent == out
        assert frame.path.read_bytes()[:3] == b"\xff\xd8\xff"
    assert progress[-1] == 100.0


def test_a_partial_last_interval_still_gets_its_frame(speech_clip: Path, tmp_path: Path) -> None:
    # Given an 8-second clip
    # When frames are taken every 3 seconds
    taken = frames.extract_frames(speech_clip, tmp_path, interval_seconds=3)
    # Then the count is the duration over the interval, rounded up
    assert len(taken) == math.ceil(CLIP_SECONDS / 3)
    assert [f.time for f in taken] == [0.0, 3.0, 6.0]


def test_the_probe_reads_duration_streams_and_size(speech_clip: Path) -> None:
    # Given the clip
    # When it is probed
    probe = frames.probe_media(speech_clip)
    # Then ffprobe's figures come back
    assert probe.duration == pytest.approx(CLIP_SECONDS, abs=0.05)
    assert probe.has_audio and probe.has_video
    assert probe.size == speech_clip.stat().st_size
    assert frames.probe_duration(speech_clip) == pytest.approx(CLIP_SECONDS, abs=0.05)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    # Given a 0-byte file
    empty = tmp_path / "empty.mp4"
    empty.touch()
    # When it is probed
    # Then it is refused as empty
    with pytest.raises(CorruptInput, match=r"empty \(0 bytes\)"):
        frames.probe_media(empty)


def test_a_file_that_is_not_media_is_refused(tmp_path: Path) -> None:
    # Given a text file named like a video
    fake = tmp_path / "talk.mp4"
    fake.write_text("just some words, no pictures\n" * 100)
    # When it is probed
    # Then it is refused as not media
    with pytest.raises(UnsupportedFormat, match="not an audio or video file"):
        frames.probe_media(fake)


@pytest.mark.parametrize("faststart", [True, False], ids=["index-first", "index-last"])
def test_a_truncated_mp4_is_refused_wherever_its_index_is(speech_clip: Path, tmp_path: Path, faststart: bool) -> None:
    # Given an MP4 cut in half, with its index (moov) at the front or at the end
    whole = tmp_path / "whole.mp4"
    flags = ["-movflags", "+faststart"] if faststart else []
    subprocess.run(
        ["ffmpeg", "-y", "-v", "error", "-i", str(speech_clip), "-c", "copy", *flags, str(whole)], check=True
    )
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # When it is probed or framed
    # Then it is refused as truncated
    with pytest.raises(CorruptInput, match="truncated"):
        frames.probe_media(cut)
    with pytest.raises(CorruptInput, match="truncated"):
        frames.extract_frames(cut, tmp_path / "frames", interval_seconds=2)


def test_audio_without_pictures_has_no_frames_to_take(tmp_path: Path) -> None:
    # Given an audio-only file
    audio = make_clip(tmp_path / "speech.m4a", duration_seconds=3, audio_only=True)
    # When frames are asked for
    # Then the request is refused, saying why
    with pytest.raises(UnsupportedFormat, match="no video stream"):
        frames.extract_frames(audio, tmp_path / "frames", interval_seconds=1)


def test_a_missing_file_and_a_bad_interval_are_refused(speech_clip: Path, tmp_path: Path) -> None:
    # Given a path that does not exist, and a zero interval
    # When frames are asked for
    # Then each is refused as bad input
    with pytest.raises(NotFound):
        frames.extract_frames(tmp_path / "nope.mp4", tmp_path, interval_seconds=2)
    with pytest.raises(InvalidArgument):
        frames.extract_frames(speech_clip, tmp_path, interval_seconds=0)
