"""``python -m cli demo`` (``make demo``): a worker, the scheduler and the console, a batch through every
pipeline, progress, a summary."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import progress_bar, say, seconds_text, short, silence_stdout, table
from cli.jobs import _broker
from pipelines.runs import Run, RunFailed, RunStatus
from storage.models import FINISHED_STATES

ROOT = Path(__file__).resolve().parent.parent
FINISHED = frozenset(state.value for state in FINISHED_STATES)

#: Modules whose ``demo()`` joins ``make demo`` (each sends its work and returns the runs' handles).
DOMAIN_PIPELINES = (
    "pipelines.documents",
    "pipelines.media",
    "pipelines.market",
    "pipelines.llm",
    "pipelines.collection",
)

#: Command families whose ``demo_report()`` prints what the demo produced, after the summary.
DEMO_REPORTS = ("cli.market", "cli.collection")


def _domain_modules() -> list[Any]:
    return [importlib.import_module(name) for name in DOMAIN_PIPELINES]


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a worker and the scheduler, send work through every pipeline, show progress and a summary."""
    from broker import resolve_redis_url
    from processing.redaction import redact_url
    from settings import settings

    # Lines reach `make demo | tee demo.log` as they are printed, not in 8 KB blocks.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    redis_url = resolve_redis_url()
    print(f"Redis: {redact_url(redis_url)}   database: {redact_url(settings.database_url)}", flush=True)
    broker = _broker()
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    processes: list[subprocess.Popen[bytes]] = []
    log_dir = settings.var_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def start(name: str, command: list[str]) -> None:
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True))
        print(f"started {name}: python {' '.join(command[1:])}  (log: {log_dir / (name + '.log')})")

    def kill_all(*_: Any) -> None:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def stop_all() -> None:
        # The children run in sessions of their own (so the terminal's Ctrl-C reaches only this
        # process): nothing stops them but this. A second Ctrl-C while they shut down kills them.
        signal.signal(signal.SIGINT, kill_all)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                kill_all()
                process.wait()

    def leave(*_: Any) -> None:
        sys.exit(130)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    note = ""
    code = 130
    try:
        # The supervised worker command, as deployments run it: a worker process that dies is replaced.
        start("worker", [sys.executable, "-m", "worker", "actors", "-p", str(args.processes), "-t", str(args.threads)])
        if (ROOT / "scheduler.py").exists():
            start("scheduler", [sys.executable, str(ROOT / "scheduler.py")])
        start("web", [sys.executable, "-m", "cli", "serve", "--no-access-log"])
        runs = _send_demo_batch(broker)
        print(f"\nsent {len(runs)} runs; following them (Ctrl-C stops everything)\n")
        code = _watch(runs, timeout=args.timeout)
        for name in DEMO_REPORTS:
            report: Callable[[], None] = importlib.import_module(name).demo_report
            report()
        print(f"\nmetrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics")
        token = "API_TOKEN" if settings.api_token else settings.var_dir / "api-token"
        print(f"console: http://{settings.api_host}:{settings.api_port}/  (sign in with the token in {token})")
        if args.linger or (args.linger is None and sys.stdin.isatty()):
            print("the worker and the scheduler keep running; try `python -m cli jobs` in another terminal")
            print("Ctrl-C stops everything")
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
    except KeyboardInterrupt:
        note, code = "interrupted; ", 130
    except BrokenPipeError:
        # Whoever read our output is gone (the pipe's reader was stopped); say nothing more.
        silence_stdout()
        code = 128 + signal.SIGPIPE
    finally:
        # Children first, then talk: the terminal or pipe may be gone, and a print that fails here
        # must not leave the worker and scheduler running.
        stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"\n{note}stopped the worker and the scheduler")
    return code


