"""Probing media files with ffprobe and taking still frames every N seconds with ffmpeg.

``probe_media`` is the gate every media file passes before anything heavier runs: it refuses an empty
file, a file that is not media and a truncated MP4/MOV (whose boxes claim more bytes than the file
holds; ffprobe alone accepts such a file when its index sits at the front) with a message a person
understands.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from processing.errors import CorruptInput, InvalidArgument, NotFound, UnsupportedFormat

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, "str | None"], None]

#: ISO base media (MP4, MOV, M4A, 3GP) top-level box types: a file starting with one of them is walked.
_ISO_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"moof", b"styp", b"uuid"}


@dataclass(frozen=True)
class MediaProbe:
    """What ffprobe says about a media file or URL. ``duration`` is in seconds, ``size`` in bytes."""

    duration: float | None
    size: int | None
    format_name: str
    has_audio: bool
    has_video: bool
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Frame:
    """One extracted still: its position, its time in the media (seconds) and the JPEG's path."""

    index: int
    time: float
    path: Path


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and "://" in source


def _check_iso_boxes(path: Path) -> None:
    """Raise ``CorruptInput`` when an MP4/MOV file's top-level boxes run past its end (a cut download)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(8)
        if len(header) < 8 or header[4:8] not in _ISO_BOX_TYPES:
            return
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(8)
            if len(header) < 8:
                raise CorruptInput(f"{path.name!r} is truncated: a box header is cut off at byte {offset}")
            box_size, box_type = struct.unpack(">I4s", header)
            if box_size == 1:
                large = handle.read(8)
                if len(large) < 8:
                    raise CorruptInput(f"{path.name!r} is truncated at byte {offset}")
                box_size = struct.unpack(">Q", large)[0]
            elif box_size == 0:  # the last box runs to the end of the file
                return
            if box_size < 8:
                raise CorruptInput(f"{path.name!r} is damaged: box {box_type!r} at byte {offset} is invalid")
            if offset + box_size > size:
                missing = offset + box_size - size
                raise CorruptInput(
                    f"{path.name!r} is truncated: its {box_type.decode('latin-1')!r} box needs "
                    f"{missing} more bytes than the file holds ({size} bytes)"
                )
            offset += box_size


def probe_media(
    source: str | Path,
    *,
    timeout_seconds: float = 60.0,
    headers: Mapping[str, str] | None = None,
) -> MediaProbe:
    """Describe a local media file or a media URL; raise a readable error when it is not usable media.

    Raises ``NotFound`` (no such file), ``CorruptInput`` (empty, truncated or damaged) or
    ``UnsupportedFormat`` (not audio or video at all).
    """
    name = str(source)
    command = ["ffprobe", "-v", "error", "-show_entries", "format=duration,size,format_name:stream="]
    command[-1] += "codec_type,width,height,duration"
    command += ["-of", "json"]
    if _is_url(source):
        timeout_us = str(int(timeout_seconds * 1_000_000))
        command += ["-rw_timeout", timeout_us]
        if headers:
            command += ["-headers", "".join(f"{key}: {value}\r\n" for key, value in headers.items())]
    else:
        path = Path(source)
        if not path.is_file():
            raise NotFound(f"media file {name!r} does not exist")
        if path.stat().st_size == 0:
            raise CorruptInput(f"media file {path.name!r} is empty (0 bytes)")
        _check_iso_boxes(path)
        name = path.name
    command.append(str(source))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds + 5)
    except subprocess.TimeoutExpired as exc:
        raise CorruptInput(f"ffprobe could not read {name!r} within {timeout_seconds:.0f}s") from exc
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["ffprobe failed"])[-1]
        if "Invalid data found" in reason:
            raise UnsupportedFormat(f"{name!r} is not an audio or video file ffmpeg can read ({reason})")
        if "moov atom not found" in completed.stderr:
            raise CorruptInput(f"{name!r} is truncated or damaged: its MP4 index (moov box) is missing")
        raise CorruptInput(f"cannot read media {name!r}: {reason}")
    data = json.loads(completed.stdout or "{}")
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    video = [s for s in streams if s.get("codec_type") == "video"]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video and not audio:
        raise UnsupportedFormat(f"{name!r} holds no audio or video stream")
    duration = _float_or_none(fmt.get("duration"))
    if duration is None:
        durations = [_float_or_none(s.get("duration")) for s in streams]
        duration = max((d for d in durations if d is not None), default=None)
    size = fmt.get("size")
    return MediaProbe(
        duration=duration,
        size=int(size) if size not in (None, "N/A") else None,
        format_name=str(fmt.get("format_name") or ""),
        has_audio=bool(audio),
        has_video=bool(video),
        width=int(video[0]["width"]) if video and video[0].get("width") else None,
        height=int(video[0]["height"]) if video and video[0].get("height") else None,
    )


def _float_or_none(value: object) -> float | None:
    if value in (None, "", "N/A"):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def probe_duration(source: str | Path) -> float:
    """The media's duration in seconds; ``CorruptInput`` when ffprobe cannot tell it."""
    probe = probe_media(source)
    if probe.duration is None or probe.duration <= 0:
        raise CorruptInput(f"cannot tell the duration of {Path(str(source)).name!r}")
    return probe.duration


