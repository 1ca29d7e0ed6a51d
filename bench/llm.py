"""LLM extraction: the actor path's overhead over a direct SDK call, at 50 concurrent requests.

    python -m bench.llm                          # 500 requests, 50 at a time, 1 s of model latency each
    python -m bench.llm --requests 200 --latency 5 --processes 2

Both paths send the same requests to the same local server (``tests/llm/llm_server.py``, in a process of
its own), which speaks the Anthropic Messages API and waits ``--latency`` seconds per reply, like a model
generating its answer.

- direct: this process, 50 threads sharing one ``anthropic.Anthropic`` client, each calling
  ``messages.create`` with the same parameters the provider sends; nothing else.
- actor path: ``extract_trading_strategy`` jobs on ``dramatiq actors -Q llm -p 1 -t 50`` (50 threads;
  ``--processes 2`` splits them over two processes), through the whole stack: job table, the attempt's
  ledger (Redis, then a row per call in ``llm_calls``), the Redis rate limiter and cache lookup, schema
  validation, the strategy row. Timed from the first send until every strategy row is written.

The overhead is actor-path time over direct time, minus one. Worker start-up is not counted. The database
is a fresh SQLite file; Redis an embedded server of its own unless ``--redis-url`` names one. The cache
is off (every request distinct anyway) and the rate limits are off, so both paths make every call.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "bench-key-not-secret"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configure(args: argparse.Namespace, base_url: str) -> Path:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-llm-"))
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
            "PYTHONPATH": str(ROOT),
            "LLM_PROVIDER": "anthropic",
            "LLM_API_KEY": KEY,
            "LLM_BASE_URL": base_url,
            "LLM_CACHE_TTL_MS": "0",
            "LLM_REQUESTS_PER_MINUTE": "0",
            "LLM_TOKENS_PER_MINUTE": "0",
        }
    )
    return var_dir


def _texts(count: int, tag: str) -> list[str]:
    return [
        f"Buy when RSI(14) falls below 30 on the 4h chart. Exit when RSI rises above 70. "
        f"Stop-loss at 2% of the account. Request {tag}-{index}."
        for index in range(count)
    ]


def run_direct(base_url: str, texts: list[str], concurrency: int) -> float:
    """Seconds for ``texts`` through the bare SDK with ``concurrency`` threads."""
    import anthropic

    from processing.llm.prompts import strategy_request

    client = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0, timeout=120)

    def one(text: str) -> str:
        request = strategy_request(text)
        message = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=request.max_tokens,
            system=request.system,
            messages=[{"role": "user", "content": [{"type": "text", "text": request.messages[0].text}]}],
            output_config={"format": {"type": "json_schema", "schema": request.schema}},
        )
        return "".join(block.text for block in message.content if block.type == "text")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, texts[:concurrency]))  # warm the connection pool
        started = time.perf_counter()
        replies = list(pool.map(one, texts[concurrency:]))
        elapsed = time.perf_counter() - started
    assert all(replies)
    return elapsed


def _strategies() -> int:
    from sqlalchemy import func, select

    from storage.db import session_scope
    from storage.llm import Strategy

    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Strategy)) or 0)


def run_actors(texts: list[str], concurrency: int, timeout: float, processes: int = 2) -> float:
    """Seconds for ``texts`` as ``extract_trading_strategy`` jobs on ``processes`` worker processes."""
    import actors  # noqa: F401  (the broker, and the embedded Redis the workers join)
    from actors.llm import extract_trading_strategy
    from storage.db import migrate

    migrate()
    threads = max(concurrency // processes, 1)
    worker = subprocess.Popen(
        [str(BIN / "dramatiq"), "actors", "-Q", "llm", "-p", str(processes), "-t", str(threads)],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = _strategies()  # a reused --database-url may hold earlier runs' rows
        warm = texts[:concurrency]
        for text in warm:
            extract_trading_strategy.send(text)
        deadline = time.monotonic() + timeout
        while _strategies() - base < len(warm):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the warm-up jobs did not finish (is the worker running?)")
            time.sleep(0.1)
        rest = texts[concurrency:]
        started = time.perf_counter()
        for text in rest:
            extract_trading_strategy.send(text)
        while _strategies() - base < len(texts):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {_strategies() - base} of {len(texts)} jobs finished in {timeout} s")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per path, after a warm-up round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1, help="worker processes (threads: concurrency / processes)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the server waits per reply")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    port_file = Path(tempfile.mkstemp(prefix="bench-llm-port-")[1])
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.llm.llm_server", str(port_file), str(args.latency)],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("the local LLM server did not start")
            time.sleep(0.05)
        base_url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        _configure(args, base_url)
        total = args.requests + args.concurrency
        direct = run_direct(base_url, _texts(total, "direct"), args.concurrency)
        actor = run_actors(_texts(total, "actor"), args.concurrency, args.timeout, args.processes)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)
        port_file.unlink(missing_ok=True)

    ideal = args.requests / args.concurrency * args.latency
    print(f"{args.requests} requests, {args.concurrency} concurrent, {args.latency:.2f} s model latency each")
    print(f"(the latency alone makes {ideal:.2f} s)\n")
    print("| path | seconds | requests/s |")
    print("|---|---|---|")
    print(f"| direct SDK call | {direct:.2f} | {args.requests / direct:.1f} |")
    threads = max(args.concurrency // args.processes, 1)
    print(
        f"| actor path ({args.processes} processes x {threads} threads) | {actor:.2f} | {args.requests / actor:.1f} |"
    )
    print(f"\noverhead of the actor path: {actor / direct - 1:+.1%} (target <= +10%)")


if __name__ == "__main__":
    main()
