"""Speech with known silence around it: espeak-ng sentences trimmed to their first and last audible
sample (measured on the samples themselves), joined by stretches of digital silence of known length."""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: A 10 ms frame louder than this share of the loudest frame is speech.
ENERGY_SHARE = 0.02


@dataclass(frozen=True)
class PaddedSpeech:
    path: Path
    spans: list[tuple[float, float]]  # true start and end of each sentence, seconds
    sentences: list[str]
    duration: float


def spoken(text: str, folder: Path, *, voice: str = "en-us", speed: int = 150) -> tuple[int, np.ndarray]:
    """espeak-ng's 16-bit samples of ``text`` and their rate."""
    path = folder / f"tts-{abs(hash((text, voice, speed)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, timeout=60)
    with wave.open(str(path)) as handle:
        return handle.getframerate(), np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)


def audible(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last sample (exclusive) of the 10 ms frames above ``ENERGY_SHARE`` of the loudest."""
    frame = rate // 100
    count = len(samples) // frame
    energy = np.sqrt((samples[: count * frame].astype(np.float64).reshape(count, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(energy > ENERGY_SHARE * energy.max())
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def padded_speech(
    parts: Sequence[float | str], folder: Path, *, name: str = "padded", container: str = "wav", speed: int = 150
) -> PaddedSpeech:
    """A clip of ``parts`` in order: a number is that many seconds of silence, a string is spoken.

    ``container`` ``wav`` writes the samples as they are; ``mp4`` has ffmpeg encode them as AAC in an MP4
    (what a user uploads), which keeps the timing.
    """
    rate = 16_000
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    sentences: list[str] = []
    at = 0
    for part in parts:
        if isinstance(part, str):
            source_rate, samples = spoken(part, folder, speed=speed)
            first, last = audible(samples, source_rate)
            samples = samples[first:last]
            if source_rate != rate:  # espeak-ng speaks at 22,050 Hz: resample linearly to 16 kHz
                positions = np.arange(0, len(samples), source_rate / rate)
                samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
            pieces.append(samples)
            spans.append((at / rate, (at + len(samples)) / rate))
            sentences.append(part)
            at += len(samples)
        else:
            pieces.append(np.zeros(round(float(part) * rate), dtype=np.int16))
            at += round(float(part) * rate)
    wav = folder / f"{name}.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(np.concatenate(pieces).tobytes())
    path = wav
    if container == "mp4":
        path = folder / f"{name}.mp4"
        command = ["ffmpeg", "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "96k", str(path)]
        subprocess.run(command, check=True, timeout=120)
    return PaddedSpeech(path, spans, sentences, at / rate)
