"""Transcript times follow the speech: with silence before, between and after the sentences, every
segment (and every word run, when asked) starts and ends within 0.3 s of the speech, directly and
through a worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from processing import transcription
from tests.media.padded_speech import PaddedSpeech, padded_speech
from tests.media.words import word_recall
from tests.support import wait_for_job

pytestmark = pytest.mark.timeout(600)

TOLERANCE_S = 0.3
FIRST = "The weather station on the hill recorded a sharp drop in pressure this morning."
SECOND = "Engineers will replace the broken sensor before the storm arrives tonight."
THIRD = "Please close the gate behind you when you leave the orchard."


def assert_words_timed(clip: PaddedSpeech, words: list[tuple[float, float, str]]) -> None:
    """The words of each sentence start and end within tolerance of the sentence, none lies in silence."""
    assert words, "no words"
    for (start, end), sentence in zip(clip.spans, clip.sentences, strict=True):
        mine = [w for w in words if w[1] > start - TOLERANCE_S and w[0] < end + TOLERANCE_S]
        assert mine, (sentence, words)
        assert abs(mine[0][0] - start) <= TOLERANCE_S, ("onset", sentence, mine[0][0], start)
        assert abs(mine[-1][1] - end) <= TOLERANCE_S, ("end", sentence, mine[-1][1], end)
        assert word_recall(sentence, " ".join(w[2] for w in mine)) >= 0.7, (sentence, mine)
    assert len(words) == sum(1 for w in words if _in_speech(clip, w[0], w[1]))


def _in_speech(clip: PaddedSpeech, start: float, end: float) -> bool:
    """The span lies within one sentence, give or take the tolerance."""
    return any(a - TOLERANCE_S <= start and end <= b + TOLERANCE_S for a, b in clip.spans)


def assert_segments_timed(clip: PaddedSpeech, segments: list[tuple[float, float, str]]) -> None:
    """Segments begin and end with speech, never in the silence around it: Whisper may join sentences a
    short pause apart into one segment, but a sentence after (or before) a long silence starts (or ends)
    a segment within tolerance of its real onset (or end)."""
    assert segments, "no segments"
    for start, end, text in segments:
        assert any(a - TOLERANCE_S <= start <= b for a, b in clip.spans), ("start in silence", start, text)
        assert any(a <= end <= b + TOLERANCE_S for a, b in clip.spans), ("end in silence", end, text)
    starts, ends = [s[0] for s in segments], [s[1] for s in segments]
    for number, (start, end) in enumerate(clip.spans):
        before = start - (clip.spans[number - 1][1] if number else 0.0)
        after = (clip.spans[number + 1][0] if number + 1 < len(clip.spans) else clip.duration) - end
        if before >= LONG_SILENCE_S:
            assert min(abs(t - start) for t in starts) <= TOLERANCE_S, ("onset", clip.sentences[number], starts)
        if after >= LONG_SILENCE_S:
            assert min(abs(t - end) for t in ends) <= TOLERANCE_S, ("end", clip.sentences[number], ends)
    heard = " ".join(s[2] for s in segments)
    assert word_recall(" ".join(clip.sentences), heard) >= 0.7, heard


#: Silence after which a sentence must open (or before which it must close) a segment of its own.
LONG_SILENCE_S = 2.0


CLIPS = {
    "silence at the start, middle and end": [2.0, FIRST, 3.0, SECOND, 2.5],
    "long lead-in, one sentence": [4.5, THIRD, 0.8],
    "short pauses between three sentences": [2.2, FIRST, 1.0, THIRD, 1.5, SECOND, 3.0],
}


@pytest.mark.parametrize("parts", list(CLIPS.values()), ids=list(CLIPS))
def test_segments_and_words_start_and_end_with_the_speech(tmp_path: Path, parts: list[float | str]) -> None:
    # Given speech padded by known silence
    clip = padded_speech(parts, tmp_path)

    # When it is transcribed, with and without word timestamps
    plain = transcription.transcribe(clip.path)
    worded = transcription.transcribe(clip.path, word_timestamps=True)

    # Then the segments start and end with the speech, and the words agree with their segments
    assert_segments_timed(clip, [(s.start, s.end, s.text) for s in plain.segments])
    assert_segments_timed(clip, [(s.start, s.end, s.text) for s in worded.segments])
    words = [w for s in worded.segments for w in s.words]
    assert_words_timed(clip, [(w.start, w.end, w.text) for w in words])
    for segment in worded.segments:
        assert segment.start == segment.words[0].start and segment.end == max(w.end for w in segment.words)


def test_a_worker_stores_segment_times_that_follow_the_speech(
    worker: object, tmp_path: Path, in_storage: Path, storage_root: Path
) -> None:
    # Given an MP4 (AAC) of speech after two seconds of silence, with a pause and a silent end
    from pipelines.media import transcribe, video_for_job

    clip = padded_speech(CLIPS["silence at the start, middle and end"], tmp_path, container="mp4")
    target = in_storage / "padded.mp4"
    shutil.copyfile(clip.path, target)

    # When the worker transcribes it with word timestamps
    job = wait_for_job(transcribe(str(target.relative_to(storage_root)), word_timestamps=True).id, timeout=300)

    # Then the stored segments and words start and end with the speech
    assert job.state == "succeeded", job.error_message
    video = video_for_job(job.id)
    assert video is not None
    assert video["segments"][0]["start"] >= 2.0 - TOLERANCE_S
    assert_segments_timed(clip, [(s["start"], s["end"], s["text"]) for s in video["segments"]])
    assert_words_timed(clip, [(w["start"], w["end"], w["text"]) for s in video["segments"] for w in s["words"]])
