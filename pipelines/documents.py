"""Documents for application code and the ``cli``: ingest, reprocess, follow, search.

``ingest_document(path)`` registers a document and starts extract → OCR → chunk → embed; it returns the
document id at once. Follow ``document_status(id)`` (or the job table, with ``documents.message_id``,
the first message of the run); every job of a run carries it as its ``parent_id``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
class SearchResult:
    document_id: int
    path: str
    page: int
    score: float  # cosine similarity, -1 to 1
    text: str
    chunk_id: int


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


def _start_run(document_id: int) -> str:
    """Reset the document and send its pipeline; returns the run's first message id."""
    from dramatiq import pipeline

    from storage.documents import restart

    messages = _run_messages(document_id)
    restart(document_id, messages[0].message_id)
    pipeline(messages).run()
    return str(messages[0].message_id)


def ingest_document(path: str | Path) -> int:
    """Register the document at ``path`` (under the storage root) and start indexing it.

    Returns the document id at once; nothing is checked here, so a bad path or file ends the run
    ``failed`` with the reason, like any other bad input.
    """
    from storage.db import migrate
    from storage.documents import create_document

    migrate()
    document_id = create_document(str(path))
    _start_run(document_id)
    return document_id


def reprocess(document_id: int) -> str:
    """Read the document again from scratch (pages, images, OCR, chunks, embeddings).

    Returns the new run's first message id.
    """
    from processing.errors import NotFound
    from storage.documents import get_document

    if get_document(document_id) is None:
        raise NotFound(f"document {document_id} does not exist")
    return _start_run(document_id)


def document_status(document_id: int) -> dict[str, Any] | None:
    """Status, failing step and reason, and counts of one document; ``None`` when there is none."""
    from storage.documents import get_document

    document = get_document(document_id)
    if document is None:
        return None
    return {name: getattr(document, name) for name in STATUS_FIELDS}


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


def demo() -> list[str]:
    """Index the shipped samples one after the other, then search them (``make demo``).

    One pipeline runs the four steps of each sample and ends with a ``search_documents`` job for
    ``DEMO_QUERY``, whose result lists the best hits. Returns every message id of it, in order.
    """
    from dramatiq import pipeline

    from actors.documents import search_documents
    from storage.db import migrate
    from storage.documents import create_document, restart

    migrate()
    messages = []
    for path in stage_samples():
        document_id = create_document(path)
        run = _run_messages(document_id)
        restart(document_id, run[0].message_id)
        messages += run
    messages.append(search_documents.message_with_options(args=(DEMO_QUERY, 3), pipe_ignore=True))
    pipeline(messages).run()
    return [str(message.message_id) for message in messages]


# ----------------------------------------------------------------------------------------------------
# cli
# ----------------------------------------------------------------------------------------------------


def wait_for_document(document_id: int, timeout: float) -> dict[str, Any] | None:
    """Poll until the document is ``indexed`` or ``failed`` (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while True:
        status = document_status(document_id)
        if status is None or status["status"] in ("indexed", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.25)


def _print_hits(results: list[SearchResult], as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    for rank, result in enumerate(results, start=1):
        snippet = " ".join(result.text.split())[:160]
        print(f"{rank}. {result.score:.3f}  {result.path} page {result.page}  (document {result.document_id})")
        print(f"   {snippet}")


def _cmd_search(args: argparse.Namespace) -> int:
    results = search(args.query, k=args.k)
    if not results:
        print("no indexed documents match (is anything indexed yet?)", file=sys.stderr)
        return 1
    _print_hits(results, args.json)
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    document_id = ingest_document(args.path)
    if not args.wait:
        print(document_id)
        return 0
    status = wait_for_document(document_id, args.timeout)
    print(json.dumps(status, indent=2, default=str))
    return 0 if status is not None and status["status"] == "indexed" else 1


def _cmd_document(args: argparse.Namespace) -> int:
    from storage.db import migrate

    migrate()
    if args.reprocess:
        reprocess(args.document_id)
    status = document_status(args.document_id)
    if status is None:
        print(f"document {args.document_id} does not exist", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, default=str))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``search``, ``ingest-document`` and ``document`` subcommands to the operator's cli."""
    p = subparsers.add_parser("search", help="search indexed documents by meaning")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="how many chunks to show (default 5)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=_cmd_search)

    p = subparsers.add_parser("ingest-document", help="index a PDF, DOCX, text or Markdown file")
    p.add_argument("path", help="path under the storage root (STORAGE_ROOT)")
    p.add_argument("--wait", action="store_true", help="wait until it is indexed or failed")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait (default 1800)")
    p.set_defaults(handler=_cmd_ingest)

    p = subparsers.add_parser("document", help="show a document's status (or reprocess it)")
    p.add_argument("document_id", type=int)
    p.add_argument("--reprocess", action="store_true", help="read it again from scratch")
    p.set_defaults(handler=_cmd_document)
