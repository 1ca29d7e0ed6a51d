"""The operator's tool: submit jobs, follow them, inspect queues and dead letters, run the demo.

    python -m cli submit health_check --wait
    python -m cli jobs --state failed --since 1h
    python -m cli queues

Every error is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

#: Modules whose ``register_cli(subparsers)`` adds commands and whose ``demo()`` joins ``make demo``.
DOMAIN_PIPELINES = ("pipelines.documents", "pipelines.media", "pipelines.market")


class CliError(Exception):
    """An error the CLI reports as one line and exit code 1."""


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(value) if value is not None else "" for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[index]) for row in cells]) for index, header in enumerate(headers)]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def short(text: str | None, limit: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(job: Any) -> str:
    if job.started_at is None or job.finished_at is None:
        return ""
    seconds = (job.finished_at - job.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def progress_bar(percent: float, width: int = 30) -> str:
    filled = round(width * max(0.0, min(percent, 100.0)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {percent:5.1f}%"


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/time."""
    match = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--since must look like 30m, 2h, 7d or an ISO date, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def _broker() -> Any:
    import actors
    from storage.db import migrate

    migrate()
    return actors.broker


def _redis() -> Any:
    from broker import redis_client_for

    client = redis_client_for(_broker())
    if client is None:
        raise CliError("this command needs Redis; set REDIS_URL")
    return client