def frame_times(duration: float, interval_seconds: float) -> list[float]:
    """Times (seconds) of the frames taken every ``interval_seconds``: 0, N, 2N, ... before ``duration``."""
    if interval_seconds <= 0:
        raise InvalidArgument(f"frame interval must be positive, got {interval_seconds}")
    count = max(1, math.ceil(duration / interval_seconds - 1e-9))
    return [float(round(i * interval_seconds, 3)) for i in range(count)]


def extract_frames(
    video: str | Path,
    output_dir: str | Path,
    *,
    interval_seconds: float = 30.0,
    width: int | None = 640,
    quality: int = 4,
    on_progress: ProgressCallback | None = None,
) -> list[Frame]:
    """Save one JPEG every ``interval_seconds`` of ``video`` into ``output_dir``; return the frames in order.

    Each frame is taken by seeking to its time, so the recorded times are exact and a long video costs
    one short decode per frame instead of a full pass. ``width`` scales the frame down (keeping the
    aspect ratio; ``None`` keeps the size). ``quality`` is ffmpeg's JPEG scale, 2 (best) to 31.
    """
    path = Path(video)
    probe = probe_media(path)
    if not probe.has_video:
        raise UnsupportedFormat(f"{path.name!r} has no video stream to take frames from")
    if probe.duration is None or probe.duration <= 0:
        raise CorruptInput(f"cannot tell the duration of {path.name!r}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    times = frame_times(probe.duration, interval_seconds)
    frames: list[Frame] = []
    scale = ["-vf", f"scale='min({width},iw)':-2"] if width else []
    for index, time in enumerate(times):
        target = out / f"frame_{index:05d}_{int(time * 1000):09d}ms.jpg"
        command = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-ss", f"{time:.3f}", "-i", str(path)]
        command += ["-frames:v", "1", *scale, "-q:v", str(quality), str(target)]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            target.unlink(missing_ok=True)
            if index == len(times) - 1 and index > 0:
                # The last slot can fall past the last decodable picture of a stream a hair shorter
                # than the container; keep the frames taken.
                logger.info("no frame at %.3fs of %r (end of stream)", time, path.name)
                break
            reason = (completed.stderr.strip().splitlines() or ["no picture decoded"])[-1]
            raise CorruptInput(f"cannot take the frame at {time:.1f}s of {path.name!r}: {reason}")
        frames.append(Frame(index=index, time=time, path=target))
        if on_progress is not None:
            on_progress(100.0 * (index + 1) / len(times), f"frame {index + 1} of {len(times)}")
    return frames


def remove_frames(output_dir: str | Path) -> None:
    """Delete a frame directory (after a failed job, so nothing half-written stays behind)."""
    shutil.rmtree(output_dir, ignore_errors=True)
