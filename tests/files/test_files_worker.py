"""The file drive's run through a real worker on real Redis: statuses, type detection, failures, reprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from samples.documents.make_samples import text_pdf
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


def _finished(file_id: int, timeout: float = 180.0) -> dict[str, Any]:
    from pipelines.files import file_status

    def done() -> dict[str, Any] | None:
        status = file_status(file_id)
        return status if status is not None and status["status"] in ("completed", "failed") else None

    return wait_until(done, timeout=timeout, interval=0.05)


def test_a_text_upload_is_completed_with_ai_metadata_from_the_offline_provider(worker: Any, storage_root: Path) -> None:
    # Given a text file uploaded as bytes
    from pipelines.files import upload_file

    file_id = upload_file(NOTES.encode(), "notes.txt", owner="alice")

    # When the worker runs its pipeline
    status = _finished(file_id)

    # Then it is completed, typed from its content, with a name, summary and tags from the offline provider
    assert status["status"] == "completed", status
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
    first = upload_file(content, "a.txt", owner="bob")
    second = upload_file(content, "b.txt", owner="bob")
    third = upload_file(content, "c.txt", owner="bob", dedupe=True)

    # Then the first two are records of their own over one stored blob; dedupe returns the first
    one, two = file_status(first), file_status(second)
    assert one is not None and two is not None
    assert first != second and third == first
    assert one["sha256"] == two["sha256"]
    blobs = list((storage_root / "files" / "blobs").rglob(str(one["sha256"])))
    assert len(blobs) == 1
    assert _finished(first)["status"] == "completed" and _finished(second)["status"] == "completed"


def test_a_pdf_named_txt_is_read_as_a_pdf_and_the_mismatch_is_recorded(worker: Any, storage_root: Path) -> None:
    # Given a PDF uploaded under a .txt name
    from pipelines.files import upload_file

    file_id = upload_file(text_pdf([[NOTES]]), "notes.txt")

    # When it is analysed
    status = _finished(file_id)

    # Then the content decided: a PDF whose text was read, and the name's claim recorded as a mismatch
    assert status["status"] == "completed", status
    assert (status["kind"], status["mime_type"]) == ("pdf", "application/pdf")
    assert status["type_mismatch"] == "notes.txt is named like text but its content is application/pdf"
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
        (_truncated_png(), "broken.png", "text", "broken.png is a damaged"),
    ],
)
def test_bad_input_ends_failed_with_the_step_and_one_readable_line(
    worker: Any, storage_root: Path, content: bytes, filename: str, step: str, reason: str
) -> None:
    # Given an upload the run cannot read
    from pipelines.files import upload_file

    file_id = upload_file(content, filename)

    # When it is analysed
    status = _finished(file_id)

    # Then it is failed at the step that met it, with one line saying why
    assert status["status"] == "failed", status
    assert status["failed_step"] == step
    assert status["error"].startswith(reason) and "\n" not in status["error"]
    assert "ai" not in status


def test_a_file_moves_pending_processing_completed_step_by_step_and_reprocess_starts_a_linked_run(
    worker: Any, storage_root: Path
) -> None:
    # Given a registered file whose run is sent one step at a time
    from actors.files import detect_file_type, extract_file_text, generate_file_metadata
    from pipelines.files import file_status, reprocess
    from processing.files import store_blob
    from settings import settings
    from storage import files as store

    blob = store_blob(NOTES.encode(), root=settings.storage_root, max_bytes=settings.max_file_bytes)
    file_id = store.create_file(
        filename="steps.txt", owner="", sha256=blob.sha256, blob_path=blob.path, size_bytes=blob.size_bytes
    )
    seen = [file_status(file_id)["status"]]  # type: ignore[index]
    for actor in (detect_file_type, extract_file_text, generate_file_metadata):
        finished = wait_for_job(actor.send(file_id).message_id, timeout=120)
        assert finished.state == "succeeded", finished.error_message
        seen.append(file_status(file_id)["status"])  # type: ignore[index]

    # Then the status went pending → processing → processing → completed
    assert seen == ["pending", "processing", "processing", "completed"]

    # When it is reprocessed
    run = reprocess(file_id)

    # Then it is pending again under the new run, which completes it once more
    assert file_status(file_id)["message_id"] == run  # type: ignore[index]
    status = _finished(file_id)
    assert status["status"] == "completed" and status["message_id"] == run
