"""Documents benchmark: the worker path against direct library calls, in the same run.

    python -m bench.documents [--text-pages 200] [--scanned-pages 20] [--chunks 256] [--vectors 100000]
    python -m bench.documents --search-only [--vectors 100000]

Measures, on files it makes itself:

- pages/s of a text PDF: the ``extract_document`` job through a real worker (``dramatiq actors -p 1
  -t 1 -Q documents``, a process of its own, on real Redis), against ``pypdf`` ``extract_text`` called
  page by page;
- pages/s of scanned pages: the extract + OCR jobs through the worker, against ``pdftoppm`` +
  ``pytesseract`` called page by page;
- chunks embedded/s: batched (``EMBEDDING_BATCH_SIZE``) against one chunk per call;
- search latency over ``--vectors`` window vectors (384 dimensions, four windows a chunk) stored in the
  database: ``search_chunks`` with its per-process matrix, against numpy brute force over the same vectors
  already in memory (the floor), and against reading every vector from SQL for each query (what search
  did before it kept a matrix). p50 and p95 over 200 queries (20 for the SQL read), milliseconds.

The worker figures are wall-clock from send to the job's end as the producer sees it, so they include
the queue, the job table and the document rows. Without ``VAR_DIR``/``STORAGE_ROOT``/``DATABASE_URL``
in the environment the run uses a temporary folder and SQLite; Redis comes from ``REDIS_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_TEMP = Path(tempfile.mkdtemp(prefix="bench-documents-"))
os.environ.setdefault("VAR_DIR", str(_TEMP / "var"))
os.environ.setdefault("STORAGE_ROOT", str(_TEMP / "storage"))

PARAGRAPH = (
    "Risk management starts before the trade: decide the position size from the distance to the stop "
    "loss, never from the conviction you feel. A fixed fraction of the account per trade keeps a losing "
    "streak survivable, and a written plan keeps the decisions the same on good days and bad ones."
)


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _wait_document(document_id: int, done: Callable[[Any], bool], timeout: float = 1800) -> None:
    from storage.documents import get_document

    deadline = time.monotonic() + timeout
    while True:
        document = get_document(document_id)
        if document is not None and document.status == "failed":
            raise RuntimeError(f"document {document_id} failed at {document.failed_step}: {document.error}")
        if document is not None and done(document):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"document {document_id} did not finish in {timeout} s")
        time.sleep(0.01)


@contextlib.contextmanager
def worker_process(log: Path) -> Iterator[None]:
    """``dramatiq actors -p 1 -t 1 -Q documents`` in a process of its own, stopped at the end."""
    with socket.socket() as probe:  # a free loopback port for the worker's metrics server
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    env = {**os.environ, "METRICS_PORT": str(metrics_port)}
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dramatiq", "actors", "-p", "1", "-t", "1", "-Q", "documents"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=output, stderr=output)
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def warm_up(storage: Path) -> None:
    """One small text PDF and one scanned page through the worker: imports, model, first queries."""
    from pipelines.documents import ingest_document
    from samples.documents.make_samples import scanned_pdf, text_pdf

    path = storage / "bench" / "warm-up.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text_pdf([[PARAGRAPH]]))
    ingest_document(str(path.relative_to(storage))).wait(300)
    path.write_bytes(scanned_pdf([PARAGRAPH], dpi=150, bilevel=True))
    ingest_document(str(path.relative_to(storage))).wait(300)


def bench_text_pdf(pages: int, storage: Path, rounds: int = 7) -> dict[str, float]:
    from pypdf import PdfReader

    from actors.documents import extract_document
    from samples.documents.make_samples import text_pdf
    from storage.documents import create_document

    path = storage / "bench" / "text.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text_pdf([[f"Page {n}.", PARAGRAPH, PARAGRAPH] for n in range(pages)]))

    def direct() -> None:
        reader = PdfReader(path)
        for page in reader.pages:
            page.extract_text()

    def worker() -> None:
        document_id = create_document(str(path.relative_to(storage)))
        # Blocks on Redis until the job's result arrives: no polling thread competes with the worker.
        message = extract_document.send_with_options(args=(document_id,), store_results=True)
        result = message.get_result(block=True, timeout=600_000)
        assert result["pages"] == pages, result

    direct()  # warm the file cache and pypdf's imports
    return {
        "direct_s": min(_timed(direct) for _ in range(3)),
        "worker_s": min(_timed(worker) for _ in range(3)),
    }


def bench_scanned(pages: int, storage: Path, language: str, rounds: int = 4) -> dict[str, float]:
    """``pages`` scanned pages in all, as ``rounds`` PDFs that alternate between the two paths, so
    that both see the same share of whatever else the machine is doing."""
    import pytesseract
    from PIL import Image

    from pipelines.documents import ingest_document
    from samples.documents.make_samples import scanned_pdf

    per_round = max(1, pages // rounds)
    path = storage / "bench" / "scanned.pdf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scanned_pdf([PARAGRAPH] * per_round, dpi=300, bilevel=True))

    def direct() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(1, per_round + 1):
                prefix = Path(tmp) / f"p{number}"
                render = ["pdftoppm", "-r", "300", "-gray", "-png", "-singlefile"]
                render += ["-f", str(number), "-l", str(number), str(path), str(prefix)]
                subprocess.run(render, check=True)
                with Image.open(prefix.with_suffix(".png")) as image:
                    pytesseract.image_to_string(image, lang=language, config="--psm 3")

    def worker() -> float:
        """Seconds until the pages are OCR'd; then waits, untimed, for chunking and embedding to end so
        the next round starts on an idle worker."""
        started = time.perf_counter()
        run = ingest_document(str(path.relative_to(storage)))
        _wait_document(run.document_id, lambda d: d.status in ("extracted", "indexed") and d.step != "extract")
        elapsed = time.perf_counter() - started
        run.wait(1800)
        return elapsed

    direct_s = worker_s = 0.0
    for _ in range(rounds):
        direct_s += _timed(direct)
        worker_s += worker()
    return {"direct_s": direct_s, "worker_s": worker_s, "pages": per_round * rounds}


def bench_embeddings(count: int, model: str, batch_size: int, rounds: int = 3) -> dict[str, float]:
    from processing.embeddings import embed_array, load_model

    load_model(model)
    texts = [f"Chunk {n}. {PARAGRAPH} {PARAGRAPH}" for n in range(count)]
    embed_array(texts[:4], model_name=model, batch_size=batch_size)  # warm-up
    batched: list[float] = []
    singles: list[float] = []
    for _ in range(rounds):  # alternate the two ways and keep each one's best round
        batched.append(_timed(lambda: embed_array(texts, model_name=model, batch_size=batch_size)))
        singles.append(_timed(lambda: [embed_array([text], model_name=model, batch_size=1) for text in texts]))
    return {"batched_s": min(batched), "single_s": min(singles)}


def _seed_vectors(total: int, model: str, *, windows_per_chunk: int = 4, chunks_per_document: int = 25) -> None:
    """``total`` random unit vectors in indexed documents, written through the storage functions."""
    import numpy as np

    from storage import documents as store

    rng = np.random.default_rng(11)
    per_document = windows_per_chunk * chunks_per_document
    for first in range(0, total, per_document):
        count = min(per_document, total - first)
        document_id = store.create_document(f"bench/search-{first // per_document}.txt")
        chunks = -(-count // windows_per_chunk)
        store.replace_chunks(
            document_id,
            (
                store.ChunkRow(n, f"chunk {n} of document {document_id}", n * 4000, (n + 1) * 4000, 1)
                for n in range(chunks)
            ),
        )
        matrix = rng.standard_normal((count, 384)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        ids = [chunk_id for chunk_id, _ in store.chunks_of(document_id)]
        store.replace_embeddings(
            document_id,
            model,
            [
                store.WindowVector(ids[n // windows_per_chunk], n % windows_per_chunk, 0, 1000, matrix[n])
                for n in range(count)
            ],
        )
        store.set_status(document_id, store.DocumentStatus.INDEXED)


def _sql_brute_force(query: Any, model: str, k: int) -> list[int]:
    """The search of earlier versions: every vector read from SQL for each query, then ranked in numpy."""
    import numpy as np
    from sqlalchemy import select

    from storage import documents as store
    from storage.db import session_scope

    with session_scope() as session:
        rows = session.execute(
            select(store.DocumentVector.chunk_id, store.DocumentVector.vector)
            .join(store.Document, store.Document.id == store.DocumentVector.document_id)
            .where(store.DocumentVector.model == model, store.Document.status == "indexed")
        ).all()
    matrix = np.stack([store.vector_of(row.vector) for row in rows])
    scores = matrix @ query
    return [int(rows[i].chunk_id) for i in np.argsort(-scores)[:k]]


def bench_search(total: int, model: str, k: int = 5) -> dict[str, float]:
    import numpy as np

    from storage import documents as store

    started = time.perf_counter()
    _seed_vectors(total, model)
    seeded_s = time.perf_counter() - started
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((200, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    load_s = _timed(lambda: store.search_chunks(queries[0], model=model, k=k))  # reads the matrix once
    loaded = store.load_matrix(model)
    assert len(loaded.matrix) == total, (len(loaded.matrix), total)
    memory = np.array(loaded.matrix, copy=True)

    def brute(query: Any) -> Any:
        scores = memory @ query
        return np.argpartition(-scores, k)[:k]

    platform = [_timed(partial(store.search_chunks, q, model=model, k=k)) for q in queries]
    numpy_only = [_timed(partial(brute, q)) for q in queries]
    sql = [_timed(partial(_sql_brute_force, q, model, k)) for q in queries[:20]]

    def pct(values: list[float], p: float) -> float:
        return float(np.percentile(values, p) * 1000)

    return {
        "vectors": total,
        "seed_s": seeded_s,
        "first_query_ms": load_s * 1000,
        "platform_p50_ms": pct(platform, 50),
        "platform_p95_ms": pct(platform, 95),
        "numpy_p50_ms": pct(numpy_only, 50),
        "numpy_p95_ms": pct(numpy_only, 95),
        "sql_p50_ms": pct(sql, 50),
        "sql_p95_ms": pct(sql, 95),
    }


def print_search(figures: dict[str, float]) -> None:
    print(f"search over {figures['vectors']:,} vectors (seeded in {figures['seed_s']:.0f} s)")
    print(f"{'path':<44}{'p50 ms':>10}{'p95 ms':>10}")
    for label, key in (
        ("search_chunks (per-process matrix)", "platform"),
        ("numpy brute force, matrix in memory", "numpy"),
        ("every vector read from SQL per query", "sql"),
    ):
        print(f"{label:<44}{figures[key + '_p50_ms']:>10.1f}{figures[key + '_p95_ms']:>10.1f}")
    print(f"first query, which reads the matrix: {figures['first_query_ms']:.0f} ms")
    print(
        f"search_chunks / numpy p50 = {figures['platform_p50_ms'] / figures['numpy_p50_ms']:.2f}x; "
        f"SQL read / search_chunks p50 = {figures['sql_p50_ms'] / figures['platform_p50_ms']:.1f}x"
    )


def _rate(value: float) -> str:
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--text-pages", type=int, default=200)
    parser.add_argument("--scanned-pages", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--vectors", type=int, default=100_000, help="window vectors for the search figures")
    parser.add_argument("--search-only", action="store_true", help="measure search only (no worker needed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import actors
    from middleware.job_status import flush
    from settings import settings
    from storage.db import migrate

    migrate()
    if args.search_only:
        search = bench_search(args.vectors, settings.embedding_model)
        print_search(search)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"search": search}, indent=2))
        return 0
    settings.storage_root.mkdir(parents=True, exist_ok=True)
    actors.broker.flush("documents")
    with worker_process(settings.var_dir / "bench-worker.log"):
        warm_up(settings.storage_root)
        text = bench_text_pdf(args.text_pages, settings.storage_root)
        scanned = bench_scanned(args.scanned_pages, settings.storage_root, settings.ocr_language)
    flush()
    embeddings = bench_embeddings(args.chunks, settings.embedding_model, settings.embedding_batch_size)
    search = bench_search(args.vectors, settings.embedding_model)

    rows = [
        ("text PDF pages/s", args.text_pages, text["direct_s"], text["worker_s"], "pypdf", "worker"),
        (
            "scanned pages/s",
            args.scanned_pages,
            scanned["direct_s"],
            scanned["worker_s"],
            "tesseract",
            "worker",
        ),
        (
            "chunks embedded/s",
            args.chunks,
            embeddings["single_s"],
            embeddings["batched_s"],
            "one at a time",
            "batched",
        ),
    ]
    print(f"{'measure':<20}{'baseline':>26}{'platform':>22}{'ratio':>10}")
    figures: dict[str, Any] = {}
    for name, count, base_s, ours_s, base_label, ours_label in rows:
        base_rate, ours_rate = count / base_s, count / ours_s
        ratio = ours_rate / base_rate
        baseline, platform = f"{base_label} {_rate(base_rate)}", f"{ours_label} {_rate(ours_rate)}"
        print(f"{name:<20}{baseline:>26}{platform:>22}{ratio:>9.2f}x")
        figures[name] = {
            "count": count,
            base_label: round(base_rate, 2),
            ours_label: round(ours_rate, 2),
            "ratio": round(ratio, 3),
        }
    print(
        "ratio = platform rate / baseline rate; the worker path is within 10% of the direct calls when the "
        "ratio is at least 0.90."
    )
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f} during the run (figures are noisier above ~1).")
    print_search(search)
    figures["search"] = search
    figures["cpus"], figures["load_average"] = os.cpu_count(), round(load[0], 2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(_TEMP, ignore_errors=True)
