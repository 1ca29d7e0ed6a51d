"""Documents for application code and the ``cli``: ingest, reprocess, follow, search.

``ingest_document(path)`` registers a document and starts extract → OCR → chunk → embed; it returns the
run's handle at once, a ``DocumentRun`` whose ``document_id`` names the document and whose ``wait()``
returns ``document_status(id)`` once it is indexed (``RunFailed`` with the failing step's error when it
failed). The run's id is its first message (``documents.message_id``); every job of a run carries it as
its ``parent_id``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.runs import Run
from processing.errors import NotFound
from settings import PROJECT_ROOT, settings

#: The documents the repository ships, and where the demo puts them (paths must lie under the root).
SAMPLES_DIR = PROJECT_ROOT / "samples" / "documents"
SAMPLE_FILES = ("strategy-notes.pdf", "scanned-memo.pdf", "meeting-minutes.docx")
DEMO_DIR = Path("samples") / "documents"
DEMO_QUERY = "when does the moving average signal an uptrend?"


#: What ``document_status`` reports.
STATUS_FIELDS = (
    *("id", "path", "kind", "status", "step", "failed_step", "error"),
    *("page_count", "pages_ocr", "image_count", "chunk_count"),
    *("message_id", "created_at", "updated_at", "indexed_at"),
)


@dataclass(frozen=True)
class Page:
    """One page of a document: ``number`` from 1; ``ocr`` when its text was read from the page image."""

    number: int
    text: str
    ocr: bool


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document's text (about 4,000 characters, 400 shared with the one before).

    ``position`` is its order from 0, ``page`` the page it starts on, ``char_start``/``char_end`` its
    offsets (characters) in the pages' text joined by blank lines; ``id`` is what search results name.
    """

    id: int
    position: int
    page: int
    char_start: int
    char_end: int
    text: str


@dataclass(frozen=True)
class SearchResult:
    document_id: int
    path: str
    page: int
    score: float  # cosine similarity, -1 to 1
    text: str
    chunk_id: int


class DocumentRun(Run):
    """The handle of one run of a document: ``document_id`` is the document; ``result()`` and ``wait()``
    give its ``document_status`` once it is ``indexed`` and raise ``RunFailed`` once it is ``failed``."""

    def __init__(self, id: str, document_id: int) -> None:
        super().__init__(id, result=self._indexed, settled=self._ended)
        self.document_id = int(document_id)

    def __repr__(self) -> str:
        return f"DocumentRun({self.id!r}, document_id={self.document_id})"

    def _ended(self) -> bool:
        status = document_status(self.document_id)
        return status is None or status["status"] in ("indexed", "failed")

    def _indexed(self) -> dict[str, Any] | None:
        status = document_status(self.document_id)
        if status is not None and status["status"] == "failed":
            raise self.failed_in_domain(f"{status['failed_step']} step: {status['error']}")
        return status


def _run_messages(document_id: int) -> list[Any]:
    """The four messages of one run of a document; each carries the first one's id as ``parent_id``."""
    from actors.documents import chunk_document, embed_document, extract_document, ocr_document

    first = extract_document.message_with_options(args=(document_id,), pipe_ignore=True)
    run = first.message_id
    first = first.copy(options={**first.options, "parent_id": run})
    rest = [
        actor.message_with_options(args=(document_id,), pipe_ignore=True, parent_id=run)
        for actor in (ocr_document, chunk_document, embed_document)
    ]
    return [first, *rest]


def _start_run(document_id: int, password: str | None = None) -> DocumentRun:
    """Reset the document and send its pipeline; returns the run's handle."""
    from dramatiq import pipeline

    from actors.documents import remember_password
    from storage.documents import restart

    messages = _run_messages(document_id)
    restart(document_id, messages[0].message_id)
    remember_password(document_id, password)
    pipeline(messages).run()
    return DocumentRun(str(messages[0].message_id), document_id)


