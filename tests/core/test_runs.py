"""The Run handle, through a real worker: status with children, wait returning the result or raising."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_wait_returns_the_result_of_a_job_that_succeeded(worker, key):
    from pipelines import Run, run
    from tests.core.sample_actors import counts

    # Given a job sent to a worker
    message = counts.send(key, "a")

    # When its handle waits for it
    handle = run(message.message_id)
    result = handle.wait(timeout=60)

    # Then it returns what the actor returned, and the handle reads the same afterwards
    assert handle == Run(message.message_id)
    assert result == handle.result()
    status = handle.status()
    assert status.state == "succeeded"
    assert status.progress == 100.0
    assert status.children == {}


def test_wait_raises_run_failed_carrying_the_jobs_error(worker, key):
    from pipelines import RunFailed, run
    from tests.core.sample_actors import rejects_input

    # Given a job that fails on bad input
    message = rejects_input.send(key)

    # When its handle waits, then it raises RunFailed with the job's error
    with pytest.raises(RunFailed) as raised:
        run(message.message_id).wait(timeout=60)
    assert raised.value.job_id == message.message_id
    assert raised.value.state == "failed"
    assert raised.value.error_type is not None
    assert raised.value.error_message
    # And result() raises the same
    with pytest.raises(RunFailed):
        run(message.message_id).result()


def test_a_pipeline_run_counts_its_children_and_fails_when_a_step_fails(worker, key):
    from pipelines import RunFailed, run_pipeline
    from tests.core.sample_actors import counts, rejects_input

    # Given a pipeline whose second step fails
    messages = [
        counts.message_with_options(args=(key, "a"), pipe_ignore=True),
        rejects_input.message_with_options(args=(key,), pipe_ignore=True),
        counts.message_with_options(args=(key, "c"), pipe_ignore=True),
    ]
    handle = run_pipeline(messages)

    # When it is waited for, then the failure of the step is raised, naming that step's job
    with pytest.raises(RunFailed) as raised:
        handle.wait(timeout=60)
    assert raised.value.job_id == messages[1].message_id
    assert raised.value.run_id == messages[0].message_id
    # And the status counts the children by state: the failed step (the third never ran)
    status = handle.status()
    assert status.state == "failed"
    assert status.children == {"failed": 1}


def test_result_of_an_unfinished_run_says_so(broker, key):
    from pipelines import run
    from tests.core.sample_actors import counts

    # Given a job no worker takes
    message = counts.send(key, "a")

    # Then its status is queued and result() raises LookupError
    assert run(message.message_id).status().state == "queued"
    with pytest.raises(LookupError):
        run(message.message_id).result()
