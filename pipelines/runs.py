"""One handle for a run: a job and the jobs it started, read from the job table.

``Run(job_id)`` follows any job; a run's children are the jobs whose ``parent_id`` is its id (the steps
of ``run_pipeline``, the members of ``run_group``, what a fanning actor sends). ``status()`` reads where
it stands now, ``wait(timeout)`` blocks until it ends and returns its result or raises ``RunFailed``,
and ``result()`` is the result of a run that succeeded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage.models import FINISHED_STATES, JobState

_FINISHED = frozenset(state.value for state in FINISHED_STATES)
_FAILED = frozenset({JobState.FAILED.value, JobState.DEAD.value, JobState.CANCELLED.value})


class RunFailed(RuntimeError):
    """A run ended ``failed``, ``dead`` or ``cancelled``: ``job_id`` is the job that did, ``state`` its
    state, ``error_type`` and ``error_message`` the error its last attempt raised (``error_type`` is
    ``None`` when only the domain's row says why, e.g. a file the stuck-file reaper gave up on)."""

    def __init__(self, run_id: str, job_id: str, state: str, error_type: str | None, error_message: str | None):
        self.run_id = run_id
        self.job_id = job_id
        self.state = state
        self.error_type = error_type
        self.error_message = error_message
        where = "" if job_id == run_id else f" (in job {job_id})"
        reason = f": {error_type}: {error_message}" if error_type else f": {error_message}" if error_message else ""
        super().__init__(f"run {run_id} {state}{where}{reason}")


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands.

    ``state`` is the root job's state, except that the run is ``failed``/``dead``/``cancelled`` as soon as
    any of its jobs is, and ``running`` while the root succeeded but children have not all ended.
    ``progress`` is percent (0-100) of the root job; ``children`` counts the children by state.
    """

    id: str
    state: str
    progress: float
    progress_note: str | None
    children: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in _FINISHED


class Run:
    """A handle on one run, by the id of its first (root) message.

    ``result`` reads what the run produced once it succeeded (default: the root job's stored result
    summary, parsed as JSON when it is JSON); domain functions hand in a reader of their own tables.
    ``settled`` says whether a run whose root succeeded has ended in the domain's own tables (a fan-out
    whose children are sent by the root: their rows may reach the job table after the root's).
    """

    def __init__(
        self, id: str, *, result: Callable[[], Any] | None = None, settled: Callable[[], bool] | None = None
    ) -> None:
        self.id = str(id)
        self._read_result = result
        self._settled = settled

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def failed_in_domain(self, reason: str) -> RunFailed:
        """The ``RunFailed`` of a run whose domain row says it failed (``reason``): the failed job's error
        when its row already says so, else ``reason`` (a stuck run the reaper gave up on has no failed job)."""
        return self._failure() or RunFailed(self.id, self.id, JobState.FAILED.value, None, reason)

    def _failure(self) -> RunFailed | None:
        from storage.jobs import list_jobs

        for job in list_jobs(parent_id=self.id, limit=10_000):
            if job.state in _FAILED:
                return RunFailed(self.id, job.id, str(job.state), job.error_type, job.error_message)
        return None

    def status(self) -> RunStatus:
        """The root job's state and progress and its children's counts by state (``queued`` before the
        root's row is written)."""
        from middleware.job_status import flush
        from storage.jobs import get_job, list_jobs

        flush()
        root = get_job(self.id)
        children: dict[str, int] = {}
        for job in list_jobs(parent_id=self.id, limit=10_000):
            if job.id != self.id:
                name = str(job.state or JobState.QUEUED.value)
                children[name] = children.get(name, 0) + 1
        state = str(root.state or JobState.QUEUED.value) if root is not None else JobState.QUEUED.value
        if state not in _FAILED:
            failed = next((name for name in children if name in _FAILED), None)
            if failed is not None:
                state = failed
            elif state == JobState.SUCCEEDED.value and (
                any(name not in _FINISHED for name in children) or (self._settled is not None and not self._settled())
            ):
                state = JobState.RUNNING.value
        progress = float(root.progress or 0.0) if root is not None else 0.0
        return RunStatus(self.id, state, progress, root.progress_note if root is not None else None, children)

    def result(self) -> Any:
        """What the run produced, once it succeeded; raises ``RunFailed`` for a run that failed and
        ``LookupError`` for one that has not ended."""
        status = self.status()
        if status.state in _FAILED:
            raise self._error(status)
        if status.state != JobState.SUCCEEDED.value:
            raise LookupError(f"run {self.id} has not finished (it is {status.state})")
        if self._read_result is not None:
            return self._read_result()
        return self._root_result()

    def wait(self, timeout: float | None = None, *, poll: float = 0.2) -> Any:
        """Block until the run ends; return ``result()``, or raise ``RunFailed`` (any failed job of the
        run) or ``TimeoutError`` after ``timeout`` seconds (``None``: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status.state in _FAILED:
                raise self._error(status)
            if status.state == JobState.SUCCEEDED.value:
                return self.result()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} did not finish within {timeout:g} s (it is {status.state})")
            time.sleep(poll)

    def _error(self, status: RunStatus) -> RunFailed:
        from storage.jobs import get_job

        root = get_job(self.id)
        if root is not None and root.state in _FAILED:
            return RunFailed(self.id, root.id, str(root.state), root.error_type, root.error_message)
        return self._failure() or RunFailed(self.id, self.id, status.state, None, None)

    def _root_result(self) -> Any:
        from storage.jobs import get_job

        root = get_job(self.id)
        text = root.result if root is not None else None
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text
