"""The media actors through a real worker on real Redis, with media served from 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from settings import settings
from storage import media as store
from tests.media.caption_files import MANUAL_VTT
from tests.media.conftest import CLIP_SECONDS
from tests.media.media_server import MediaServer
from tests.media.words import word_recall
from tests.support import wait_for_job, wait_until

pytestmark = pytest.mark.slow


def frame_files(job_id: str) -> list[Path]:
    folder = settings.storage_root / "media" / "frames" / job_id
    return sorted(folder.glob("*.jpg")) if folder.exists() else []


def test_a_local_clip_gets_a_transcript_and_frames_through_the_worker(
    worker: object, speech_clip: Path, in_storage: Path, storage_root: Path, sentence: str
) -> None:
    # Given a clip under the storage root
    from pipelines.media import process_video, video_for_job

    target = in_storage / "desk.mp4"
    shutil.copyfile(speech_clip, target)
    # When it is submitted with a frame every 2 seconds and its run waited for
    run = process_video(str(target.relative_to(storage_root)), frame_interval=2)
    video = run.wait(120)
    job_id = run.id
    job = wait_for_job(job_id, timeout=10)
    # Then the wait returned the stored video: a Whisper transcript that holds the sentence
    assert job.state == "succeeded", job.error_message
    assert job.progress == 100.0
    assert video is not None and video == video_for_job(job_id)
    assert video["transcript_source"] == "whisper"
    assert word_recall(sentence, " ".join(s["text"] for s in video["segments"])) >= 0.7
    assert all(0 <= s["start"] <= s["end"] <= CLIP_SECONDS + 0.01 for s in video["segments"])
    # And a frame every 2 seconds was saved under the storage root with its time
    assert [f["time"] for f in video["frames"]] == [0.0, 2.0, 4.0, 6.0]
    assert all((storage_root / f["path"]).is_file() for f in video["frames"])
    assert len(frame_files(job_id)) == CLIP_SECONDS // 2
    # And the job's result counts the audio it transcribed (fed to the metrics counter)
    assert json.loads(job.result or "{}")["audio_seconds"] == pytest.approx(CLIP_SECONDS, abs=0.1)


def test_a_direct_url_is_downloaded_once_and_then_served_from_the_cache(
    worker: object, media_server: MediaServer, speech_clip: Path, sentence: str
) -> None:
    # Given a clip served over HTTP
    from pipelines.media import process_video, video_for_job

    shutil.copyfile(speech_clip, media_server.root / "report.mp4")
    url = media_server.url("report.mp4")
    # When it is processed twice
    first = wait_for_job(process_video(url, frame_interval=4).id, timeout=120)
    gets_after_first = sum(1 for m, p, _ in media_server.requests if m == "GET" and p == "/report.mp4")
    second = wait_for_job(process_video(url, frame_interval=4).id, timeout=120)
    gets_after_second = sum(1 for m, p, _ in media_server.requests if m == "GET" and p == "/report.mp4")
    # Then both succeeded with the same transcript and frames
    assert first.state == "succeeded", first.error_message
    assert second.state == "succeeded", second.error_message
    for job in (first, second):
        video = video_for_job(job.id)
        assert video is not None and video["extractor"] == "generic"
        assert word_recall(sentence, " ".join(s["text"] for s in video["segments"])) >= 0.7
        assert [f["time"] for f in video["frames"]] == [0.0, 4.0]
    # And the second run took the media from the download cache: it only read metadata and headers
    # again (yt-dlp's page request and ffprobe's), not the whole file
    assert gets_after_second - gets_after_first < gets_after_first


def test_captions_offered_by_the_page_are_used_instead_of_whisper(
    worker: object, media_server: MediaServer, speech_clip: Path
) -> None:
    # Given a page with a video and English captions
    from pipelines.media import process_video, video_for_job

    shutil.copyfile(speech_clip, media_server.root / "clip.mp4")
    (media_server.root / "subs.en.vtt").write_text(MANUAL_VTT)
    (media_server.root / "watch.html").write_text(
        "<html><head><title>Gold rallies</title></head><body><video>"
        '<source src="clip.mp4" type="video/mp4"><track kind="captions" src="subs.en.vtt" srclang="en">'
        "</video></body></html>"
    )
    # When the page is processed without frames
    job_id = process_video(media_server.url("watch.html"), extract_frames=False).id
    job = wait_for_job(job_id, timeout=120)
    # Then the transcript is the caption track, and nothing was transcribed or downloaded
    assert job.state == "succeeded", job.error_message
    video = video_for_job(job_id)
    assert video is not None
    assert video["transcript_source"] == "captions"
    assert video["segments"][0]["text"] == "The market opened higher"
    assert video["frames"] == []
    assert json.loads(job.result or "{}")["audio_seconds"] == 0
    assert not any(p == "/clip.mp4" and r is None for m, p, r in media_server.requests if m == "GET")


def test_transcribe_media_keeps_word_timestamps(
    worker: object, speech_clip: Path, in_storage: Path, storage_root: Path, sentence: str
) -> None:
    # Given a clip under the storage root
    from pipelines.media import transcribe, video_for_job

    target = in_storage / "words.mp4"
    shutil.copyfile(speech_clip, target)
    # When it is transcribed with word timestamps and its run waited for
    run = transcribe(str(target.relative_to(storage_root)), word_timestamps=True)
    video = run.wait(120)
    # Then the wait returned the video, whose segments carry their words, and no frames were taken
    assert wait_for_job(run.id, timeout=10).state == "succeeded"
    assert video is not None and video == video_for_job(run.id) and video["frames"] == []
    words = [w["text"] for s in video["segments"] for w in s["words"]]
    assert word_recall(sentence, " ".join(words)) >= 0.7


def test_extract_frames_alone_takes_frames_without_a_transcript(
    worker: object, speech_clip: Path, in_storage: Path, storage_root: Path
) -> None:
    # Given a clip
    from pipelines.media import extract_frames, video_for_job

    target = in_storage / "frames.mp4"
    shutil.copyfile(speech_clip, target)
    # When only frames are asked for, every 3 seconds
    job_id = extract_frames(str(target.relative_to(storage_root)), interval=3).id
    job = wait_for_job(job_id, timeout=120)
    # Then three frames and no transcript were recorded
    assert job.state == "succeeded", job.error_message
    video = video_for_job(job_id)
    assert video is not None
    assert video["transcript_source"] == "none" and video["segments"] == []
    assert [f["time"] for f in video["frames"]] == [0.0, 3.0, 6.0]


def _bad_source(kind: str, server: MediaServer, clip: Path, folder: Path, root: Path, port: int) -> str:
    if kind == "unreachable URL":
        return f"http://127.0.0.1:{port}/video.mp4"
    if kind == "non-media file":
        (folder / "slides.mp4").write_text("not a video at all\n" * 100)
        return str((folder / "slides.mp4").relative_to(root))
    if kind == "0-byte file":
        (folder / "empty.mp4").touch()
        return str((folder / "empty.mp4").relative_to(root))
    if kind == "truncated MP4":
        data = clip.read_bytes()
        (server.root / "cut.mp4").write_bytes(data[: len(data) // 2])
        return server.url("cut.mp4")
    if kind == "over the duration cap":
        shutil.copyfile(clip, server.root / "long.mp4")
        return server.url("long.mp4")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("unreachable URL", "cannot reach .* connection refused"),
        ("non-media file", "not an audio or video file"),
        ("0-byte file", r"empty \(0 bytes\)"),
        ("truncated MP4", "truncated"),
        ("over the duration cap", "over the limit of 0:00:05"),
    ],
)
def test_bad_input_fails_the_job_with_a_reason_and_leaves_nothing_behind(
    worker: object,
    media_server: MediaServer,
    speech_clip: Path,
    in_storage: Path,
    storage_root: Path,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    reason: str,
) -> None:
    # Given a bad source (for the cap: an 8-second clip and a 5-second cap)
    import actors.media
    from pipelines import RunFailed
    from pipelines.media import process_video, video_for_job

    if kind == "over the duration cap":
        monkeypatch.setattr(actors.media, "settings", dataclasses.replace(settings, max_media_seconds=5))
    source = _bad_source(kind, media_server, speech_clip, in_storage, storage_root, closed_port)
    videos_before = store.count_videos()
    # When it is processed and its run waited for
    run = process_video(source, frame_interval=2)
    with pytest.raises(RunFailed) as failed:
        run.wait(120)
    job_id = run.id
    job = wait_for_job(job_id, timeout=10)
    # Then the job failed at once (no retry) with a readable reason, which the wait raised in one line
    assert job.state == "failed"
    assert job.attempts == 1
    assert job.error_message is not None
    assert re.search(reason, job.error_message), job.error_message
    assert failed.value.error_message == job.error_message and "\n" not in str(failed.value)
    # And no video row, no frames and no downloaded file were left
    assert video_for_job(job_id) is None
    assert store.count_videos() == videos_before
    assert frame_files(job_id) == []
    assert not any((settings.cache_dir / "media").glob(".part-*"))


def test_the_worker_lives_on_after_bad_input(
    worker: object, closed_port: int, speech_clip: Path, in_storage: Path, storage_root: Path
) -> None:
    # Given a job that fails on an unreachable URL
    from pipelines.media import process_video

    failed = wait_for_job(process_video(f"http://127.0.0.1:{closed_port}/x.mp4").id, timeout=60)
    target = in_storage / "after.mp4"
    shutil.copyfile(speech_clip, target)
    # When a good job follows on the same worker
    good = wait_for_job(process_video(str(target.relative_to(storage_root)), extract_frames=False).id, timeout=120)
    # Then the first failed and the second succeeded
    assert failed.state == "failed"
    assert good.state == "succeeded", good.error_message


def test_a_playlist_fans_out_and_records_which_video_failed_and_why(
    worker: object, media_server: MediaServer, speech_clip: Path, sentence: str
) -> None:
    # Given a feed of three videos, the second of which is not media
    from pipelines.media import playlist_for_job, process_playlist, video_for_job

    shutil.copyfile(speech_clip, media_server.root / "monday.mp4")
    shutil.copyfile(speech_clip, media_server.root / "wednesday.mp4")
    (media_server.root / "tuesday.mp4").write_text("this file is a text file\n" * 100)
    media_server.content_types["tuesday.mp4"] = "video/mp4"
    items = "".join(
        f"<item><title>{day.title()}</title><guid>{day}</guid>"
        f'<enclosure url="{media_server.url(day + ".mp4")}" type="video/mp4"/></item>'
        for day in ("monday", "tuesday", "wednesday")
    )
    (media_server.root / "week.xml").write_text(
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Week in markets</title>{items}</channel></rss>'
    )
    # When the playlist is processed
    job_id = process_playlist(media_server.url("week.xml"), frame_interval=4).id
    job = wait_for_job(job_id, timeout=60)
    assert job.state == "succeeded", job.error_message

    def finished() -> dict | None:
        playlist = playlist_for_job(job_id)
        return playlist if playlist is not None and playlist["finished_at"] is not None else None

    outcome = wait_until(finished, timeout=180)
    assert outcome is not None
    # Then one job ran per video, under the playlist job
    assert outcome["total"] == 3
    children = [wait_for_job(item["message_id"], timeout=10) for item in outcome["items"]]
    assert [c.parent_id for c in children] == [job_id] * 3
    assert [c.state for c in children] == ["succeeded", "failed", "succeeded"]
    # And the outcome lists the failed video with its reason, while the others have transcripts
    assert outcome["status"] == "partial"
    assert (outcome["succeeded"], outcome["failed"]) == (2, 1)
    assert [f["title"] for f in outcome["failures"]] == ["Tuesday"]
    assert "UnsupportedFormat" in outcome["failures"][0]["reason"]
    assert "not an audio or video file" in outcome["failures"][0]["reason"]
    for item, child in zip(outcome["items"], children, strict=True):
        if child.state == "succeeded":
            video = video_for_job(child.id)
            assert video is not None and item["video_id"] == video["id"]
            assert word_recall(sentence, " ".join(s["text"] for s in video["segments"])) >= 0.7


def test_the_demo_transcribes_the_clip_the_repository_ships(worker: object, sentence: str) -> None:
    # Given the shipped clip
    from pipelines.media import SAMPLE_CLIP, demo, video_for_job

    assert SAMPLE_CLIP.stat().st_size < 300_000
    # When the media demo runs
    (run,) = demo()
    run.wait(120)
    # Then the clip's sentence is heard, with word timestamps
    video = video_for_job(run.id)
    assert video is not None
    assert word_recall(sentence, " ".join(s["text"] for s in video["segments"])) >= 0.7
    assert all(s["words"] for s in video["segments"])


def test_the_cli_transcribe_command_waits_and_prints_the_transcript(
    worker: object, capsys: pytest.CaptureFixture[str], sentence: str
) -> None:
    # Given the operator's cli with the media commands
    import cli

    # When the shipped clip is transcribed from the command line
    status = cli.main(["transcribe", "sample", "--wait", "--timeout", "120"])
    # Then it exits 0 and prints timed lines holding the sentence
    out = capsys.readouterr().out
    assert status == 0
    assert "transcript from whisper" in out
    assert word_recall(sentence, out) >= 0.7