def ingest_document(path: str | Path, *, password: str | None = None) -> DocumentRun:
    """Register the document at ``path`` (under the storage root) and start indexing it.

    ``password`` opens an encrypted PDF (RC4, AES-128 or AES-256); it is handed to the run's steps
    outside their messages, so it is in no log line and no job row. Without it an encrypted PDF fails
    at once saying it needs one; a wrong one fails saying so.

    Returns the run's handle at once (``.document_id``, ``.wait(timeout)``); nothing is checked here, so
    a bad path or file ends the run ``failed`` with the reason, like any other bad input.
    """
    from storage.db import migrate
    from storage.documents import create_document

    migrate()
    return _start_run(create_document(str(path)), password)


def reprocess(document_id: int, *, password: str | None = None) -> DocumentRun:
    """Read the document again from scratch (pages, images, OCR, chunks, embeddings); an encrypted PDF
    needs its ``password`` again.

    Returns the new run's handle.
    """
    from processing.errors import NotFound
    from storage.documents import get_document

    if get_document(document_id) is None:
        raise NotFound(f"document {document_id} does not exist")
    return _start_run(document_id, password)


def document_status(document_id: int) -> dict[str, Any] | None:
    """Status, failing step and reason, and counts of one document; ``None`` when there is none."""
    from storage.documents import get_document

    document = get_document(document_id)
    if document is None:
        return None
    return {name: getattr(document, name) for name in STATUS_FIELDS}


def _known_document(document_id: int) -> None:
    from storage.documents import get_document

    if get_document(document_id) is None:
        raise NotFound(f"document {document_id} does not exist")


def document_pages(document_id: int) -> list[Page]:
    """The document's pages in order (empty until its text is extracted); ``NotFound`` for no document."""
    from storage.documents import pages_of

    _known_document(document_id)
    return [Page(page.number, page.text, page.ocr) for page in pages_of(document_id)]


def document_chunks(document_id: int) -> list[Chunk]:
    """The document's chunks in order (empty until it is chunked); ``NotFound`` for no document."""
    from storage.documents import chunks_of

    _known_document(document_id)
    return [Chunk(id, c.position, c.page, c.char_start, c.char_end, c.text) for id, c in chunks_of(document_id)]


def document_for_run(message_id: str) -> dict[str, Any] | None:
    """The status of the document whose latest run started with ``message_id``."""
    from storage.documents import document_id_for_run

    document_id = document_id_for_run(message_id)
    return None if document_id is None else document_status(document_id)


def search(query: str, k: int = 5) -> list[SearchResult]:
    """The ``k`` chunks of indexed documents most similar to ``query``, best first."""
    from processing.embeddings import embed_array
    from storage.db import migrate
    from storage.documents import search_chunks

    migrate()
    vector = embed_array([query], model_name=settings.embedding_model, batch_size=1)[0]
    hits = search_chunks(vector, model=settings.embedding_model, k=k)
    return [SearchResult(h.document_id, h.path, h.page, h.score, h.text, h.chunk_id) for h in hits]


def stage_samples() -> list[str]:
    """Copy the shipped sample documents under the storage root; their paths relative to the root."""
    target = settings.storage_root / DEMO_DIR
    target.mkdir(parents=True, exist_ok=True)
    staged = []
    for name in SAMPLE_FILES:
        shutil.copyfile(SAMPLES_DIR / name, target / name)
        staged.append(str(DEMO_DIR / name))
    return staged


def demo() -> list[Run]:
    """Index the shipped samples one after the other, then search them (``make demo``).

    One pipeline runs the four steps of each sample and ends with a ``search_documents`` job for
    ``DEMO_QUERY``, whose result lists the best hits. Returns each sample's run, then the search's.
    """
    from dramatiq import pipeline

    from actors.documents import search_documents
    from storage.db import migrate
    from storage.documents import create_document, restart

    migrate()
    messages = []
    runs: list[Run] = []
    for path in stage_samples():
        document_id = create_document(path)
        run = _run_messages(document_id)
        restart(document_id, run[0].message_id)
        messages += run
        runs.append(DocumentRun(run[0].message_id, document_id))
    messages.append(search_documents.message_with_options(args=(DEMO_QUERY, 3), pipe_ignore=True))
    pipeline(messages).run()
    return [*runs, Run(messages[-1].message_id)]


def wait_for_document(document_id: int, timeout: float) -> dict[str, Any] | None:
    """Poll until the document is ``indexed`` or ``failed`` (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while True:
        status = document_status(document_id)
        if status is None or status["status"] in ("indexed", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.25)
