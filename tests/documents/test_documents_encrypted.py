"""Encrypted PDFs (RC4, AES-128, AES-256): opened with their password, refused at once without it or
with a wrong one, and the password is in no log line and no job row. A missing dependency is never
retried."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from documents_support import fresh_dir, jobs_of_run, relative, wait_for_document
from pypdf import PdfWriter
from scans import PARAGRAPHS, scan, scanned_jpeg_pdf, word_recall

from processing.errors import MissingDependency, PermanentError, is_permanent
from processing.pdf import EncryptedPdf, WrongPassword, extract_pdf, ocr_pages
from samples.documents.make_samples import text_pdf
from storage import documents as store
from tests.support import wait_until

pytestmark = pytest.mark.timeout(600)

TEXT = "The vault inventory lists four hundred silver coins and a brass telescope from the old harbour."
PASSWORD = "c0rrect-h0rse-battery"
ALGORITHMS = ["RC4-128", "AES-128", "AES-256"]


def encrypt(data: bytes, algorithm: str, password: str = PASSWORD) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password=password, owner_password="owner-only", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_encrypted_pdf_opens_with_its_password_and_is_refused_without_it(tmp_path: Path, algorithm: str) -> None:
    # Given a text PDF encrypted with the algorithm
    path = tmp_path / "locked.pdf"
    path.write_bytes(encrypt(text_pdf([[TEXT]]), algorithm))

    # When it is read with its password, without one and with a wrong one
    content = extract_pdf(path, max_pages=10, password=PASSWORD)
    with pytest.raises(EncryptedPdf, match=r"locked\.pdf is encrypted and needs a password") as missing:
        extract_pdf(path, max_pages=10)
    with pytest.raises(WrongPassword, match=r"locked\.pdf is encrypted and the password given for it is wrong"):
        extract_pdf(path, max_pages=10, password="not-it")

    # Then the password gives the text, and the refusals are permanent errors
    assert " ".join(content.pages[0].text.split()) == TEXT
    assert isinstance(missing.value, PermanentError)


def test_an_encrypted_scan_is_read_by_ocr_with_its_password(tmp_path: Path) -> None:
    # Given a scanned page in an AES-256 PDF
    path = tmp_path / "scan.pdf"
    path.write_bytes(encrypt(scanned_jpeg_pdf([scan(PARAGRAPHS[0], angle=1.0)]), "AES-256"))

    # When its page is read by OCR with the password
    texts = ocr_pages(path, [1], password=PASSWORD)

    # Then the words are there
    assert word_recall(PARAGRAPHS[0], texts[1]) >= 0.9


def test_a_cipher_the_installation_cannot_read_is_an_installation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an AES PDF, and pypdf finding no crypto module (as without the ``cryptography`` package)
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    path = tmp_path / "aes.pdf"
    path.write_bytes(encrypt(text_pdf([[TEXT]]), "AES-128"))

    def no_crypto(self: Any, password: str) -> Any:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PdfReader, "decrypt", no_crypto)

    # When it is read
    with pytest.raises(MissingDependency) as error:
        extract_pdf(path, max_pages=10, password=PASSWORD)

    # Then the error says it is encrypted and what is missing, and it is permanent
    assert "aes.pdf is encrypted" in str(error.value) and "cryptography" in str(error.value)
    assert is_permanent(error.value)


def test_a_missing_module_is_permanent_and_other_errors_are_not() -> None:
    # Given an ImportError, a ModuleNotFoundError and a connection error
    # When / Then only the first two are classified permanent (never retried)
    assert is_permanent(ImportError("no module named 'cryptography'"))
    assert is_permanent(ModuleNotFoundError("no module named 'av'"))
    assert not is_permanent(ConnectionError("redis went away"))


def test_a_missing_module_in_a_job_fails_it_on_the_first_attempt(worker: Any) -> None:
    # Given a job whose actor imports a module that is not installed
    import actors_needing_a_module

    from tests.support import wait_for_job

    # When the worker runs it
    job = wait_for_job(actors_needing_a_module.needs_a_missing_module.send().message_id)

    # Then it failed once, never retried
    assert (job.state, job.attempts) == ("failed", 1), job
    assert "taskforge_module_that_is_not_installed" in (job.error_message or "")


def _finished_jobs(run_id: str) -> dict[str, Any] | None:
    jobs = jobs_of_run(run_id)
    return jobs if jobs and all(row.finished_at is not None for row in jobs.values()) else None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_worker_indexes_an_encrypted_pdf_given_its_password_and_never_shows_it(
    worker: Any, storage_root: Path, algorithm: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an encrypted PDF with a text page and a scanned page, under the storage root
    from pypdf import PdfReader

    from pipelines.documents import ingest_document, search

    folder = fresh_dir(storage_root)
    merged = PdfWriter()
    for part in (text_pdf([[TEXT]]), scanned_jpeg_pdf([scan(PARAGRAPHS[1], angle=-1.5)])):
        merged.append(PdfReader(io.BytesIO(part)))
    plain = io.BytesIO()
    merged.write(plain)
    (folder / "vault.pdf").write_bytes(encrypt(plain.getvalue(), algorithm))
    caplog.set_level(logging.DEBUG)

    # When it is ingested with its password
    document_id = ingest_document(relative(folder / "vault.pdf", storage_root), password=PASSWORD).document_id
    status = wait_for_document(document_id, timeout=300)

    # Then both pages are read (the second by OCR) and it is searchable
    assert status["status"] == "indexed", status
    pages = store.pages_of(document_id)
    assert " ".join(pages[0].text.split()) == TEXT
    assert pages[1].ocr and word_recall(PARAGRAPHS[1], pages[1].text) >= 0.9
    assert any(hit.document_id == document_id for hit in search("silver coins and a telescope", k=5))

    # And the password is in no job row and no log line, and no longer kept once the file was read
    jobs = wait_until(lambda: _finished_jobs(status["message_id"]), timeout=60)
    assert len(jobs) == 4
    assert all(PASSWORD not in (row.args or "") for row in jobs.values())
    assert PASSWORD not in caplog.text
    from actors.documents import _password

    assert _password(document_id) is None


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        (None, r"vault\.pdf is encrypted and needs a password"),
        ("wrong-password", r"vault\.pdf is encrypted and the password given for it is wrong"),
    ],
    ids=["no password", "wrong password"],
)
def test_a_worker_fails_an_encrypted_pdf_at_once_without_its_right_password(
    worker: Any, storage_root: Path, password: str | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an AES-256 PDF under the storage root
    import re

    from pipelines.documents import ingest_document

    folder = fresh_dir(storage_root)
    (folder / "vault.pdf").write_bytes(encrypt(text_pdf([[TEXT]]), "AES-256"))
    caplog.set_level(logging.DEBUG)

    # When it is ingested without its password, or with a wrong one
    document_id = ingest_document(relative(folder / "vault.pdf", storage_root), password=password).document_id
    status = wait_for_document(document_id)

    # Then the extract step failed on its first attempt, saying why, and later steps never ran
    assert status["status"] == "failed" and status["failed_step"] == "extract"
    assert re.search(reason, status["error"] or ""), status["error"]
    jobs = wait_until(lambda: _finished_jobs(status["message_id"]), timeout=60)
    assert list(jobs) == ["extract_document"]
    assert (jobs["extract_document"].state, jobs["extract_document"].attempts) == ("failed", 1)

    # And a wrong password shows in no job row and no log line
    if password is not None:
        from middleware.job_status import flush
        from storage.jobs import list_jobs

        flush()
        assert all(password not in (row.args or "") for row in list_jobs(limit=500))
        assert password not in caplog.text


def test_the_cli_passes_a_password_to_the_ingest(worker: Any, storage_root: Path) -> None:
    # Given an RC4 PDF under the storage root
    import subprocess
    import sys

    folder = fresh_dir(storage_root)
    (folder / "cli.pdf").write_bytes(encrypt(text_pdf([[TEXT]]), "RC4-128"))

    # When the cli ingests it with --password and waits
    path = relative(folder / "cli.pdf", storage_root)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "ingest-document", path, "--password", PASSWORD, "--wait", "--timeout", "240"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    # Then it is indexed
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"status": "indexed"' in done.stdout
