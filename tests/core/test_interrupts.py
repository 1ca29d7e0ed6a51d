"""Time limits and cancels reach the attempt they belong to, and no ``except Exception`` can hide them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import job, wait_for_job, wait_until

pytestmark = pytest.mark.timeout(180)

LINE = "The lighthouse keeper climbs the spiral staircase at dusk to light the lamp and winds the clock."


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def _long_pdf(storage_root: Path, pages: int = 1500) -> int:
    """A registered text PDF whose extraction takes seconds: nearly all of it inside pypdf's
    ``extract_text``, which processing/pdf.py wraps in ``except Exception`` (a damaged page)."""
    from samples.documents.make_samples import text_pdf
    from storage import documents as store

    folder = storage_root / "interrupt-tests" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    (folder / "long.pdf").write_bytes(text_pdf([[LINE * 30] for _ in range(pages)]))
    return store.create_document(str((folder / "long.pdf").relative_to(storage_root)))


def test_a_soft_limit_during_pdf_text_extraction_is_retried_as_a_time_limit_not_a_damaged_file(
    worker: Any, storage_root: Path
) -> None:
    from actors.documents import extract_document
    from storage import documents as store

    # Given a long PDF and an extract step with a soft limit well inside its run and one retry
    document_id = _long_pdf(storage_root)

    # When the step runs into its soft limit on each attempt
    message = extract_document.send_with_options(
        args=(document_id,), soft_time_limit=800, time_limit=60_000, max_retries=1, min_backoff=100
    )
    row = wait_for_job(message.message_id, timeout=120)

    # Then it was retried once and then dead-lettered on the time limit, never taken for bad input
    assert (row.state, row.attempts, row.error_type) == ("dead", 2, "SoftTimeLimitExceeded")
    document = wait_until(lambda: store.get_document(document_id) if _status(document_id) == "failed" else None)
    assert "SoftTimeLimitExceeded" in (document.error or "")
    assert "damaged" not in (document.error or "")


def _status(document_id: int) -> str | None:
    from storage import documents as store

    document = store.get_document(document_id)
    return document.status if document is not None else None


def test_a_cancel_during_pdf_text_extraction_ends_cancelled_not_a_damaged_file(worker: Any, storage_root: Path) -> None:
    from actors.documents import extract_document
    from pipelines import cancel

    # Given a long PDF being extracted
    document_id = _long_pdf(storage_root)
    message = extract_document.send_with_options(args=(document_id,), time_limit=60_000)
    wait_until(lambda: (row := job(message.message_id)) is not None and (row.progress or 0) > 0, timeout=60)

    # When it is cancelled mid-extraction
    cancel(message.message_id)

    # Then the job ends cancelled, and the document is not marked damaged
    row = wait_for_job(message.message_id, timeout=60)
    assert (row.state, row.error_type) == ("cancelled", "JobCancelled")
    assert _status(document_id) != "failed"


def test_a_running_job_that_never_reports_progress_is_interrupted_by_its_cancel(worker, redis_client, key) -> None:
    from pipelines import cancel
    from tests.core.sample_actors import waits_for_go

    # Given a job looping in Python without any check point
    message = waits_for_go.send(key)
    wait_until(lambda: redis_client.llen(f"{key}:events"), timeout=30)
    wait_until(lambda: (row := job(message.message_id)) is not None and row.state == "running", timeout=30)

    # When it is cancelled
    cancel(message.message_id)

    # Then it is interrupted where it is and ends cancelled; it never got to its end
    row = wait_for_job(message.message_id, timeout=30)
    assert (row.state, row.error_type) == ("cancelled", "JobCancelled")
    redis_client.set(f"{key}:go", 1)
    assert redis_client.get(f"{key}:ran") is None


def test_an_interrupt_aimed_at_a_finished_attempt_never_reaches_a_later_message(worker, redis_client, key) -> None:
    from middleware.interrupts import JobCancelled, SoftTimeLimitExceeded, attempts
    from tests.core.sample_actors import counts, waits_for_go

    # Given an attempt that ran and finished on a worker thread
    first = waits_for_go.send(key)
    attempt = wait_until(lambda: attempts.find(first.message_id), timeout=30)
    redis_client.set(f"{key}:go", 1)
    assert wait_for_job(first.message_id).state == "succeeded"

    # When a late soft limit and a late cancel are aimed at it while later messages run
    later = [counts.send(key, str(index)) for index in range(8)]
    assert not attempts.interrupt(attempt, SoftTimeLimitExceeded)
    assert not attempts.interrupt(attempt, JobCancelled)

    # Then nothing is raised into them or into the worker's threads
    assert all(wait_for_job(message.message_id).state == "succeeded" for message in later)
    assert all(thread.is_alive() for thread in worker.workers)


def test_time_limit_and_cancel_exceptions_pass_through_except_exception() -> None:
    from dramatiq.middleware import Interrupt

    from middleware.interrupts import HardTimeLimitExceeded, JobCancelled, SoftTimeLimitExceeded

    for kind in (SoftTimeLimitExceeded, HardTimeLimitExceeded, JobCancelled):
        # Given code that treats every Exception as bad input
        def reader(kind: type[BaseException] = kind) -> str:
            try:
                raise kind()
            except Exception:
                return "damaged"

        # Then the interrupt is not one of them, and says what happened
        with pytest.raises(kind) as raised:
            reader()
        assert isinstance(raised.value, Interrupt) and str(raised.value)


def test_limits_landing_as_attempts_end_stay_in_their_own_attempt(worker, redis_client, key) -> None:
    from tests.core.sample_actors import counts, ends_at_its_soft_limit

    # Given many jobs that end right around their soft limit, on every worker thread
    messages = [ends_at_its_soft_limit.send(key, 0.095 + 0.0005 * (index % 20)) for index in range(60)]

    # Then each one either returned or ended on its own limit: none is left running, none got another's
    rows = [wait_for_job(message.message_id, timeout=120) for message in messages]
    outcomes = {(row.state, row.error_type) for row in rows}
    assert outcomes <= {("succeeded", None), ("dead", "SoftTimeLimitExceeded")}
    assert all(row.result == '"returned"' for row in rows if row.state == "succeeded")
    # And the worker's threads all live and serve the next message
    assert all(thread.is_alive() for thread in worker.workers)
    after = counts.send(f"{key}:after", "after")
    row = wait_for_job(after.message_id)
    assert row.state == "succeeded", row.traceback


def test_a_soft_limit_that_lands_in_a_finalizer_is_raised_again_in_the_actor(worker: Any, key: str) -> None:
    from tests.core.sample_actors import interrupted_in_a_finalizer

    # When the soft limit fires while the actor's thread runs an object's __del__ (Python drops an
    # exception raised there)
    row = wait_for_job(interrupted_in_a_finalizer.send(key).message_id, timeout=120)

    # Then the actor still gets it once the finalizer returns, and the job ends on its soft limit
    assert (row.state, row.error_type) == ("dead", "SoftTimeLimitExceeded"), row.result
