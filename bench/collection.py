"""Collection and trends: feeds through the workers vs a plain loop, phrase processing, trend scoring.

    python -m bench.collection                            # 1,000 feeds × 50 items, 100,000 items, 1,000,000 mentions
    python -m bench.collection --feeds 200 --items 20000 --mentions 200000   # smaller

1. Feeds. A local HTTP server (a process of its own) serves ``--feeds`` RSS feeds of ``--per-feed`` items.
   - plain loop: ``--processes`` processes, each fetching its share of the feeds one after the other
     with one httpx client and parsing them with feedparser; nothing is stored.
   - workers: ``collect_all_sources`` sends one ``collect_from_source`` per feed as a group to
     ``dramatiq actors -Q collection`` (``--processes`` × ``--threads``), which fetch, check, parse,
     deduplicate and store every item; the time runs from the send until the run is closed.
   Printed: feeds/s and items/s of each, and their ratio (workers / loop, higher is better).
2. ``process_pending_items`` on ``--items`` stored items (key phrases, phrase mentions): items/s.
3. ``score_trends`` over ``--mentions`` phrase mentions of 24 hours: seconds of the scoring alone, of reading
   every column of every mention, and of the whole actor against the baseline of reading every column
   first and scoring that (best of ``--repeat`` each, alternately): their ratio, and whether both stored the
   same trends. With ``--steps scoring`` alone, phrases and items are seeded straight into the tables.

The database is a fresh SQLite file (or ``--database-url``); Redis is an embedded server of its own unless
``--redis-url`` names one. Results are also written to ``bench/results/collection.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORDS = (  # noqa: SIM905
    "quantum battery rust compiler solar sail open model kernel patch browser engine database index cache "
    "network protocol vector search robot arm chip fab climate policy market rally space probe city transit "
    "privacy law game engine music app photo editor garden sensor river dam coffee roaster bike lane"
).split()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configure(args: argparse.Namespace) -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-collection-"))
    (var_dir / "metrics").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "VAR_DIR": str(var_dir),
            "STORAGE_ROOT": str(var_dir / "storage"),
            "DATABASE_URL": args.database_url or f"sqlite:///{var_dir / 'bench.db'}",
            "REDIS_URL": args.redis_url or "embedded",
            "METRICS_PORT": str(_free_port()),
            "METRICS_DIR": str(var_dir / "metrics"),
            "PROMETHEUS_MULTIPROC_DIR": str(var_dir / "metrics"),
            "SOURCES_FILE": str(var_dir / "sources.toml"),
            "PYTHONPATH": str(ROOT),
        }
    )


def _title(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(5)) + f" {n}"


def feed_body(feed: int, per_feed: int) -> bytes:
    rng = random.Random(feed)
    now = time.time()
    items = []
    for k in range(per_feed):
        n = feed * per_feed + k
        when = format_datetime(datetime.fromtimestamp(now - k * 60, UTC))
        items.append(
            f"<item><title>{_title(rng, n)}</title><link>https://bench.example/{feed}/{k}?utm_source=rss</link>"
            f"<guid>bench-{n}</guid><description>Item {n} of feed {feed}: {_title(rng, n)}</description>"
            f"<pubDate>{when}</pubDate></item>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Feed {feed}</title>'
        f"<link>https://bench.example/{feed}</link><description>bench</description>{''.join(items)}</channel></rss>"
    ).encode()


def _serve(port: int, feeds: int, per_feed: int, ready: Any) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = [feed_body(f, per_feed) for f in range(feeds)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            try:
                body = bodies[int(self.path.strip("/").split(".")[0].split("/")[-1])]
            except (ValueError, IndexError):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


def _loop_share(urls: list[str]) -> int:
    import feedparser
    import httpx

    items = 0
    with httpx.Client() as client:
        for url in urls:
            items += len(feedparser.parse(client.get(url).content).entries)
    return items


def plain_loop(urls: list[str], processes: int) -> tuple[float, int]:
    shares = [urls[i::processes] for i in range(processes)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        items = sum(pool.map(_loop_share, shares))
    return time.perf_counter() - started, items


def worker_run(timeout: float = 3600) -> tuple[float, dict[str, Any]]:
    from actors.collection import collect_all_sources
    from storage.collection import get_run, run_for_message

    started = time.perf_counter()
    message = collect_all_sources.send(force=True, origin="bench")
    deadline = time.monotonic() + timeout
    while True:
        run_id = run_for_message(message.message_id)
        run = get_run(run_id) if run_id is not None else None
        if run is not None and run["finished_at"] is not None:
            return time.perf_counter() - started, run
        if time.monotonic() > deadline:
            raise TimeoutError("the collection run did not finish")
        time.sleep(0.05)


def _wait_for_workers(processes: int, worker: subprocess.Popen[bytes], log: str) -> None:
    import dramatiq

    from broker import redis_client_for, workers_key

    client = redis_client_for(dramatiq.get_broker())
    assert client is not None
    deadline = time.monotonic() + 180
    while True:
        alive = [json.loads(v) for v in client.hvals(workers_key())]
        if sum(1 for w in alive if "collection" in w.get("queues", [])) >= processes:
            return
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the collection workers did not start; see {log}")
        time.sleep(0.1)


def bench_feeds(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from processing.sources import SourceConfig
    from storage.collection import sync_sources

    port = _free_port()
    ready = multiprocessing.get_context("fork").Event()
    server = multiprocessing.get_context("fork").Process(
        target=_serve, args=(port, args.feeds, args.per_feed, ready), daemon=True
    )
    server.start()
    ready.wait(60)
    urls = [f"http://127.0.0.1:{port}/{f}.xml" for f in range(args.feeds)]
    sync_sources([SourceConfig(f"bench-{f}", "rss", url) for f, url in enumerate(urls)], origin="bench")
    env = dict(os.environ)
    log = str(Path(env["VAR_DIR"]) / "worker.log")
    command = [str(BIN / "dramatiq"), "actors", "-Q", "collection", "-p", str(args.processes), "-t", str(args.threads)]
    with open(log, "wb") as log_file:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=log_file, start_new_session=True)
    try:
        _wait_for_workers(args.processes, worker, log)
        plain_s, plain_items = plain_loop(urls, args.processes)
        worker_s, run = worker_run()
        if run["outcome"] != "succeeded":
            raise RuntimeError(f"the run ended {run['outcome']}: {list(run['failures'].items())[:3]}; see {log}")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        server.terminate()
    stored = run["new_items"]
    results["feeds"] = {
        "feeds": args.feeds,
        "items_per_feed": args.per_feed,
        "processes": args.processes,
        "threads": args.threads,
        "plain_s": plain_s,
        "plain_feeds_per_s": args.feeds / plain_s,
        "plain_items_per_s": plain_items / plain_s,
        "worker_s": worker_s,
        "worker_feeds_per_s": args.feeds / worker_s,
        "worker_items_per_s": stored / worker_s,
        "items_stored": stored,
        "ratio": plain_s / worker_s,
    }
    f = results["feeds"]
    print(
        f"feeds: plain loop {plain_s:.2f} s ({f['plain_feeds_per_s']:.0f} feeds/s, "
        f"{f['plain_items_per_s']:.0f} items/s, nothing stored); "
        f"workers {worker_s:.2f} s ({f['worker_feeds_per_s']:.0f} feeds/s, "
        f"{f['worker_items_per_s']:.0f} items/s, {stored} stored); workers/loop = {f['ratio']:.2f}x"
    )


def bench_processing(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from actors.collection import process_pending_items
    from processing.dedupe import content_hash
    from processing.sources import SourceConfig
    from storage import collection as store

    store.sync_sources([SourceConfig("bench-bulk", "folder", "bulk")], origin="bench-bulk")
    rng = random.Random(1)
    now = store.utcnow()
    # The feeds' items are pending too: add what makes --items in all.
    wanted = max(args.items - store.count_pending(), 0)
    chunk = 5_000
    for start in range(0, wanted, chunk):
        candidates = []
        for n in range(start, min(start + chunk, wanted)):
            title = _title(rng, n)
            summary = f"{_title(rng, n)}. {_title(rng, n)}."
            candidates.append(
                store.Candidate(
                    f"bulk-{n}", title, None, f"https://bulk.example/{n}", content_hash(title, summary), summary, now
                )
            )
        store.record_success("bench-bulk", candidates, fetch_state={}, latency_ms=0.0, next_check_at=now)
    pending = store.count_pending()
    started = time.perf_counter()
    outcome = process_pending_items(limit=pending)
    seconds = time.perf_counter() - started
    results["process_pending_items"] = {
        "items": outcome["processed"],
        "pending_before": pending,
        "phrase_mentions": outcome["phrase_mentions"],
        "seconds": seconds,
        "items_per_s": outcome["processed"] / seconds,
    }
    print(
        f"process_pending_items: {outcome['processed']} items → {outcome['phrase_mentions']} phrase mentions in "
        f"{seconds:.1f} s ({outcome['processed'] / seconds:.0f} items/s)"
    )


def _seed_phrases_and_items(phrases: int, items: int) -> None:
    """Phrases and processed items straight into the tables, for ``--steps scoring`` on its own."""
    from sqlalchemy import insert

    from storage import collection as store
    from storage.db import session_scope

    rng = random.Random(2)
    now = store.utcnow()
    names = sorted({" ".join(rng.choice(WORDS) for _ in range(rng.choice((1, 2, 2, 3)))) for _ in range(phrases)})
    names += [f"seeded phrase {n}" for n in range(phrases - len(names))]
    with session_scope() as session:
        session.execute(insert(store.PhraseRow), [{"phrase": name} for name in names])
        rows = [
            {
                "canonical_url": f"https://seed.example/{n}",
                "content_hash": f"seed-{n}",
                "title": _title(rng, n),
                "summary": "",
                "first_seen_at": now,
                "phrases": "[]",
            }
            for n in range(items)
        ]
        for start in range(0, len(rows), 5_000):
            session.execute(insert(store.ItemRow), rows[start : start + 5_000])


def _score_reading_everything(hours: float, now: float) -> list[Any]:
    """``score_trends`` as it was before it read items and sources for the kept trends only: the baseline."""
    from actors.collection import trend_params
    from processing.trends import score_trends as score
    from storage import collection as store

    trends = score(store.load_mentions(now - hours * 3600), now=now, params=trend_params(hours), previous={})
    store.replace_trends(trends)
    return trends


def bench_scoring(args: argparse.Namespace, results: dict[str, Any]) -> None:
    import numpy as np
    from sqlalchemy import delete, func, select

    from actors.collection import score_trends, trend_params
    from processing.trends import score_trends as score
    from storage import collection as store
    from storage.db import session_scope

    with session_scope() as session:
        phrases_stored = int(session.scalar(select(func.count()).select_from(store.PhraseRow)) or 0)
    if phrases_stored < 100:
        seed_start = time.perf_counter()
        _seed_phrases_and_items(20_000, min(args.items, 200_000))
        print(
            f"(no processing step: seeded 20,000 phrases and {min(args.items, 200_000)} items in "
            f"{time.perf_counter() - seed_start:.1f} s)"
        )
    # Replace the phrase mentions with exactly --mentions of them: 20,000 phrases (Zipf-like), a burst on
    # a few, over 24 hours.
    rng = np.random.default_rng(3)
    with session_scope() as session:
        session.execute(delete(store.PhraseMentionRow))
        session.execute(delete(store.TrendRow))
        ids = [int(i) for i in session.scalars(select(store.PhraseRow.id).limit(20_000))]
        items = [int(i) for i in session.scalars(select(store.ItemRow.id).limit(200_000))]
    if len(ids) < 100 or not items:
        raise RuntimeError("no phrases or items to mention")
    now = time.time()
    total = args.mentions
    phrase = np.asarray(ids)[np.minimum(rng.zipf(1.3, total) - 1, len(ids) - 1)]
    ts = now - rng.uniform(0, 24 * 3600, total)
    burst = rng.random(total) < 0.02
    phrase[burst] = ids[5]
    ts[burst] = now - rng.uniform(0, 3600, int(burst.sum()))
    # (item, source) pairs never repeat (up to items × 20 mentions), so every row is stored.
    index = np.arange(total)
    item = np.asarray(items)[index % len(items)]
    source = (index // len(items)) % 20
    rows = list(zip(phrase.tolist(), item.tolist(), [f"bench-{s}" for s in source.tolist()], ts.tolist(), strict=True))
    with session_scope() as session:
        connection = session.connection()
        connection.exec_driver_sql(
            "INSERT INTO collection_phrase_mentions (phrase_id, item_id, source, ts) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING"
            if connection.dialect.name == "sqlite"
            else "INSERT INTO collection_phrase_mentions (phrase_id, item_id, source, ts) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            rows,
        )
    del rows
    loaded_start = time.perf_counter()
    mentions = store.load_mentions(now - 24 * 3600)
    load_s = time.perf_counter() - loaded_start
    started = time.perf_counter()
    trends = score(mentions, now=now, params=trend_params(24), previous={})
    score_s = time.perf_counter() - started
    del mentions
    # The baseline (every column of every mention read, as before) and the actor, alternately, from the
    # same empty trend table each time (so both see the same previous states); the best of each counts,
    # since this machine is shared.
    baseline_runs: list[float] = []
    actor_runs: list[float] = []
    identical = True
    for _ in range(args.repeat):
        with session_scope() as session:
            session.execute(delete(store.TrendRow))
        started = time.perf_counter()
        expected = _score_reading_everything(24, now)
        baseline_runs.append(time.perf_counter() - started)
        expected_rows = store.list_trends(limit=len(expected) + 1)
        with session_scope() as session:
            session.execute(delete(store.TrendRow))
        started = time.perf_counter()
        outcome = score_trends(24, now=now)
        actor_runs.append(time.perf_counter() - started)
        identical = identical and store.list_trends(limit=len(expected) + 1) == expected_rows
    baseline_s, actor_s = min(baseline_runs), min(actor_runs)
    results["score_trends"] = {
        "mentions": total,
        "phrases": len(set(phrase.tolist())),
        "trends": len(trends),
        "load_s": load_s,
        "score_s": score_s,
        "baseline_s": baseline_s,
        "baseline_runs_s": baseline_runs,
        "actor_s": actor_s,
        "actor_runs_s": actor_runs,
        "ratio": baseline_s / actor_s,
        "identical": identical,
    }
    print(
        f"score_trends: {total} mentions of {results['score_trends']['phrases']} phrases → {outcome['trends']} "
        f"trends; scoring {score_s:.2f} s, reading every column {load_s:.2f} s; the whole actor (read, score, "
        f"store) {actor_s:.2f} s vs {baseline_s:.2f} s reading every column of every mention (best of "
        f"{args.repeat}): {baseline_s / actor_s:.2f}x; trends {'identical' if identical else 'DIFFERENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=1_000)
    parser.add_argument("--per-feed", type=int, default=50)
    parser.add_argument("--items", type=int, default=100_000, help="items for process_pending_items")
    parser.add_argument("--mentions", type=int, default=1_000_000, help="phrase mentions for score_trends")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--steps", default="feeds,processing,scoring", help="which parts to run (scoring alone seeds phrases)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the scoring actor and its baseline")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    args = parser.parse_args()
    _configure(args)

    import actors  # noqa: F401  (builds the broker and registers the actors)
    from storage.db import migrate

    migrate()
    print(
        f"{args.feeds} feeds × {args.per_feed} items; workers {args.processes} processes × {args.threads} threads; "
        f"{os.cpu_count()} CPUs; database {os.environ['DATABASE_URL'].split(':')[0]}"
    )
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    steps = {s.strip() for s in args.steps.split(",")}
    if "feeds" in steps:
        bench_feeds(args, results)
    if "processing" in steps:
        bench_processing(args, results)
    if "scoring" in steps:
        bench_scoring(args, results)
    out = ROOT / "bench" / "results" / "collection.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
