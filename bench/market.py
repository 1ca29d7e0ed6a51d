"""Market indicators + signals: through the workers vs a plain loop calling ta, in one run.

    python -m bench.market                           # 500 assets × 2,000 daily bars, growth 50 → 500
    python -m bench.market --assets 50 --bars 1000   # smaller
    python -m bench.market --lookback 2000           # store every bar's indicators, not the last 100

Both paths do the same computation per asset: indicators (``processing.indicators``, which calls ta) over
the bars the ``compute_indicators`` actor reads (the last ``lookback`` bars plus the longest window and
the warm-up), then the signal rules over the last ``lookback`` rows.

- plain loop: one process, one asset after another, on bars already in memory; nothing is stored.
- workers: ``refresh_assets`` fans out one pipeline per asset (indicators → signals) as a group to
  ``dramatiq actors -Q market`` worker processes, which read the bars from the database, compute, and
  upsert indicator rows and signals in bulk; the time runs from the send until the run is closed.
  One process per CPU (the cores the plain loop runs on, no more) with 2 threads each by default.

Besides the wall times, each step prints the CPU seconds each path used: the plain loop's process, and
every worker process together (from ``/proc``).

With ``--repeat N`` each step runs both paths N times, alternating, and keeps the best time of each.
The assets grow in steps (50, 100, 200, 500 by default); each step clears the indicator and signal
tables, so each worker run writes every row anew. Worker start-up and a warm-up run are not counted.
The database is a fresh SQLite file (or ``--database-url``); Redis is an embedded server of its own
unless ``--redis-url`` names one. Results are also written to ``bench/results/market.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configure(args: argparse.Namespace) -> None:
    """Point this process (and the workers it starts) at a private var dir, database and Redis.

    Runs before anything imports ``settings``, which reads the environment once.
    """
    var_dir = Path(tempfile.mkdtemp(prefix="bench-market-"))
    (var_dir / "metrics").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "VAR_DIR": str(var_dir),
            "STORAGE_ROOT": str(var_dir / "storage"),
            "DATABASE_URL": args.database_url or f"sqlite:///{var_dir / 'bench.db'}",
            # "embedded": the broker starts a Redis server of its own and hands its URL to the workers.
            "REDIS_URL": args.redis_url or "embedded",
            "METRICS_PORT": str(_free_port()),
            "METRICS_DIR": str(var_dir / "metrics"),
            "PROMETHEUS_MULTIPROC_DIR": str(var_dir / "metrics"),
            "PYTHONPATH": str(ROOT),
        }
    )


def _walks(assets: int, bars: int) -> list[Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(20_240_101)
    index = pd.date_range("2015-01-01", periods=bars, freq="D", tz="UTC", name="ts")
    frames = []
    for _ in range(assets):
        close = 50 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, bars)))
        high = close * (1 + rng.uniform(0, 0.02, bars))
        low = close * (1 - rng.uniform(0, 0.02, bars))
        volume = rng.integers(10_000, 1_000_000, bars).astype("float64")
        frames.append(
            pd.DataFrame({"open": close, "high": high, "low": low, "close": close, "volume": volume}, index=index)
        )
    return frames


def _store(symbol: str, frame: Any) -> None:
    from storage import market as store

    rows = [
        {"symbol": symbol, "ts": ts.to_pydatetime(), "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for ts, o, h, lo, c, v in zip(
            frame.index,
            *(frame[k].to_numpy().tolist() for k in ("open", "high", "low", "close", "volume")),
            strict=True,
        )
    ]
    store.import_bars(rows, timeframe="1d")


def _clear_results() -> None:
    from sqlalchemy import delete

    from storage import market as store
    from storage.db import session_scope

    with session_scope() as session:
        for table in (store.SignalRow, store.IndicatorRow, store.MarketRunItem, store.MarketRun):
            session.execute(delete(table))


def plain_loop(frames: list[Any], lookback: int) -> tuple[float, int]:
    """Seconds for indicators + signals of every frame in this process, and the signals found."""
    from processing.indicators import IndicatorParams, compute_indicators
    from processing.signals import evaluate_signals

    params = IndicatorParams()
    history = params.history_needed(lookback)
    found = 0
    started = time.perf_counter()
    for frame in frames:
        bars = frame.iloc[-history:]
        values = compute_indicators(bars, params).iloc[-lookback:]
        found += len(evaluate_signals(values.assign(close=bars["close"].iloc[-lookback:])))
    return time.perf_counter() - started, found


def worker_run(lookback: int, timeout: float = 3600) -> tuple[float, Any]:
    """Seconds from sending a refresh of every asset to its run being closed, and the run."""
    from actors.market import refresh_assets
    from storage import market as store

    started = time.perf_counter()
    message = refresh_assets.send(lookback_days=lookback)
    deadline = time.monotonic() + timeout
    run_id = None
    while True:
        if run_id is None:
            run_id = store.find_run_by_message(message.message_id)
        run = store.get_run(run_id) if run_id is not None else None
        if run is not None and run.finished:
            return time.perf_counter() - started, run
        if time.monotonic() > deadline:
            raise RuntimeError(f"the refresh did not finish within {timeout:g} s")
        time.sleep(0.02)


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants that are alive, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        one = pending.pop()
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{one}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def _wait_for_workers(processes: int, worker: subprocess.Popen[bytes], log: str) -> None:
    import json as _json

    import dramatiq

    from broker import redis_client_for, workers_key

    client = redis_client_for(dramatiq.get_broker())
    assert client is not None
    deadline = time.monotonic() + 180
    while True:
        alive = [_json.loads(v) for v in client.hvals(workers_key())]
        if sum(1 for w in alive if "market" in w.get("queues", [])) >= processes:
            return
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the market workers did not start; see {log}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=500, help="assets at the last step (default 500)")
    parser.add_argument("--bars", type=int, default=2_000, help="daily bars per asset (default 2000)")
    parser.add_argument("--lookback", type=int, default=100, help="bars whose indicators are stored (default 100)")
    parser.add_argument("--steps", default="50,100,200,500", help="asset counts to measure (default 50,100,200,500)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="worker processes (default: CPUs)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker process (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path per step; the best counts")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    args = parser.parse_args()

    _configure(args)
    steps = sorted({min(int(s), args.assets) for s in args.steps.split(",") if s.strip()} | {args.assets})

    import actors  # noqa: F401  (builds the broker and registers the actors)
    from storage.db import migrate

    migrate()
    env = dict(os.environ)
    print(
        f"{args.assets} assets × {args.bars} bars, lookback {args.lookback}; workers: {args.processes} processes "
        f"× {args.threads} threads; {os.cpu_count()} CPUs; database {env['DATABASE_URL'].split(':')[0]}"
    )
    frames = _walks(args.assets, args.bars)
    log = str(Path(tempfile.mkdtemp(prefix="bench-market-log-")) / "worker.log")
    command = [str(BIN / "dramatiq"), "actors", "-Q", "market", "-p", str(args.processes), "-t", str(args.threads)]
    with open(log, "wb") as log_file:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=log_file, start_new_session=True)
    results: list[dict[str, Any]] = []
    try:
        _wait_for_workers(args.processes, worker, log)
        stored = 0
        loaded = time.perf_counter()
        for count in steps:
            for i in range(stored, count):
                _store(f"B{i:04d}", frames[i])
            stored = count
            if not results:
                # Warm-up, not counted: each worker process imports pandas and ta on its first job.
                worker_run(args.lookback)
                print(f"stored the bars and warmed the workers up in {time.perf_counter() - loaded:.1f} s")
            plain_s = worker_s = plain_cpu = worker_cpu = float("inf")
            for _ in range(max(args.repeat, 1)):
                # Alternate the two paths so that load from elsewhere on the machine hits both alike.
                _clear_results()
                cpu = time.process_time()
                plain_once, plain_signals = plain_loop(frames[:count], args.lookback)
                plain_cpu = min(plain_cpu, time.process_time() - cpu)
                cpu = _cpu_seconds(worker.pid)
                worker_once, run = worker_run(args.lookback)
                worker_cpu = min(worker_cpu, _cpu_seconds(worker.pid) - cpu)
                if run.outcome != "succeeded" or run.total != count:
                    raise RuntimeError(f"the worker run ended {run.outcome} ({run.succeeded}/{run.total}); see {log}")
                plain_s, worker_s = min(plain_s, plain_once), min(worker_s, worker_once)
            from storage import market as store

            stored_signals = len(store.list_signals())
            results.append(
                {
                    "assets": count,
                    "plain_s": plain_s,
                    "worker_s": worker_s,
                    "plain_assets_per_s": count / plain_s,
                    "worker_assets_per_s": count / worker_s,
                    "ratio": worker_s / plain_s,
                    "plain_cpu_s": plain_cpu,
                    "worker_cpu_s": worker_cpu,
                    "signals_plain": plain_signals,
                    "signals_stored": stored_signals,
                }
            )
            print(
                f"  {count:>5} assets: plain {plain_s:7.2f} s   workers {worker_s:7.2f} s   "
                f"ratio {worker_s / plain_s:5.2f}×   signals {plain_signals} / {stored_signals}   "
                f"CPU: plain {plain_cpu:.2f} s, workers {worker_cpu:.2f} s"
            )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    print()
    print(f"{'assets':>6}  {'plain loop':>11} {'assets/s':>9}  {'workers':>9} {'assets/s':>9}  {'workers/plain':>13}")
    for r in results:
        print(
            f"{r['assets']:>6}  {r['plain_s']:>9.2f} s {r['plain_assets_per_s']:>9.1f}  {r['worker_s']:>7.2f} s "
            f"{r['worker_assets_per_s']:>9.1f}  {r['ratio']:>12.2f}×"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = last["assets"] / first["assets"]
        print(
            f"growth {first['assets']} → {last['assets']} assets ({growth:.0f}×): plain loop "
            f"{last['plain_s'] / first['plain_s']:.1f}× the time, workers {last['worker_s'] / first['worker_s']:.1f}×"
        )
    out = ROOT / "bench" / "results" / "market.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "assets": args.assets,
                "bars": args.bars,
                "lookback": args.lookback,
                "processes": args.processes,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "database": env["DATABASE_URL"].split(":")[0],
                "steps": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
