"""What every command family shares: tables, short text, times, progress bars, the one-line error."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any


class CliError(Exception):
    """An error the CLI reports as one line and exit code 1."""


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
    return seconds_text((job.finished_at - job.started_at).total_seconds())


def seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def progress_bar(percent: float, width: int = 30) -> str:
    filled = round(width * max(0.0, min(percent, 100.0)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {percent:5.1f}%"


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or an ISO date/time (the API's ``since``, as ``--since``)."""
    from pipelines import ops

    try:
        return ops.parse_since(text)
    except ops.BadRequest as error:
        raise CliError(f"--{error}") from None


def say(*parts: Any, **options: Any) -> None:
    """Print, and go quiet for good when nobody reads stdout any more (``| tee`` stopped by Ctrl-C)."""
    try:
        print(*parts, **options, flush=True)
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    # Point the descriptor at /dev/null, so neither later prints nor the flush at exit fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def wait_for_job(message_id: str, timeout: float, poll: float = 0.25) -> Any:
    """The job's row once it ended, or as it stands after ``timeout`` seconds (``None``: no row yet)."""
    from middleware.job_status import flush
    from storage.jobs import get_job
    from storage.models import FINISHED_STATES

    finished = {state.value for state in FINISHED_STATES}
    deadline = time.monotonic() + timeout
    while True:
        flush()
        job = get_job(message_id)
        if (job is not None and job.state in finished) or time.monotonic() > deadline:
            return job
        time.sleep(poll)


def job_failure(message_id: str, job: Any, what: str = "job", queued: str = "still queued") -> str:
    """One line for a job that did not succeed: ``job ID STATE: REASON``."""
    state = job.state if job is not None else queued
    reason = f": {job.error_message}" if job is not None and job.error_message else ""
    return f"{what} {message_id} {state}{reason}"