def cmd_submit(args: argparse.Namespace) -> int:
    import dramatiq

    broker = _broker()
    try:
        actor = broker.get_actor(args.actor)
    except dramatiq.errors.ActorNotFound:
        known = ", ".join(sorted(broker.get_declared_actors()))
        raise CliError(f"unknown actor {args.actor!r}; known actors: {known}") from None
    try:
        positional = json.loads(args.args) if args.args else []
        keywords = json.loads(args.kwargs) if args.kwargs else {}
    except json.JSONDecodeError as error:
        raise CliError(f"arguments are not valid JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(positional, list):
        positional = [positional]
    if not isinstance(keywords, dict):
        raise CliError("--kwargs must be a JSON object")
    if args.urgent:
        from pipelines import send_urgent

        message = send_urgent(actor, *positional, **keywords)
    else:
        message = actor.send(*positional, **keywords)
    print(message.message_id)
    if args.wait:
        return follow(message.message_id, timeout=args.timeout)
    return 0


def follow(job_id: str, *, timeout: float | None = None, stream: Any = None) -> int:
    """Show a live progress bar until the job finishes; exit code 0 only when it succeeded."""
    from pipelines import job_status
    from storage.models import FINISHED_STATES

    stream = stream or sys.stderr
    finished = {state.value for state in FINISHED_STATES}
    interactive = stream.isatty()
    deadline = time.monotonic() + timeout if timeout else None
    last = ""
    while True:
        job = job_status(job_id)
        state = job.state if job else "queued"
        percent = (job.progress or 0.0) if job else 0.0
        note = short(job.progress_note, 40) if job else ""
        line = f"{progress_bar(percent)} {state:<10} {note}"
        if interactive:
            stream.write("\r" + line.ljust(len(last)))
            stream.flush()
        elif line != last:
            stream.write(line + "\n")
        last = line
        if job is not None and state in finished:
            if interactive:
                stream.write("\n")
            print_job(job)
            return 0 if state == "succeeded" else 1
        if deadline and time.monotonic() > deadline:
            if interactive:
                stream.write("\n")
            raise CliError(f"job {job_id} did not finish within {timeout} s (it is {state})")
        time.sleep(0.2)


def print_job(job: Any) -> None:
    fields = [
        ("id", job.id),
        ("actor", job.actor),
        ("queue", job.queue),
        ("state", job.state),
        ("attempts", job.attempts),
        ("progress", f"{job.progress or 0:.0f}%" + (f" ({job.progress_note})" if job.progress_note else "")),
        ("enqueued", when(job.enqueued_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("duration", duration(job)),
        ("arguments", short(job.args, 200)),
        ("result", short(job.result, 400)),
        ("error", f"{job.error_type}: {job.error_message}" if job.error_type else ""),
        ("parent", job.parent_id),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        if value not in (None, ""):
            print(f"{name:<{width}}  {value}")


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines import job_status

    _broker()
    job = job_status(args.id)
    if job is None:
        raise CliError(f"no job with id {args.id!r}")
    print_job(job)
    if args.traceback and job.traceback:
        print()
        print(job.traceback)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from storage.jobs import list_jobs
    from storage.models import JobState

    _broker()
    if args.state and args.state not in {state.value for state in JobState}:
        raise CliError(f"--state must be one of {', '.join(state.value for state in JobState)}")
    since = parse_since(args.since) if args.since else None
    jobs = list_jobs(state=args.state, actor=args.actor, since=since, limit=args.limit)
    rows = [
        (
            job.id,
            job.actor,
            job.state,
            job.attempts,
            f"{job.progress or 0:.0f}%",
            when(job.enqueued_at),
            duration(job),
            short(job.error_message if job.error_type else job.result, 50),
        )
        for job in jobs
    ]
    print(table(["id", "actor", "state", "tries", "prog", "enqueued", "duration", "result / error"], rows))
    return 0


def _queue_names(broker: Any, queue: str | None) -> list[str]:
    from settings import QUEUES

    if queue and queue not in QUEUES:
        raise CliError(f"unknown queue {queue!r}; queues: {', '.join(QUEUES)}")
    return [queue] if queue else list(QUEUES)


def cmd_queues(args: argparse.Namespace) -> int:
    broker = _broker()
    rows = []
    for queue in _queue_names(broker, None):
        if hasattr(broker, "get_queue_message_counts"):
            ready, delayed, dead = broker.get_queue_message_counts(queue)
        else:
            client = _redis()
            ready = client.llen(f"dramatiq:{queue}")
            delayed = client.hlen(f"dramatiq:{queue}.DQ.msgs")
            dead = client.zcard(f"dramatiq:{queue}.XQ")
        rows.append((queue, ready, delayed, dead))
    print(table(["queue", "ready", "delayed", "dead"], rows))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from broker import workers_key
    from settings import settings

    client = _redis()
    now = time.time() * 1000
    rows = []
    for _, raw in sorted(client.hgetall(workers_key()).items()):
        info = json.loads(raw)
        age = (now - info["seen"]) / 1000
        alive = age * 1000 < settings.heartbeat_timeout
        if alive or args.all:
            rows.append(
                (info["host"], info["pid"], "alive" if alive else "gone", f"{age:.1f} s ago", " ".join(info["queues"]))
            )
    if not rows:
        print("no worker is alive")
        return 0
    print(table(["host", "pid", "status", "heartbeat", "queues"], rows))
    return 0


def _dead_letters(client: Any, queue: str) -> list[tuple[str, float, Any]]:
    from dramatiq import Message

    entries = []
    for redis_id, score in client.zrange(f"dramatiq:{queue}.XQ", 0, -1, withscores=True):
        data = client.hget(f"dramatiq:{queue}.XQ.msgs", redis_id)
        try:
            message = Message.decode(data) if data is not None else None
        except Exception:
            message = None
        entries.append((redis_id.decode(), score, message))
    return entries


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from dramatiq import Message

    broker = _broker()
    client = _redis()
    queues = _queue_names(broker, args.queue)
    if args.action == "list":
        rows = []
        for queue in queues:
            for redis_id, score, message in _dead_letters(client, queue):
                rows.append(
                    (
                        queue,
                        message.message_id if message else f"(undecodable {redis_id})",
                        message.actor_name if message else "",
                        when(datetime.fromtimestamp(score / 1000, UTC)),
                        short(json.dumps(list(message.args)) if message else "", 60),
                    )
                )
        print(table(["queue", "message id", "actor", "dead since", "arguments"], rows) if rows else "no dead letters")
        return 0
    if args.action == "purge":
        removed = 0
        for queue in queues:
            removed += client.zcard(f"dramatiq:{queue}.XQ")
            client.delete(f"dramatiq:{queue}.XQ", f"dramatiq:{queue}.XQ.msgs")
        print(f"purged {removed} dead letters")
        return 0
    wanted = set(args.ids)
    replayed = 0
    for queue in queues:
        for redis_id, _, message in _dead_letters(client, queue):
            if message is None or (wanted and message.message_id not in wanted):
                continue
            # A fresh message (and job row) whose parent is the dead one, with a full set of retries.
            fresh: Message[Any] = Message(
                queue_name=message.queue_name,
                actor_name=message.actor_name,
                args=message.args,
                kwargs=message.kwargs,
                options={"parent_id": message.message_id},
            )
            broker.enqueue(fresh)
            client.zrem(f"dramatiq:{queue}.XQ", redis_id)
            client.hdel(f"dramatiq:{queue}.XQ.msgs", redis_id)
            print(f"replayed {message.message_id} as {fresh.message_id}")
            replayed += 1
    if wanted and replayed < len(wanted):
        raise CliError(f"replayed {replayed} of {len(wanted)}: the others are not in the dead-letter queues")
    if not replayed:
        print("no dead letters to replay")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    broker = _broker()
    queue = _queue_names(broker, args.queue)[0]
    broker.flush(queue)
    print(f"purged queue {queue}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from pipelines import cancel

    _broker()
    try:
        outcome = cancel(args.id)
    except LookupError as error:
        raise CliError(str(error)) from None
    messages = {
        "cancelled": "cancelled: it will not run",
        "cancelling": "cancelling: it stops at its next check point (or its hard time limit)",
    }
    print(messages.get(outcome, f"not cancelled: the job already ended {outcome}"))
    return 0


# --------------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------------


def _domain_modules() -> list[Any]:
    return [importlib.import_module(name) for name in DOMAIN_PIPELINES]


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a worker and the scheduler, send work through every pipeline, show progress and a summary."""
    from broker import resolve_redis_url
    from settings import settings

    redis_url = resolve_redis_url()
    broker = _broker()
    print(f"Redis: {redis_url}   database: {settings.database_url}")
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    dramatiq_bin = str(Path(sys.executable).parent / "dramatiq")
    processes: list[subprocess.Popen[bytes]] = []
    log_dir = settings.var_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def start(name: str, command: list[str]) -> None:
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True))
        print(f"started {name}: {' '.join(command[1:])}  (log: {log_dir / (name + '.log')})")

    def stop_all(*_: Any) -> None:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        start("worker", [dramatiq_bin, "actors", "-p", str(args.processes), "-t", str(args.threads)])
        if (ROOT / "scheduler.py").exists():
            start("scheduler", [sys.executable, str(ROOT / "scheduler.py")])
        job_ids = _send_demo_batch(broker)
        print(f"\nsent {len(job_ids)} jobs; following them (Ctrl-C stops everything)\n")
        code = _watch(job_ids, timeout=args.timeout)
        print(f"\nmetrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics")
        if args.linger or (args.linger is None and sys.stdin.isatty()):
            print("the worker and the scheduler keep running; try `python -m cli jobs` in another terminal")
            print("Ctrl-C stops everything")
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
        return code
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        print("stopping worker and scheduler…")
        stop_all()
        signal.signal(signal.SIGTERM, previous)


def _send_demo_batch(broker: Any) -> list[str]:
    from actors.maintenance import backup_database, daily_summary, health_check, monitor_queues

    ids = [
        health_check.send().message_id,
        monitor_queues.send().message_id,
        backup_database.send().message_id,
        daily_summary.send_with_options(delay=3_000).message_id,
    ]
    for module in _domain_modules():
        demo: Callable[[], list[str]] | None = getattr(module, "demo", None)
        if demo is not None:
            print(f"sending the {module.__name__.rsplit('.', 1)[-1]} demo…")
            ids += demo()
    return ids


def _watch(job_ids: list[str], *, timeout: float) -> int:
    from middleware.job_status import flush
    from storage.jobs import get_job
    from storage.models import FINISHED_STATES

    finished = {state.value for state in FINISHED_STATES}
    deadline = time.monotonic() + timeout
    interactive = sys.stdout.isatty()
    jobs: dict[str, Any] = {}
    last_line = ""
    while True:
        flush()
        jobs = {job_id: get_job(job_id) for job_id in job_ids}
        counts: dict[str, int] = {}
        for job in jobs.values():
            state = job.state if job else "queued"
            counts[state] = counts.get(state, 0) + 1
        done = sum(count for state, count in counts.items() if state in finished)
        running = [job for job in jobs.values() if job is not None and job.state == "running"]
        note = ""
        if running:
            current = max(running, key=lambda job: job.progress or 0)
            note = f"  {current.actor}: {current.progress or 0:.0f}% {short(current.progress_note, 30)}"
        states = " ".join(f"{state}={count}" for state, count in sorted(counts.items()))
        line = f"{progress_bar(100 * done / len(job_ids), 24)} {done}/{len(job_ids)} done  {states}{note}"
        if interactive:
            width = shutil.get_terminal_size().columns - 1
            print("\r" + line[:width].ljust(min(len(last_line), width)), end="", flush=True)
        elif line != last_line:
            print(line, flush=True)
        last_line = line
        if done == len(job_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    if interactive:
        print()
    rows = [
        (
            job_id[:8],
            job.actor if job else "",
            job.state if job else "queued",
            duration(job) if job else "",
            short((f"{job.error_type}: {job.error_message}" if job.error_type else job.result) if job else "", 70),
        )
        for job_id, job in jobs.items()
    ]
    print()
    print(table(["job", "actor", "state", "duration", "result"], rows))
    unfinished = [job_id for job_id, job in jobs.items() if job is None or job.state not in finished]
    if unfinished:
        print(f"\n{len(unfinished)} jobs did not finish within {timeout:.0f} s")
        return 1
    return 0


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from settings import settings

    parser = argparse.ArgumentParser(prog="python -m cli", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="send a job to an actor")
    submit.add_argument("actor")
    submit.add_argument("args", nargs="?", help="positional arguments as a JSON list, e.g. '[\"a.pdf\", 2]'")
    submit.add_argument("--kwargs", help="keyword arguments as a JSON object")
    submit.add_argument("--urgent", action="store_true", help="send to the priority queue")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    submit.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", help="show one job")
    status.add_argument("id")
    status.add_argument("--traceback", action="store_true")
    status.set_defaults(handler=cmd_status)

    jobs = commands.add_parser("jobs", help="list jobs")
    jobs.add_argument("--state")
    jobs.add_argument("--actor")
    jobs.add_argument("--since", help="30m, 2h, 7d or an ISO date")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(handler=cmd_jobs)

    dead = commands.add_parser("dead-letters", help="list, replay or purge dead-lettered messages")
    dead.add_argument("action", choices=["list", "replay", "purge"])
    dead.add_argument("ids", nargs="*", help="message ids to replay (default: all)")
    dead.add_argument("--queue")
    dead.set_defaults(handler=cmd_dead_letters)

    commands.add_parser("queues", help="ready, delayed and dead messages per queue").set_defaults(handler=cmd_queues)

    workers = commands.add_parser("workers", help="worker processes with a fresh heartbeat")
    workers.add_argument("--all", action="store_true", help="include workers that stopped recently")
    workers.set_defaults(handler=cmd_workers)

    purge = commands.add_parser("purge", help="drop every message of a queue")
    purge.add_argument("queue")
    purge.set_defaults(handler=cmd_purge)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("id")
    cancel.set_defaults(handler=cmd_cancel)

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

    for module in _domain_modules():
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        import redis
        import sqlalchemy.exc

        from processing.errors import PermanentError

        if isinstance(error, PermanentError):
            print(f"error: {error}", file=sys.stderr)
        elif isinstance(error, redis.ConnectionError):
            print(f"error: cannot reach Redis: {error}", file=sys.stderr)
        elif isinstance(error, sqlalchemy.exc.OperationalError):
            print(f"error: database: {error.orig}", file=sys.stderr)
        else:
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
