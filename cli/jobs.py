"""The platform's commands: submit and follow jobs, list them, queues, workers, dead letters, cancel, serve."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cli.common import CliError, duration, parse_since, progress_bar, short, table, when


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
        ("cancel at", when(job.cancel_requested_at) if job.cancel_requested_at else ""),
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
    from pipelines import ops

    try:
        return ops.queue_names(queue)
    except ops.OpsError as error:
        raise CliError(str(error)) from None


def cmd_queues(args: argparse.Namespace) -> int:
    from pipelines import ops

    _broker()
    rows = [(row["queue"], row["ready"], row["delayed"], row["dead"]) for row in ops.queue_stats()]
    print(table(["queue", "ready", "delayed", "dead"], rows))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from pipelines import ops

    _redis()
    rows = [
        (
            info["host"],
            info["pid"],
            "alive" if info["alive"] else "gone",
            f"{info['age_ms'] / 1000:.1f} s ago",
            " ".join(info["queues"]),
        )
        for info in ops.workers(include_gone=args.all)
    ]
    if not rows:
        print("no worker is alive")
        return 0
    print(table(["host", "pid", "status", "heartbeat", "queues"], rows))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from dramatiq.brokers.redis import RedisBroker

    from pipelines import ops

    broker = _broker()
    if not isinstance(broker, RedisBroker):
        raise CliError("dead-letters reads the Redis broker's dead-letter sets; with RabbitMQ they are the Q.XQ queues")
    _redis()
    queue = _queue_names(broker, args.queue)[0] if args.queue else None
    if args.action == "list":
        rows = [
            (
                entry.queue,
                entry.message.message_id if entry.message else f"(undecodable {entry.redis_id})",
                entry.message.actor_name if entry.message else "",
                when(entry.dead_since),
                short(json.dumps(shown[0]) if (shown := entry.shown_arguments()) else "", 60),
            )
            for entry in ops.dead_letters(queue)
        ]
        print(table(["queue", "message id", "actor", "dead since", "arguments"], rows) if rows else "no dead letters")
        return 0
    if args.action == "purge":
        print(f"purged {ops.purge_dead_letters(queue)} dead letters")
        return 0
    wanted = set(args.ids)
    replayed = ops.replay_dead_letters(list(wanted), queue=queue)
    for dead, fresh in replayed:
        print(f"replayed {dead} as {fresh}")
    if wanted and len(replayed) < len(wanted):
        raise CliError(f"replayed {len(replayed)} of {len(wanted)}: the others are not in the dead-letter queues")
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
        outcome = cancel(args.id, wait_ms=args.wait * 1000)
    except LookupError as error:
        raise CliError(str(error)) from None
    messages = {
        "cancelled": "cancelled",
        "cancelling": (
            "cancel requested: a worker skips the job if it has not started and interrupts it if it runs "
            "(a C call sees it when it returns)"
        ),
    }
    print(messages.get(outcome, f"not cancelled: the job ended {outcome}"))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP API and console (``web/``), in the foreground."""
    from web.server import serve

    _broker()
    try:
        serve(host=args.host, port=args.port, workers=args.workers, imports=args.imports, access_log=args.access_log)
    except ValueError as error:
        raise CliError(str(error)) from None
    return 0


def register_cli(commands: Any) -> None:
    """``submit``, ``status``, ``jobs``, ``dead-letters``, ``queues``, ``workers``, ``purge``, ``cancel``, ``serve``."""
    from settings import settings

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
    cancel.add_argument(
        "--wait", type=float, default=5.0, metavar="SECONDS", help="wait this long for the outcome (default 5)"
    )
    cancel.set_defaults(handler=cmd_cancel)

    serve = commands.add_parser("serve", help="the HTTP API and operator console")
    serve.add_argument("--host", default=settings.api_host)
    serve.add_argument("--port", type=int, default=settings.api_port)
    serve.add_argument("--workers", type=int, default=settings.api_workers, help="uvicorn worker processes")
    serve.add_argument("--import", dest="imports", action="append", default=[], help="another actor module")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    serve.set_defaults(handler=cmd_serve)
