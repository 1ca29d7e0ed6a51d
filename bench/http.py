"""The HTTP API over a big job table: listing and reading latency, and submit throughput.

    python -m bench.http                      # SQLite, and PostgreSQL when one answers on 5432
    python -m bench.http --rows 100000 --backends sqlite

For each database it loads ``--rows`` job rows (bulk: indexes dropped, rows copied in, indexes rebuilt),
serves the API with ``cli serve``, and measures from this process over loopback:

- ``GET /jobs`` pages (50 rows) under each filter, first page and 20 pages deep through the cursor: p50;
- ``GET /jobs/{id}`` of random rows: p50;
- ``POST /jobs`` with 2 uvicorn workers and 16 concurrent clients: requests/s, against a plain
  ``actor.send`` loop in this process, on the same broker and database, in the same run.

Redis is a private embedded server unless ``BENCH_REDIS_URL`` names one (use a database of its own:
the bench leaves messages in the ``maintenance`` queue). The figures include the client's own cost:
client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
ACTORS = [f"bench_actor_{index:02d}" for index in range(20)]
STATES = ["succeeded"] * 90 + ["failed"] * 4 + ["dead"] * 1 + ["cancelled"] * 2 + ["queued"] * 2 + ["running"]
TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _configure(database_url: str, redis_url: str) -> Path:
    """A private var dir; runs before anything imports ``settings``."""
    var_dir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    (var_dir / "metrics").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "VAR_DIR": str(var_dir),
            "STORAGE_ROOT": str(var_dir / "storage"),
            "DATABASE_URL": database_url or f"sqlite:///{var_dir / 'bench.db'}",
            "REDIS_URL": redis_url or "embedded",
            "METRICS_PORT": str(_free_port()),
            "METRICS_DIR": str(var_dir / "metrics"),
            "PROMETHEUS_MULTIPROC_DIR": str(var_dir / "metrics"),
            "API_TOKEN": TOKEN,
            "PYTHONPATH": str(ROOT),
        }
    )
    return var_dir


# -- loading -------------------------------------------------------------------------------------------


def _rows(count: int, seed: int = 7) -> tuple[list[tuple[Any, ...]], list[str], str]:
    """Job rows spread over 30 days; a tenth are children of 1,000 runs. Returns rows, some ids, a run id."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    queues = ["default", "documents", "media", "market", "maintenance", "collection"]
    runs = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(1000)]
    rows = []
    for _ in range(count):
        job_id = str(uuid.UUID(int=rng.getrandbits(128)))
        enqueued = now - timedelta(seconds=rng.random() * 30 * 86400)
        state = rng.choice(STATES)
        finished = enqueued + timedelta(milliseconds=rng.random() * 5000)
        failed = state in ("failed", "dead")
        rows.append(
            (
                job_id,
                rng.choice(ACTORS),
                rng.choice(queues),
                '{"args": [1, 2], "kwargs": {}}',
                state,
                13 if state == "succeeded" else 3,
                1,
                "RuntimeError" if failed else None,
                "it broke" if failed else None,
                enqueued,
                enqueued,
                finished if state not in ("queued", "running") else None,
                100.0 if state == "succeeded" else 0.0,
                '{"ok": true}' if state == "succeeded" else None,
                rng.choice(runs) if rng.random() < 0.1 else None,
                finished,
            )
        )
    return rows, [row[0] for row in rng.sample(rows, 2000)], runs[0]


COLUMNS = (
    "id, actor, queue, args, state, seq, attempts, error_type, error_message, enqueued_at, started_at, "
    "finished_at, progress, result, parent_id, updated_at"
)


def _load_sqlite(path: str, rows: list[tuple[Any, ...]]) -> None:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")
    indexes = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        connection.execute(f'DROP INDEX "{name}"')

    def text(value: Any) -> Any:
        # The format SQLAlchemy stores on SQLite: naive UTC.
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

    marks = ", ".join("?" * len(rows[0]))
    for start in range(0, len(rows), 50_000):
        chunk = [tuple(text(value) for value in row) for row in rows[start : start + 50_000]]
        connection.executemany(f"INSERT INTO jobs ({COLUMNS}) VALUES ({marks})", chunk)
    connection.commit()
    for _, sql in indexes:
        connection.execute(sql)
    connection.execute("ANALYZE")
    connection.commit()
    connection.close()


def _load_postgres(rows: list[tuple[Any, ...]]) -> None:
    from storage.db import get_engine

    raw = get_engine().raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs' AND indexname <> 'jobs_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

        def cell(value: Any) -> str:
            if value is None:
                return "\\N"
            if isinstance(value, datetime):
                return value.isoformat()
            return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

        for start in range(0, len(rows), 100_000):
            buffer = io.StringIO()
            for row in rows[start : start + 100_000]:
                buffer.write("\t".join(cell(value) for value in row) + "\n")
            buffer.seek(0)
            cursor.copy_expert(f"COPY jobs ({COLUMNS}) FROM STDIN", buffer)
        for _, definition in indexes:
            cursor.execute(definition)
        cursor.execute("ANALYZE jobs")
        raw.commit()
    finally:
        raw.close()


# -- serving and measuring -------------------------------------------------------------------------------


