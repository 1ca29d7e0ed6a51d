"""Make the short media clip the repository ships: speech of a known sentence over a test video.

The speech is spoken by espeak-ng, the picture is ffmpeg's ``testsrc2`` pattern, and the result is a
small MP4 (H.264 + AAC) of exactly ``DURATION_SECONDS``. Run from the repository root:

    python -m samples.media.make_clip [OUTPUT]

Tests import ``SENTENCE`` and ``make_clip`` to build their own copies (at other lengths, too).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

SENTENCE = "The market opened higher this morning, and the price of gold rose by two percent before noon."
DURATION_SECONDS = 8
CLIP_PATH = Path(__file__).resolve().parent / "clip.mp4"


def make_clip(
    output: Path,
    *,
    sentence: str = SENTENCE,
    duration_seconds: float = DURATION_SECONDS,
    size: str = "160x120",
    audio_only: bool = False,
) -> Path:
    """Write a clip of ``duration_seconds`` with ``sentence`` spoken from the start; return its path.

    The speech is padded with silence (or cut) to the duration, so the clip's length is exact. With
    ``audio_only`` the result holds only the audio track (use a ``.m4a`` or ``.wav`` suffix).
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        speech = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(speech), sentence],
            check=True,
            capture_output=True,
        )
        duration = f"{duration_seconds:g}"
        command = ["ffmpeg", "-y", "-loglevel", "error", "-i", str(speech)]
        if not audio_only:
            command += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration={duration}"]
        command += ["-filter:a", f"apad=whole_dur={duration},atrim=0:{duration}", "-ac", "1", "-ar", "16000"]
        if output.suffix.lower() != ".wav":
            command += ["-c:a", "aac", "-b:a", "32k"]
        if not audio_only:
            command += [
                "-map", "1:v", "-map", "0:a",
                "-c:v", "libx264", "-preset", "veryslow", "-crf", "32", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart",
            ]  # fmt: skip
        command += ["-t", duration, str(output)]
        subprocess.run(command, check=True, capture_output=True)
    return output


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    output = Path(args[0]) if args else CLIP_PATH
    make_clip(output)
    print(f"{output} ({output.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
