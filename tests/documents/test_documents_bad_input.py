"""Every bad input of the issue, through a real worker: the run ends ``failed`` at the extract step with
a reason a person understands, nothing is half-written, and the worker lives on."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from documents_support import fresh_dir, jobs_of_run, relative, wait_for_document
from pypdf import PdfWriter

from samples.documents.make_samples import PdfPage, pdf_bytes, text_pdf
from storage import documents as store
from tests.support import wait_until

pytestmark = pytest.mark.timeout(300)

TEXT = "Quarterly report. Revenue grew in every region and costs stayed flat."


def truncated_pdf(folder: Path) -> Path | str:
    data = text_pdf([[TEXT], [TEXT]])
    (folder / "truncated.pdf").write_bytes(data[: len(data) * 2 // 3])
    return folder / "truncated.pdf"


def corrupt_pdf(folder: Path) -> Path | str:
    data = text_pdf([[TEXT]])
    (folder / "corrupt.pdf").write_bytes(data[:80] + b"\x00garbage\x00" * 20 + data[-40:])
    return folder / "corrupt.pdf"


def random_bytes_pdf(folder: Path) -> Path | str:
    (folder / "random.pdf").write_bytes(bytes((index * 2654435761) % 251 for index in range(8192)))
    return folder / "random.pdf"


def empty_pdf(folder: Path) -> Path | str:
    (folder / "empty.pdf").write_bytes(b"")
    return folder / "empty.pdf"


def encrypted_pdf(folder: Path) -> Path | str:
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf([[TEXT]])))
    writer.encrypt(user_password="open-sesame", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    (folder / "locked.pdf").write_bytes(out.getvalue())
    return folder / "locked.pdf"


def unsupported_extension(folder: Path) -> Path | str:
    (folder / "slides.pptx").write_bytes(b"PK\x03\x04 a presentation")
    return folder / "slides.pptx"


def over_size_cap(folder: Path) -> Path | str:
    # Sparse: 101 MiB on paper, no disk space used; the default cap is 100 MiB.
    with open(folder / "huge.pdf", "wb") as handle:
        handle.truncate(101 * 1024 * 1024)
    return folder / "huge.pdf"


def over_page_cap(folder: Path) -> Path | str:
    (folder / "long.pdf").write_bytes(pdf_bytes([PdfPage(lines=["page"])] * 2001, share_content=True))
    return folder / "long.pdf"


def outside_storage_root(folder: Path) -> str:
    # Relative to the storage root: two levels up, then into /etc.
    return "../../etc/passwd"


def zip_bomb_docx(folder: Path) -> Path | str:
    with zipfile.ZipFile(folder / "bomb.docx", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            for _ in range(64):
                member.write(b"<w:t>" + b"A" * (1024 * 1024) + b"</w:t>")
    return folder / "bomb.docx"


CASES: list[tuple[Callable[[Path], Path | str], str]] = [
    (truncated_pdf, r"truncated\.pdf is truncated or damaged"),
    (corrupt_pdf, r"corrupt\.pdf is damaged and cannot be read as a PDF"),
    (random_bytes_pdf, r"random\.pdf is not a PDF"),
    (empty_pdf, r"empty\.pdf is empty \(0 bytes\)"),
    (encrypted_pdf, r"locked\.pdf is encrypted and needs a password"),
    (unsupported_extension, r"slides\.pptx: files with \.pptx are not supported \(readable: "),
    (over_size_cap, r"huge\.pdf is 105\.9 MB, over the limit of 104\.9 MB"),
    (over_page_cap, r"long\.pdf has 2001 pages, over the limit of 2000 pages"),
    (outside_storage_root, r"path '.*\.\./\.\./etc/passwd' is outside the storage root"),
    (zip_bomb_docx, r"bomb\.docx contains 'word/document\.xml', compressed \d+ times .* zip bomb"),
]


@pytest.mark.parametrize(("make", "reason"), CASES, ids=[make.__name__ for make, _ in CASES])
def test_bad_input_ends_the_run_failed_with_a_readable_reason(
    worker: Any, storage_root: Path, make: Callable[[Path], Path | str], reason: str
) -> None:
    # Given a bad file under the storage root (or a path that leaves it)
    from actors.documents import image_dir
    from pipelines import RunFailed
    from pipelines.documents import document_status, ingest_document

    folder = fresh_dir(storage_root)
    target = make(folder)

    # When it is ingested and its run waited for
    run = ingest_document(as_given(target, storage_root))
    with pytest.raises(RunFailed) as failed:
        run.wait(120)

    # Then the wait raised the extract step's error, as one readable line
    document_id = run.document_id
    status = document_status(document_id)
    assert status is not None and status["message_id"] == run.id
    assert failed.value.state == "failed" and failed.value.error_message == status["error"]
    assert "\n" not in str(failed.value) and re.search(reason, str(failed.value)), str(failed.value)

    # And the document failed at the extract step with the reason
    assert status["status"] == "failed"
    assert status["failed_step"] == "extract"
    assert status["error"] and re.search(reason, status["error"]), status["error"]

    # And the extract job failed (not retried) with the same reason; later steps never ran
    jobs = wait_until(lambda: _finished_jobs(status["message_id"]), timeout=30)
    assert list(jobs) == ["extract_document"]
    assert jobs["extract_document"].state == "failed"
    assert jobs["extract_document"].attempts == 1
    assert jobs["extract_document"].error_message == status["error"]

    # And nothing is half-written
    assert store.pages_of(document_id) == [] and store.chunks_of(document_id) == []
    assert store.images_of(document_id) == []
    assert not image_dir(document_id).exists()


def as_given(target: Path | str, storage_root: Path) -> str:
    """A file made under the storage root as a path relative to it; a string path as it is."""
    return relative(target, storage_root) if isinstance(target, Path) else target


def _finished_jobs(run_id: str) -> dict[str, Any] | None:
    jobs = jobs_of_run(run_id)
    return jobs if jobs and all(row.finished_at is not None for row in jobs.values()) else None


def test_the_worker_keeps_indexing_after_every_kind_of_bad_input(worker: Any, storage_root: Path) -> None:
    # Given every bad input sent at once, then a good document
    from pipelines.documents import ingest_document

    folder = fresh_dir(storage_root)
    bad = [ingest_document(as_given(make(folder), storage_root)).document_id for make, _ in CASES]
    (folder / "good.txt").write_text(TEXT, encoding="utf-8")
    good = ingest_document(relative(folder / "good.txt", storage_root)).document_id

    # When the worker has worked through them
    bad_statuses = [wait_for_document(document_id) for document_id in bad]
    good_status = wait_for_document(good)

    # Then every bad one failed and the good one is indexed by the same worker
    assert [s["status"] for s in bad_statuses] == ["failed"] * len(CASES)
    assert good_status["status"] == "indexed"
    assert all(thread.is_alive() for thread in worker.workers)