def _serve(workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", str(workers), "--no-access-log"]
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=handle, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/v1/queues", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _reads(url: str, ids: list[str], run: str, repeat: int) -> dict[str, float]:
    import httpx

    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    filters = {
        "no filter": {},
        "state=failed": {"state": "failed"},
        "actor": {"actor": ACTORS[3]},
        "queue": {"queue": "documents"},
        "state+actor": {"state": "succeeded", "actor": ACTORS[5]},
        "parent (a run)": {"parent": run},
        "since 1h": {"since": since},
    }
    figures: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(30):
            client.get("/api/v1/jobs", params={"limit": 50})
        for name, params in filters.items():
            first, deep = [], []
            for _ in range(repeat):
                started = time.perf_counter()
                page = client.get("/api/v1/jobs", params={**params, "limit": 50})
                first.append(time.perf_counter() - started)
                assert page.status_code == 200, page.text
            cursor = page.json()["next"]
            for _ in range(20):
                if not cursor:
                    break
                started = time.perf_counter()
                page = client.get("/api/v1/jobs", params={**params, "limit": 50, "after": cursor})
                deep.append(time.perf_counter() - started)
                cursor = page.json()["next"]
            figures[f"GET /jobs {name}"] = _p50_ms(first)
            if deep:
                figures[f"GET /jobs {name}, pages 2-21"] = _p50_ms(deep)
        single = []
        for job_id in ids[: max(repeat * 4, 200)]:
            started = time.perf_counter()
            response = client.get(f"/api/v1/jobs/{job_id}")
            single.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        figures["GET /jobs/{id}"] = _p50_ms(single)
    return figures


async def _post_load(url: str, total: int, concurrency: int) -> float:
    """``POST /jobs`` from ``concurrency`` keep-alive connections; returns requests/s.

    A minimal HTTP/1.1 client on asyncio streams: a full client library costs more CPU per request than
    the server does, and both share the machine's cores.
    """
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"actor": "health_check"}).encode()
    request = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def client(count: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for _ in range(count):
                writer.write(request)
                status = await reader.readline()
                assert b" 200 " in status, status
                length = 0
                while (line := await reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
        finally:
            writer.close()

    await asyncio.gather(*(client(20) for _ in range(concurrency)))  # warm-up, not counted
    started = time.perf_counter()
    each = total // concurrency
    await asyncio.gather(*(client(each) for _ in range(concurrency)))
    return each * concurrency / (time.perf_counter() - started)


def _run_async(coroutine: Any) -> Any:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def _send_loop(total: int) -> float:
    from actors.maintenance import health_check

    for _ in range(200):
        health_check.send()
    started = time.perf_counter()
    for _ in range(total):
        health_check.send()
    return total / (time.perf_counter() - started)


def run_one(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    database_url = ""
    admin = None
    name = f"bench_http_{os.getpid()}"
    if backend == "postgresql":
        import sqlalchemy

        base = args.postgres_url
        admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        database_url = base.rsplit("/", 1)[0] + f"/{name}"
    var_dir = _configure(database_url, args.redis_url)
    try:
        import actors  # noqa: F401  (builds the broker, registers the actors)
        from settings import settings
        from storage.db import get_engine, migrate

        migrate()
        started = time.perf_counter()
        rows, ids, run = _rows(args.rows)
        if backend == "sqlite":
            get_engine().dispose()
            _load_sqlite(settings.database_url.split("///", 1)[1], rows)
        else:
            _load_postgres(rows)
        loaded_s = time.perf_counter() - started
        del rows
        log = var_dir / "server.log"
        server, url = _serve(1, log)
        try:
            figures = _reads(url, ids, run, args.repeat)
        finally:
            _stop(server)
        server, url = _serve(2, log)
        try:
            served = _run_async(_post_load(url, args.posts, args.concurrency))
        finally:
            _stop(server)
        sent = _send_loop(args.posts)
        return {
            "backend": backend,
            "rows": args.rows,
            "load_s": loaded_s,
            "reads_ms": figures,
            "post_per_s": served,
            "send_per_s": sent,
        }
    finally:
        if admin is not None:
            import sqlalchemy

            from storage.db import get_engine

            get_engine().dispose()
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=50, help="requests per filter (default 50)")
    parser.add_argument("--posts", type=int, default=4_000, help="POST /jobs requests, and sends (default 4000)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", POSTGRES_URL))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return 0
    results = []
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        if backend == "postgresql" and not _postgres_answers():
            print("no PostgreSQL on 127.0.0.1:5432: skipping it")
            continue
        # One process per database: settings are read once per process.
        command = [sys.executable, "-m", "bench.http", "--one", backend, *sys.argv[1:]]
        print(f"{backend}: loading {args.rows:,} rows and measuring…", flush=True)
        output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
        if output.returncode != 0 or not lines:
            print(output.stdout[-2000:], output.stderr[-3000:])
            return 1
        results.append(json.loads(lines[-1][7:]))
    print(f"\n{os.cpu_count()} CPUs; pages of 50 rows; p50 over {args.repeat} requests each (20 for deep pages)\n")
    names = list(results[0]["reads_ms"]) if results else []
    header = f"{'request':<40}" + "".join(f"{r['backend'] + ' ms':>14}" for r in results)
    print(header)
    print("-" * len(header))
    for name in names:
        print(f"{name:<40}" + "".join(f"{r['reads_ms'].get(name, float('nan')):>14.2f}" for r in results))
    print()
    for result in results:
        ratio = result["post_per_s"] / result["send_per_s"]
        print(
            f"{result['backend']}: {result['rows']:,} rows loaded in {result['load_s']:.0f} s; "
            f"POST /jobs {result['post_per_s']:,.0f}/s (2 uvicorn workers, {args.concurrency} clients) vs "
            f"actor.send loop {result['send_per_s']:,.0f}/s: {ratio:.2f}×"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
