"""Caption tracks in YouTube's json3 and WebVTT formats, chosen, fetched over HTTP and parsed."""

from __future__ import annotations

from pathlib import Path

import pytest

from processing import captions, media
from processing.errors import CorruptInput, UnsupportedFormat
from tests.media import caption_files
from tests.media.media_server import MediaServer


def texts(segments: list) -> list[str]:
    return [s.text for s in segments]


def test_manual_json3_captions_become_timed_segments(tmp_path: Path) -> None:
    # Given a json3 caption file written to disk
    path = tmp_path / "video.en.json3"
    path.write_text(caption_files.MANUAL_JSON3)
    # When it is parsed
    segments = captions.parse_captions(path.read_text(), "json3")
    # Then each caption event is one segment with its start and end in seconds
    assert texts(segments) == [
        "The market opened higher",
        "this morning, and gold rose by",
        "two percent before noon & more.",
    ]
    assert [(s.start, s.end) for s in segments] == [(0.2, 2.8), (2.8, 5.2), (5.2, 7.0)]


def test_automatic_json3_captions_keep_word_times_and_do_not_overlap() -> None:
    # Given YouTube's automatic json3 (word pieces, overlapping lines, newline events)
    # When it is parsed
    segments = captions.parse_json3(caption_files.AUTO_JSON3)
    # Then each line appears once, ending where the next begins
    assert texts(segments) == ["the market opened higher", "this morning"]
    assert segments[0].start == pytest.approx(0.12)
    assert segments[0].end == pytest.approx(2.11)
    assert segments[1].end == pytest.approx(6.11)
    # And the word offsets are kept
    assert [(w.text, w.start) for w in segments[0].words] == [
        ("the", 0.12),
        ("market", 0.36),
        ("opened", 0.72),
        ("higher", 1.12),
    ]


def test_manual_vtt_captions_become_timed_segments(tmp_path: Path) -> None:
    # Given a WebVTT file with a header, a note, cue ids, cue settings, tags and entities
    path = tmp_path / "video.en.vtt"
    path.write_text(caption_files.MANUAL_VTT)
    # When it is parsed
    segments = captions.parse_captions(path.read_text(), "vtt")
    # Then the cues come out as plain text with their times
    assert texts(segments) == [
        "The market opened higher",
        "this morning, and gold rose by",
        "two percent before noon & more.",
    ]
    assert [(s.start, s.end) for s in segments] == [(0.2, 2.8), (2.8, 5.2), (5.2, 7.0)]


def test_automatic_vtt_captions_are_folded_so_each_line_appears_once() -> None:
    # Given YouTube's automatic VTT with its rolling repeats
    # When it is parsed
    segments = captions.parse_vtt(caption_files.AUTO_VTT)
    # Then each spoken line is one segment, with words timed by the inline stamps
    assert texts(segments) == ["the market opened higher", "this morning"]
    assert (segments[0].start, segments[1].start) == (0.12, 2.11)
    assert [(w.text, w.start) for w in segments[0].words][:2] == [("the", 0.12), ("market", 0.36)]
    assert [(w.text, w.start) for w in segments[1].words] == [("this", 2.11), ("morning", 2.41)]


def test_broken_caption_files_are_refused_with_a_reason() -> None:
    # Given a json3 file that is not JSON, a VTT without its header, and an unknown format
    # When they are parsed
    # Then each fails as bad input
    with pytest.raises(CorruptInput, match="not valid JSON"):
        captions.parse_json3("{not json")
    with pytest.raises(CorruptInput, match="WEBVTT"):
        captions.parse_vtt("00:00:01.000 --> 00:00:02.000\nhello\n")
    with pytest.raises(UnsupportedFormat):
        captions.parse_captions("1\n00:00:01,000 --> 00:00:02,000\nhi\n", "srt")


def test_manual_captions_in_the_preferred_language_win_over_automatic_ones() -> None:
    # Given the tracks a YouTube video offers: automatic English (original and translated), manual
    # English in VTT and json3, manual German, and a format we do not parse
    def track(lang: str, ext: str, automatic: bool, url: str = "") -> media.CaptionTrack:
        return media.CaptionTrack(lang, ext, url or f"https://example.invalid/{lang}.{ext}", automatic)

    tracks = [
        track("en", "json3", True),
        track("en-US", "vtt", False),
        track("en", "vtt", False),
        track("en", "json3", False),
        track("de", "json3", False),
        track("en", "srv3", False),
    ]
    # When English is preferred
    chosen = media.choose_captions(tracks, "en")
    # Then the manual English json3 track is chosen
    assert chosen == track("en", "json3", False)
    # And without manual English, the original automatic track beats a translation
    auto = [
        track("en", "vtt", True, "https://example.invalid/tt?lang=de&tlang=en"),
        track("en-orig", "vtt", True),
    ]
    assert media.choose_captions(auto, "en") == auto[1]
    # And a language nobody offers gives nothing (the audio gets transcribed instead)
    assert media.choose_captions(tracks, "fr") is None


@pytest.mark.parametrize(
    ("name", "body", "ext"),
    [
        ("video.en.json3", caption_files.MANUAL_JSON3, "json3"),
        ("video.en.vtt", caption_files.MANUAL_VTT, "vtt"),
    ],
)
def test_captions_are_fetched_over_http_through_yt_dlp(
    media_server: MediaServer, name: str, body: str, ext: str
) -> None:
    # Given a caption file served by a local HTTP server
    (media_server.root / name).write_text(body)
    track = media.CaptionTrack("en", ext, media_server.url(name), automatic=False)
    # When it is fetched and parsed
    segments = media.fetch_captions(track)
    # Then the segments are those of the file
    assert texts(segments)[0] == "The market opened higher"
    assert len(segments) == 3


def test_a_page_with_caption_tracks_offers_them_through_yt_dlps_metadata(
    media_server: MediaServer, speech_clip: Path, storage_root: Path
) -> None:
    # Given a web page with an HTML5 video and caption tracks in VTT (English) and json3 (German)
    (media_server.root / "clip.mp4").write_bytes(speech_clip.read_bytes())
    (media_server.root / "subs.en.vtt").write_text(caption_files.MANUAL_VTT)
    (media_server.root / "subs.de.json3").write_text(caption_files.MANUAL_JSON3)
    (media_server.root / "watch.html").write_text(
        "<!DOCTYPE html><html><head><title>Morning market update</title></head><body>"
        '<video controls><source src="clip.mp4" type="video/mp4">'
        '<track kind="captions" src="subs.en.vtt" srclang="en" label="English">'
        '<track kind="captions" src="subs.de.json3" srclang="de" label="Deutsch">'
        "</video></body></html>"
    )
    # When its metadata is read and a track in each language is chosen and fetched
    info = media.fetch_metadata(media_server.url("watch.html"), storage_root=storage_root)
    english = media.choose_captions(info.captions, "en")
    german = media.choose_captions(info.captions, "de")
    # Then both tracks are found and parsed, and the duration came from the media's header
    assert english is not None and english.ext == "vtt" and not english.automatic
    assert german is not None and german.ext == "json3"
    assert texts(media.fetch_captions(english))[-1] == "two percent before noon & more."
    assert len(media.fetch_captions(german)) == 3
    assert info.duration == pytest.approx(8.0, abs=0.1)
