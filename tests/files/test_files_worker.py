"""The file drive's run through a real worker on real Redis: statuses, type detection, failures, reprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from samples.documents.make_samples import text_pdf
from tests.files.made_files import bomb_png
from tests.support import wait_for_job, wait_until

pytestmark = pytest.mark.timeout(300)

NOTES = (
    "Tomatoes need full sun and regular watering. Stake the tomatoes early so the stems do not break "
    "under the weight of the fruit."
)


def _truncated_png() -> bytes:
    """A real 64×64 PNG cut in half: the header says PNG, the pixel data stops early."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((64, 64), 60).save(out, format="PNG")
    data = out.getvalue()
    return data[: len(data) // 2]


def _exif_rotated_jpeg() -> bytes:
    """A 400×200 JPEG whose EXIF orientation (6) says it is shown rotated: 200×400 on screen."""
    import io

    from PIL import Image

    image = Image.new("RGB", (400, 200), (200, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def _finished(file_id: int, timeout: float = 180.0) -> dict[str, Any]:
    from pipelines.files import file_status

    def done() -> dict[str, Any] | None:
        status = file_status(file_id)
        return status if status is not None and status["status"] in ("completed", "failed") else None

    return wait_until(done, timeout=timeout, interval=0.05)


def test_a_text_upload_is_completed_with_ai_metadata_from_the_offline_provider(worker: Any, storage_root: Path) -> None:
    # Given a text file uploaded as bytes
    from pipelines import Run
    from pipelines.files import file_status, upload_file

    run = upload_file(NOTES.encode(), "notes.txt", owner="alice")

    # When the worker runs its pipeline and the upload's run is waited for
    status = run.wait(180)

    # Then the wait returned the file's status: completed, under this run
    assert isinstance(run, Run) and status["id"] == run.file_id and status["message_id"] == run.id
    assert status["status"] == "completed", status
    assert run.result()["ai"] == file_status(run.file_id)["ai"]  # type: ignore[index]
    # typed from its content, with a name, summary and tags from the offline provider
    assert (status["kind"], status["mime_type"], status["type_mismatch"]) == ("text", "text/plain", None)
    assert status["ai"]["provider"] == "offline"
    assert status["ai"]["suggested_filename"].endswith(".txt")
    assert "tomatoes" in status["ai"]["tags"]
    assert status["ai"]["summary"].startswith("Tomatoes need full sun")


def test_the_same_content_twice_is_one_blob_and_two_records_unless_dedupe_is_asked(
    worker: Any, storage_root: Path
) -> None:
    # Given one content uploaded twice, then a third time with dedupe
    from pipelines.files import file_status, upload_file

    content = b"the same bytes, uploaded again " + NOTES.encode()
    runs = [upload_file(content, "a.txt", owner="bob"), upload_file(content, "b.txt", owner="bob")]
    third = upload_file(content, "c.txt", owner="bob", dedupe=True)
    first, second = (run.file_id for run in runs)

    # Then the first two are records of their own over one stored blob; dedupe returns the first's run
    one, two = file_status(first), file_status(second)
    assert one is not None and two is not None
    assert first != second and third.file_id == first and third.id == runs[0].id
    assert one["sha256"] == two["sha256"]
    blobs = list((storage_root / "files" / "blobs").rglob(str(one["sha256"])))
    assert len(blobs) == 1
    assert _finished(first)["status"] == "completed" and _finished(second)["status"] == "completed"


def test_a_pdf_named_txt_is_read_as_a_pdf_and_the_mismatch_is_recorded(worker: Any, storage_root: Path) -> None:
    # Given a PDF uploaded under a .txt name
    from pipelines.files import upload_file

    file_id = upload_file(text_pdf([[NOTES]]), "notes.txt").file_id

    # When it is analysed
    status = _finished(file_id)

    # Then the content decided: a PDF whose text was read, and the name's claim recorded as a mismatch
    assert status["status"] == "completed", status
    assert (status["kind"], status["mime_type"]) == ("pdf", "application/pdf")
    assert status["type_mismatch"] == "notes.txt is named like text but its content is application/pdf"
    # And its first page is the thumbnail: a portrait page fitted in the box
    assert status["thumbnail_path"] is not None and status["thumbnail_height"] == 256
    assert "tomatoes" in status["ai"]["tags"]


@pytest.mark.parametrize(
    ("content", "filename", "step", "reason"),
    [
        (b"", "empty.txt", "detect", "empty.txt is empty (0 bytes)"),
        (
            b"\x7fELF\x02\x01\x01" + bytes(200),
            "tool.bin",
            "text",
            "tool.bin: application/octet-stream files are not supported",
        ),
        (_truncated_png(), "broken.png", "thumbnail", "broken.png: the image is damaged or truncated"),
        (bomb_png(), "bomb.png", "thumbnail", "bomb.png: the image is 30000×30000"),
    ],
)
def test_bad_input_ends_failed_with_the_step_and_one_readable_line(
    worker: Any, storage_root: Path, content: bytes, filename: str, step: str, reason: str
) -> None:
    # Given an upload the run cannot read
    from pipelines import RunFailed
    from pipelines.files import upload_file

    run = upload_file(content, filename)

    # When it is analysed and its run waited for
    with pytest.raises(RunFailed) as failed:
        run.wait(180)
    status = _finished(run.file_id)

    # Then it is failed at the step that met it, with one line saying why, which the wait raised
    assert status["status"] == "failed", status
    assert status["failed_step"] == step
    assert status["error"].startswith(reason) and "\n" not in status["error"]
    assert "ai" not in status
    assert failed.value.state == "failed" and failed.value.error_message == status["error"]
    assert reason in str(failed.value) and "\n" not in str(failed.value)


def test_a_file_moves_pending_processing_completed_step_by_step_and_reprocess_starts_a_linked_run(
    worker: Any, storage_root: Path
) -> None:
    # Given a registered file whose run is sent one step at a time
    from actors.files import RUN_ACTORS
    from pipelines.files import file_status, reprocess
    from processing.files import store_blob
    from settings import settings
    from storage import files as store

    blob = store_blob(NOTES.encode(), root=settings.storage_root, max_bytes=settings.max_file_bytes)
    file_id = store.create_file(
        filename="steps.txt", owner="", sha256=blob.sha256, blob_path=blob.path, size_bytes=blob.size_bytes
    )
    seen = [file_status(file_id)["status"]]  # type: ignore[index]
    for actor in RUN_ACTORS:
        finished = wait_for_job(actor.send(file_id).message_id, timeout=120)
        assert finished.state == "succeeded", finished.error_message
        seen.append(file_status(file_id)["status"])  # type: ignore[index]

    # Then the status went pending → processing at each step → completed at the last
    assert seen == ["pending", *["processing"] * (len(RUN_ACTORS) - 1), "completed"]

    # When it is reprocessed
    run = reprocess(file_id)

    # Then it is pending again under the new run, which completes it once more
    assert run.file_id == file_id and file_status(file_id)["message_id"] == run.id  # type: ignore[index]
    status = run.wait(120)
    assert status["status"] == "completed" and status["message_id"] == run.id


def test_an_image_gets_an_upright_thumbnail_and_its_text_is_found_by_the_search(
    worker: Any, storage_root: Path
) -> None:
    # Given a photo whose EXIF says it is shown rotated, and a text upload
    from PIL import Image

    from pipelines.files import file_status, search_files, thumbnail_file, upload_file

    photo = upload_file(_exif_rotated_jpeg(), "photo.jpg", owner="carol").file_id
    orchard = (
        "Honeybees pollinate the apple orchard every spring. Keep the hives close to clean water and away "
        "from the pesticide spraying schedule of the neighbouring fields."
    )
    notes = upload_file(orchard.encode(), "orchard.txt", owner="carol").file_id

    # When both are analysed
    assert _finished(photo)["status"] == "completed", file_status(photo)
    assert _finished(notes)["status"] == "completed", file_status(notes)

    # Then the photo's thumbnail is upright (portrait), fits the box, and carries no orientation tag
    with Image.open(thumbnail_file(photo)) as thumbnail:
        assert thumbnail.size == (128, 256)
        assert 0x0112 not in thumbnail.getexif()
    status = file_status(photo)
    assert status is not None and (status["thumbnail_width"], status["thumbnail_height"]) == (128, 256)
    # And the text file has no thumbnail but is found by meaning, with its best chunk
    assert file_status(notes)["thumbnail_path"] is None  # type: ignore[index]
    hits = search_files("which insects pollinate fruit trees", k=3)
    assert hits and hits[0]["id"] == notes
    assert "Honeybees pollinate" in hits[0]["text"]


def test_a_bomb_fails_alone_and_the_worker_goes_on_with_the_next_file(worker: Any, storage_root: Path) -> None:
    # Given a decompression bomb uploaded between two ordinary files
    from pipelines.files import upload_file

    before = upload_file(NOTES.encode(), "before.txt").file_id
    bomb = upload_file(bomb_png(), "bomb.png").file_id
    after = upload_file(b"After the bomb: " + NOTES.encode(), "after.txt").file_id

    # When they are analysed
    statuses = [_finished(file_id) for file_id in (before, bomb, after)]

    # Then only the bomb failed, at the thumbnail, from its header, and the others completed
    assert [status["status"] for status in statuses] == ["completed", "failed", "completed"]
    assert statuses[1]["failed_step"] == "thumbnail"
    assert "30000×30000" in statuses[1]["error"] and "megapixel" in statuses[1]["error"]


def test_a_stuck_file_is_sent_again_then_failed_once_its_resends_are_spent(worker: Any, storage_root: Path) -> None:
    # Given a completed file whose row is then made to look stuck in a step for over its hard limit
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from actors.files import STUCK_RESENDS, reap_stuck_files
    from pipelines.files import file_status, upload_file
    from storage import files as store
    from storage.db import session_scope

    file_id = upload_file(NOTES.encode(), "stuck.txt").file_id
    assert _finished(file_id)["status"] == "completed"

    def make_stuck() -> None:
        store.update_file(file_id, status="processing", step="text")
        with session_scope() as session:
            session.execute(
                update(store.File)
                .where(store.File.id == file_id)
                .values(updated_at=datetime.now(UTC) - timedelta(hours=2))
            )

    # When the reaper runs while resends remain
    for resend in range(1, STUCK_RESENDS + 1):
        make_stuck()
        assert reap_stuck_files.fn() == {"resent": 1, "failed": 0}
        # Then the file is sent again from the start, the resend counted, and it completes
        status = _finished(file_id)
        assert status["status"] == "completed" and status["stuck_resends"] == resend

    # When it is stuck once more
    make_stuck()
    assert reap_stuck_files.fn() == {"resent": 0, "failed": 1}

    # Then it is failed at that step with the reason
    status = file_status(file_id)
    assert status is not None and status["status"] == "failed" and status["failed_step"] == "text"
    assert status["error"].startswith("stuck in step text for 120 min after 2 resends")


def test_the_daily_summary_and_the_quota_check_count_what_is_stored(
    worker: Any, storage_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two uploads of one content and one of another
    import dataclasses

    import actors.files
    from actors.files import check_storage_quota, send_files_daily_summary
    from pipelines.files import upload_file
    from settings import settings
    from storage.files import storage_used

    before = storage_used()["bytes"]
    uploads = [(b"x" * 1000, "a.txt"), (b"x" * 1000, "b.txt"), (b"y" * 500, "c.txt")]
    ids = [upload_file(content, name).file_id for content, name in uploads]
    assert [_finished(file_id)["status"] for file_id in ids] == ["completed"] * 3

    # Then storage counts each content once
    assert storage_used()["bytes"] - before == 1500

    # And the summary counts the day's uploads and their outcomes
    summary = send_files_daily_summary.fn()
    assert summary["uploads"] >= 3 and summary["completed"] >= 3
    assert summary["storage_bytes"] == storage_used()["bytes"]

    # And the quota check is quiet without a quota, and over the line when storage nears it
    assert check_storage_quota.fn()["over"] is False
    quota = dataclasses.replace(settings, storage_quota_bytes=storage_used()["bytes"] + 10)
    monkeypatch.setattr(actors.files, "settings", quota)
    report = check_storage_quota.fn()
    assert report["over"] is True and report["ratio"] >= quota.storage_quota_warn_ratio