def _send_demo_batch(broker: Any) -> list[Run]:
    from actors.maintenance import backup_database, daily_summary, health_check, monitor_queues

    runs = [
        Run(health_check.send().message_id),
        Run(monitor_queues.send().message_id),
        Run(backup_database.send().message_id),
        Run(daily_summary.send_with_options(delay=3_000).message_id),
    ]
    for module in _domain_modules():
        demo: Callable[[], list[Run]] | None = getattr(module, "demo", None)
        if demo is not None:
            print(f"sending the {module.__name__.rsplit('.', 1)[-1]} demo…")
            runs += demo()
    return runs


def _watch(runs: list[Run], *, timeout: float) -> int:
    """Follow the runs through their handles until each has ended; print a line as they go, then a table
    of every run with its steps (children) by state."""
    from storage.jobs import get_jobs

    deadline = time.monotonic() + timeout
    interactive = sys.stdout.isatty()
    last_line = ""
    while True:
        statuses = [run.status() for run in runs]
        roots = get_jobs([run.id for run in runs])
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status.state] = counts.get(status.state, 0) + 1
        done = sum(1 for status in statuses if status.finished)
        steps = sum(sum(status.children.values()) for status in statuses)
        steps_done = sum(n for status in statuses for state, n in status.children.items() if state in FINISHED)
        note = ""
        running = [status for status in statuses if status.state == "running"]
        if running:
            current = max(running, key=lambda status: status.progress)
            root = roots.get(current.id)
            actor = root.actor if root is not None else "?"
            note = f"  {actor}: {current.progress:.0f}% {short(current.progress_note, 30)}"
        states = " ".join(f"{state}={count}" for state, count in sorted(counts.items()))
        line = (
            f"{progress_bar(100 * done / len(runs), 24)} {done}/{len(runs)} runs done  {states}"
            f"  steps {steps_done}/{steps}{note}"
        )
        if interactive:
            width = shutil.get_terminal_size().columns - 1
            print("\r" + line[:width].ljust(min(len(last_line), width)), end="", flush=True)
        elif line != last_line:
            print(line, flush=True)
        last_line = line
        if done == len(runs) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    if interactive:
        print()
    rows = []
    for run, status in zip(runs, statuses, strict=True):
        root = roots.get(run.id)
        children = ", ".join(f"{n} {state}" for state, n in sorted(status.children.items()))
        rows.append(
            (
                run.id[:8],
                root.actor if root is not None else "",
                status.state,
                children,
                _span(run, root),
                short(_outcome(run, status, root), 60),
            )
        )
    print()
    print(table(["run", "actor", "state", "steps", "duration", "result"], rows))
    unfinished = [status for status in statuses if not status.finished]
    if unfinished:
        print(f"\n{len(unfinished)} runs did not finish within {timeout:.0f} s")
        return 1
    return 0


def _span(run: Run, root: Any) -> str:
    """From the run's first start to its last step's end."""
    from storage.jobs import list_jobs

    if root is None:
        return ""
    jobs = [root, *list_jobs(parent_id=run.id, limit=10_000)]
    starts = [job.started_at for job in jobs if job.started_at is not None]
    ends = [job.finished_at for job in jobs if job.finished_at is not None]
    if not starts or not ends:
        return ""
    return seconds_text((max(ends) - min(starts)).total_seconds())


def _outcome(run: Run, status: RunStatus, root: Any) -> str:
    """The error of a run that failed (whichever of its jobs failed), else its root job's result."""
    if status.finished and status.state != "succeeded":
        try:
            run.result()
        except RunFailed as error:
            reason = f"{error.error_type}: {error.error_message}" if error.error_type else error.error_message
            return reason or status.state
    return (root.result or "") if root is not None else ""


def register_cli(commands: Any) -> None:
    from settings import settings

    demo = commands.add_parser("demo", help="run a worker and the scheduler and send a demo batch")
    demo.add_argument("--processes", type=int, default=settings.worker_processes)
    demo.add_argument("--threads", type=int, default=settings.worker_threads)
    demo.add_argument("--timeout", type=float, default=600)
    demo.add_argument(
        "--linger",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the worker and scheduler running after the summary (default: when run in a terminal)",
    )
    demo.set_defaults(handler=cmd_demo)
