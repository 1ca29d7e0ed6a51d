"""The documents pipeline through a real worker on real Redis: statuses, OCR, images, search, reprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from documents_support import fresh_dir, jobs_of_run, relative, wait_for_document, wait_for_job

from samples.documents.make_samples import (
    PdfPage,
    docx_document,
    gradient_image,
    pdf_bytes,
    scanned_pdf,
    text_pdf,
)
from storage import documents as store

pytestmark = pytest.mark.timeout(300)

GARDEN = (
    "Tomatoes need full sun and regular watering. Stake the plants early so the stems do not break "
    "under the weight of the fruit, and pinch out the side shoots every week."
)
ENGINE = (
    "The diesel engine must be serviced every five hundred hours: change the oil filter, check the "
    "injectors and bleed the fuel system before restarting the generator."
)
LIGHTHOUSE = (
    "The lighthouse keeper climbs the spiral staircase at dusk to light the lamp, winds the clockwork "
    "that turns the lens, and logs every passing ship in the watch book."
)
SCANNED = (
    "The library will close early on Thursday for the annual book sale. Volunteers should arrive at "
    "noon to set up the tables in the main reading room."
)


def test_a_document_moves_pending_extracting_extracted_indexed_step_by_step(worker: Any, storage_root: Path) -> None:
    # Given a registered two-page PDF, not yet started
    from actors.documents import chunk_document, embed_document, extract_document, ocr_document

    folder = fresh_dir(storage_root)
    (folder / "garden.pdf").write_bytes(text_pdf([[GARDEN], [ENGINE]]))
    document_id = store.create_document(relative(folder / "garden.pdf", storage_root))
    seen = [store.get_document(document_id).status]  # type: ignore[union-attr]

    # When each step is sent on its own and the worker runs it
    for actor in (extract_document, ocr_document, chunk_document, embed_document):
        message = actor.send(document_id)
        finished = wait_for_job(message.message_id)
        assert finished.state == "succeeded", finished.error_message
        seen.append(store.get_document(document_id).status)  # type: ignore[union-attr]

    # Then the status went pending → extracting → extracted → extracted → indexed
    assert seen == ["pending", "extracting", "extracted", "extracted", "indexed"]
    document = store.get_document(document_id)
    assert document is not None
    assert (document.kind, document.page_count, document.pages_ocr) == ("pdf", 2, 0)
    assert document.chunk_count == 2 and document.indexed_at is not None  # one chunk per short page


def test_a_text_pdf_is_indexed_by_the_whole_pipeline_with_progress_per_page(worker: Any, storage_root: Path) -> None:
    # Given a three-page PDF under the storage root
    from pipelines import Run
    from pipelines.documents import document_status, ingest_document

    folder = fresh_dir(storage_root)
    (folder / "manual.pdf").write_bytes(text_pdf([[GARDEN], [ENGINE], [GARDEN]]))

    # When it is ingested and its run waited for
    run = ingest_document(relative(folder / "manual.pdf", storage_root))
    status = run.wait(120)

    # Then the wait returned the document's status: indexed with its pages, chunks and embeddings
    assert isinstance(run, Run) and run.result() == document_status(run.document_id)
    document_id = run.document_id
    assert status["status"] == "indexed", status
    assert status["id"] == document_id and status["message_id"] == run.id
    assert status["page_count"] == 3 and status["failed_step"] is None
    pages = store.pages_of(document_id)
    assert [" ".join(page.text.split()) for page in pages] == [GARDEN, ENGINE, GARDEN]
    chunks = store.chunks_of(document_id)
    assert len(chunks) == status["chunk_count"] >= 1
    assert {chunk.page for _, chunk in chunks} <= {1, 2, 3}

    # And the four jobs of the run succeeded, the extract job reporting its pages
    jobs = wait_for_jobs(run.id, 4)
    assert {name: row.state for name, row in jobs.items()} == {
        "extract_document": "succeeded",
        "ocr_document": "succeeded",
        "chunk_document": "succeeded",
        "embed_document": "succeeded",
    }
    assert jobs["extract_document"].progress_note == "page 3 of 3"
    assert (run.status().state, run.status().children) == ("succeeded", {"succeeded": 3})
    assert '"pages": 3' in (jobs["extract_document"].result or "")


def wait_for_jobs(run_id: str, count: int) -> dict[str, Any]:
    from tests.support import wait_until

    def all_finished() -> dict[str, Any] | None:
        jobs = jobs_of_run(run_id)
        done = len(jobs) == count and all(row.finished_at is not None for row in jobs.values())
        return jobs if done else None

    return wait_until(all_finished, timeout=60)


def test_a_scanned_page_is_read_by_ocr_and_counted(worker: Any, storage_root: Path) -> None:
    # Given a PDF whose only page is a picture of a paragraph
    from pipelines.documents import ingest_document

    folder = fresh_dir(storage_root)
    (folder / "notice.pdf").write_bytes(scanned_pdf([SCANNED], dpi=300))

    # When it is ingested
    document_id = ingest_document(relative(folder / "notice.pdf", storage_root)).document_id
    status = wait_for_document(document_id)

    # Then its page was OCR'd, recorded as such, and the OCR job reported the page for the metric
    assert status["status"] == "indexed", status
    assert status["pages_ocr"] == 1
    [page] = store.pages_of(document_id)
    assert page.ocr and page.needs_ocr
    assert "book sale" in page.text.lower()
    ocr_job = wait_for_jobs(status["message_id"], 4)["ocr_document"]
    assert '"pages_ocr": 1' in (ocr_job.result or "")


def test_embedded_images_are_saved_under_the_storage_root_and_tiny_ones_skipped(
    worker: Any, storage_root: Path
) -> None:
    # Given a PDF page with two large pictures and one tiny one
    from pipelines.documents import ingest_document

    folder = fresh_dir(storage_root)
    page = PdfPage(
        lines=["A report page with two charts and a small bullet icon."],
        images=[
            gradient_image(300, 200, y=400),
            gradient_image(200, 120, y=150),
            gradient_image(16, 16, y=60),
        ],
    )
    (folder / "charts.pdf").write_bytes(pdf_bytes([page]))

    # When it is ingested
    document_id = ingest_document(relative(folder / "charts.pdf", storage_root)).document_id
    status = wait_for_document(document_id)

    # Then two image rows point at files under the storage root
    assert status["status"] == "indexed", status
    images = store.images_of(document_id)
    assert sorted((image.width, image.height) for image in images) == [(200, 120), (300, 200)]
    assert all((storage_root / image.path).is_file() for image in images)
    assert status["image_count"] == 2


def test_search_ranks_the_matching_document_and_page_first(worker: Any, storage_root: Path) -> None:
    # Given a two-page PDF (garden, lighthouse), a DOCX with a table and a Latin-1 text file, all indexed
    from pipelines.documents import ingest_document, search

    folder = fresh_dir(storage_root)
    (folder / "mixed.pdf").write_bytes(text_pdf([[GARDEN], [LIGHTHOUSE]]))
    (folder / "rota.docx").write_bytes(
        docx_document(
            ["Weekend rota for the hospital pharmacy."],
            [["Day", "Pharmacist"], ["Saturday", "Amélie"], ["Sunday", "Jonas"]],
        )
    )
    (folder / "recette.txt").write_bytes(
        "Recette de la crème brûlée : chauffer la crème, ajouter le sucre et les jaunes d'oeufs.".encode("latin-1")
    )
    names = ("mixed.pdf", "rota.docx", "recette.txt")
    ids = [ingest_document(relative(folder / name, storage_root)).document_id for name in names]
    statuses = [wait_for_document(document_id) for document_id in ids]
    assert [s["status"] for s in statuses] == ["indexed"] * 3, statuses
    recipe = store.get_document(ids[2])
    assert recipe is not None and recipe.encoding in ("cp1252", "latin-1")

    # When searching for the lighthouse, the pharmacy rota and the dessert
    lighthouse = search("who lights the lamp of the lighthouse at night?", k=3)
    rota = search("who is the pharmacist on duty on Sunday?", k=3)
    dessert = search("crème brûlée recipe", k=3)

    # Then the best hit is the right document (and page), with scores in descending order
    assert (lighthouse[0].document_id, lighthouse[0].page) == (ids[0], 2), lighthouse
    assert rota[0].document_id == ids[1] and "Sunday | Jonas" in rota[0].text
    assert dessert[0].document_id == ids[2] and "crème brûlée" in dessert[0].text
    for results in (lighthouse, rota, dessert):
        scores = [result.score for result in results]
        assert scores == sorted(scores, reverse=True)
        assert -1.0 <= scores[-1] <= scores[0] <= 1.0


def test_reprocess_reads_the_document_again_from_scratch(worker: Any, storage_root: Path) -> None:
    # Given an indexed text file
    from pipelines.documents import ingest_document, reprocess

    folder = fresh_dir(storage_root)
    path = folder / "policy.md"
    path.write_text("# Policy\n\n" + GARDEN, encoding="utf-8")
    document_id = ingest_document(relative(path, storage_root)).document_id
    first = wait_for_document(document_id)
    assert first["status"] == "indexed"

    # When the file changes and the document is reprocessed
    path.write_text("# Policy\n\n" + ENGINE, encoding="utf-8")
    run = reprocess(document_id)
    second = run.wait(120)

    # Then the new run indexed the new text and replaced the old chunks
    assert run.document_id == document_id
    assert second["status"] == "indexed" and second["message_id"] == run.id != first["message_id"]
    assert store.pages_of(document_id)[0].text == "# Policy\n\n" + ENGINE
    new_chunks = store.chunks_of(document_id)
    assert len(new_chunks) == 1 and "diesel engine" in new_chunks[0][1].text
    assert not any("Tomatoes" in chunk.text for _, chunk in new_chunks)


def test_a_failed_document_indexes_after_its_file_is_fixed_and_it_is_reprocessed(
    worker: Any, storage_root: Path
) -> None:
    # Given a document that failed because its file was empty
    from pipelines.documents import ingest_document, reprocess

    folder = fresh_dir(storage_root)
    path = folder / "late.txt"
    path.write_bytes(b"")
    document_id = ingest_document(relative(path, storage_root)).document_id
    assert wait_for_document(document_id)["status"] == "failed"

    # When the file gets its content and the document is reprocessed
    path.write_text(ENGINE, encoding="utf-8")
    status = reprocess(document_id).wait(120)

    # Then it is indexed and the earlier failure is gone
    assert status["status"] == "indexed"
    assert status["failed_step"] is None and status["error"] is None


def test_a_step_that_runs_out_of_time_and_retries_marks_the_document_failed(worker: Any, storage_root: Path) -> None:
    # Given an extracted scanned document whose OCR step may run 50 ms and is not retried
    from actors.documents import extract_document, ocr_document

    folder = fresh_dir(storage_root)
    (folder / "slow.pdf").write_bytes(scanned_pdf([SCANNED, SCANNED], dpi=300))
    document_id = store.create_document(relative(folder / "slow.pdf", storage_root))
    assert wait_for_job(extract_document.send(document_id).message_id).state == "succeeded"

    # When the OCR step is sent with that limit
    message = ocr_document.send_with_options(args=(document_id,), soft_time_limit=50, max_retries=0)
    finished = wait_for_job(message.message_id)

    # Then the job is dead and the failure callback marked the document failed at the OCR step
    assert finished.state == "dead"
    status = wait_for_document(document_id)
    assert (status["status"], status["failed_step"]) == ("failed", "ocr")
    assert "SoftTimeLimitExceeded" in status["error"] and "every retry failed" in status["error"]
    # Nothing half-written: the OCR text of the first page was not stored
    assert not any(page.ocr for page in store.pages_of(document_id))


def test_cli_search_prints_the_best_chunks(worker: Any, storage_root: Path, capsys: Any) -> None:
    # Given an indexed document and the cli's parser with the documents subcommands
    import argparse

    from cli.documents import register_cli
    from pipelines.documents import ingest_document

    folder = fresh_dir(storage_root)
    (folder / "engine.txt").write_text(ENGINE, encoding="utf-8")
    document_id = ingest_document(relative(folder / "engine.txt", storage_root)).document_id
    assert wait_for_document(document_id)["status"] == "indexed"
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())

    # When `search` runs
    args = parser.parse_args(["search", "servicing the diesel generator", "-k", "50"])
    code = args.handler(args)

    # Then it prints ranked hits naming the document and page
    output = capsys.readouterr().out
    assert code == 0
    assert f"engine.txt page 1  (document {document_id})" in output
    assert output.startswith("1. ")


def test_the_demo_indexes_the_shipped_samples_and_ends_with_a_search(worker: Any, storage_root: Path) -> None:
    # When the demo runs
    from pipelines.documents import DEMO_QUERY, DocumentRun, demo, search

    *documents, searched = demo()

    # Then its last run searched the indexed samples, best hit first
    assert len(documents) == 3 and all(isinstance(run, DocumentRun) for run in documents)
    hits = searched.wait(120)
    assert hits["query"] == DEMO_QUERY, hits
    assert hits["hits"][0].startswith("strategy-notes.pdf page 1"), hits

    # And every sample is indexed, the scanned memo through OCR, each run with its three later steps
    statuses = [run.wait(120) for run in documents]
    assert [s["status"] for s in statuses] == ["indexed"] * 3, statuses
    assert [run.status().children for run in documents] == [{"succeeded": 3}] * 3
    assert [s["pages_ocr"] for s in statuses if s] == [0, 1, 0]
    assert search("warehouse inventory count", k=1)[0].path.endswith("scanned-memo.pdf")
    assert search("who confirms the packaging delivery?", k=1)[0].path.endswith("meeting-minutes.docx")


def test_a_step_of_an_earlier_run_does_nothing_once_the_document_was_reprocessed(
    worker: Any, storage_root: Path
) -> None:
    # Given a document whose latest run is "run-2"
    from actors.documents import extract_document

    folder = fresh_dir(storage_root)
    (folder / "notes.txt").write_text(GARDEN, encoding="utf-8")
    document_id = store.create_document(relative(folder / "notes.txt", storage_root))
    store.restart(document_id, "run-2")

    # When a step of the earlier run "run-1" reaches the worker
    message = extract_document.send_with_options(args=(document_id,), parent_id="run-1")
    finished = wait_for_job(message.message_id)

    # Then it succeeds without touching the document
    assert finished.state == "succeeded"
    assert '"superseded": true' in (finished.result or "")
    document = store.get_document(document_id)
    assert document is not None and document.status == "pending" and document.page_count == 0
    assert store.pages_of(document_id) == []
