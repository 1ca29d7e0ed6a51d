"""The HTTP API against a real uvicorn server (``cli serve``) with real workers behind it."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import httpx
import pytest

from settings import QUEUES
from tests.support import wait_until
from tests.web.conftest import ROOT, start_server, stop_server


def wait_for_state(api: httpx.Client, job_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        response = api.get(f"/api/v1/jobs/{job_id}")
        if response.status_code == 200 and response.json()["state"] in states:
            return response.json()  # type: ignore[no-any-return]
        return None

    return wait_until(reached, timeout=timeout, interval=0.1)


def delayed_ids(redis_client: Any, queue: str = "default") -> set[str]:
    """Message ids in a delay queue (its hash is keyed by Redis's own ids)."""
    from dramatiq import Message

    return {Message.decode(data).message_id for data in redis_client.hvals(f"dramatiq:{queue}.DQ.msgs")}


def enqueued_everywhere(redis_client: Any) -> tuple[int, int]:
    """Messages waiting in every queue (ready and delayed), and rows in the job table."""
    from sqlalchemy import func, select

    from middleware.job_status import flush
    from storage.db import session_scope
    from storage.models import Job

    flush()
    waiting = sum(redis_client.llen(f"dramatiq:{q}") + redis_client.hlen(f"dramatiq:{q}.DQ.msgs") for q in QUEUES)
    with session_scope() as session:
        rows = session.scalar(select(func.count()).select_from(Job)) or 0
    return waiting, rows


def test_a_submitted_job_runs_on_a_worker_and_its_row_is_served(server, api, worker):
    # Given a running server and worker
    # When a client submits a job
    response = api.post("/api/v1/jobs", json={"actor": "add", "args": [2, 3]})

    # Then it gets the job id at once, and the job ends succeeded with its result
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    job = wait_for_state(api, job_id, "succeeded")
    assert job["actor"] == "add" and job["queue"] == "default"
    assert json.loads(job["result"]) == {"sum": 5}
    assert job["attempts"] == 1 and job["progress"] == 100.0
    assert job["children"] == []


def test_urgent_and_delayed_submits_take_their_options(server, api, redis_client):
    # Given no worker running
    # When one job is sent urgent and another delayed
    urgent = api.post("/api/v1/jobs", json={"actor": "add", "args": [1, 1], "options": {"urgent": True}})
    delayed = api.post("/api/v1/jobs", json={"actor": "add", "args": [1, 2], "options": {"delay": 600_000}})

    # Then the urgent one waits on the priority queue and the delayed one in the delay queue
    assert urgent.status_code == 200 and delayed.status_code == 200
    assert api.get(f"/api/v1/jobs/{urgent.json()['id']}").json()["queue"] == "priority"
    assert delayed.json()["id"] in delayed_ids(redis_client)
    # And the queues say so, with the age of the oldest ready message
    depths = {row["queue"]: row for row in api.get("/api/v1/queues").json()}
    assert depths["priority"]["ready"] >= 1 and depths["priority"]["oldest_ms"] >= 0
    assert depths["default"]["delayed"] >= 1
    redis_client.delete("dramatiq:priority", "dramatiq:default.DQ", "dramatiq:default.DQ.msgs")


BAD_REQUESTS = [
    # (what, method, path, body, headers, status, words in the detail)
    ("unknown actor", "post", "/api/v1/jobs", {"actor": "no_such_actor"}, None, 400, "unknown actor 'no_such_actor'"),
    ("wrong type", "post", "/api/v1/jobs", {"actor": "add", "args": ["two", 3]}, None, 400, "argument 'a' must be int"),
    (
        "missing argument",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": [1]},
        None,
        400,
        "missing a required argument",
    ),
    (
        "unknown keyword",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": [1, 2], "kwargs": {"c": 1}},
        None,
        400,
        "unexpected keyword",
    ),
    (
        "args not a list",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": "1,2"},
        None,
        422,
        "args: Input should be a valid list",
    ),
    (
        "unknown field",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "queue": "x"},
        None,
        422,
        "queue: Extra inputs are not permitted",
    ),
    (
        "unknown option",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": [1, 2], "options": {"eta": 1}},
        None,
        400,
        "unknown option 'eta'",
    ),
    (
        "negative delay",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": [1, 2], "options": {"delay": -1}},
        None,
        400,
        "'delay' must be milliseconds",
    ),
    ("not JSON", "post", "/api/v1/jobs", "{not json", None, 422, "JSON decode error"),
    (
        "missing token",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": [1, 2]},
        {"Authorization": ""},
        401,
        "writes need Authorization: Bearer",
    ),
    (
        "wrong token",
        "post",
        "/api/v1/jobs",
        {"actor": "add", "args": [1, 2]},
        {"Authorization": "Bearer nope"},
        401,
        "wrong bearer token",
    ),
    ("unknown job", "get", "/api/v1/jobs/00000000-0000-0000-0000-000000000000", None, None, 404, "no job with id"),
    ("cancel unknown job", "post", "/api/v1/jobs/nope/cancel", None, None, 404, "no job with id 'nope'"),
    ("retry unknown job", "post", "/api/v1/jobs/nope/retry", None, None, 404, "no job with id 'nope'"),
    ("bad job id", "get", "/api/v1/jobs/a%20b", None, None, 422, "String should match pattern"),
    ("bad state filter", "get", "/api/v1/jobs?state=sleeping", None, None, 400, "state must be one of"),
    ("bad queue filter", "get", "/api/v1/jobs?queue=nowhere", None, None, 400, "unknown queue 'nowhere'"),
    ("bad since", "get", "/api/v1/jobs?since=yesterday", None, None, 400, "since must look like 30m"),
    ("bad cursor", "get", "/api/v1/jobs?after=Zm9v", None, None, 400, "cursor is not one this API returned"),
    (
        "page too big",
        "get",
        "/api/v1/jobs?limit=100000",
        None,
        None,
        422,
        "limit: Input should be less than or equal to 500",
    ),
    (
        "document outside the root",
        "post",
        "/api/v1/documents",
        {"path": "../../etc/passwd"},
        None,
        400,
        "outside the storage root",
    ),
    (
        "absolute document outside the root",
        "post",
        "/api/v1/documents",
        {"path": "/etc/hostname"},
        None,
        400,
        "outside the storage root",
    ),
    ("missing document", "post", "/api/v1/documents", {"path": "nothing-here.pdf"}, None, 404, "does not exist"),
    (
        "video outside the root",
        "post",
        "/api/v1/videos",
        {"source": "../clip.mp4"},
        None,
        400,
        "outside the storage root",
    ),
    ("unknown asset", "post", "/api/v1/market/refresh", {"asset_id": 987654}, None, 404, "asset 987654 does not exist"),
    (
        "unknown dead letter",
        "post",
        "/api/v1/dead-letters/replay",
        {"ids": ["nope"]},
        None,
        404,
        "not in the dead-letter queues: nope",
    ),
    (
        "unknown queue to purge",
        "post",
        "/api/v1/dead-letters/purge",
        {"queue": "nowhere"},
        None,
        400,
        "unknown queue 'nowhere'",
    ),
    ("unknown document", "get", "/api/v1/documents/424242", None, None, 404, "no document with id 424242"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "words"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_is_a_4xx_with_one_readable_line_and_nothing_is_enqueued(
    server, api, redis_client, method, path, body, headers, status, words
):
    # Given the queues and the job table as they stand
    before = enqueued_everywhere(redis_client)

    # When a bad request arrives
    kwargs: dict[str, Any] = {"headers": headers} if headers else {}
    if isinstance(body, str):
        kwargs["content"] = body
        kwargs["headers"] = {**(headers or {}), "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    response = getattr(api, method)(path, **kwargs)

    # Then it is refused with one line that says why, and nothing was sent or recorded
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
    assert enqueued_everywhere(redis_client) == before


def test_a_body_over_the_cap_is_refused_before_it_is_read(server, api, redis_client):
    # Given the default cap of 1 MiB
    before = enqueued_everywhere(redis_client)
    body = json.dumps({"actor": "add", "args": ["x" * (2 * 1024 * 1024), 1]})

    # When a larger body is posted, with and without a declared length
    declared = api.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    streamed = api.post(
        "/api/v1/jobs",
        content=iter([body[i : i + 65536].encode() for i in range(0, len(body), 65536)]),
        headers={"Content-Type": "application/json"},
    )

    # Then both are 413 with one line, and nothing was enqueued
    for response in (declared, streamed):
        assert response.status_code == 413
        assert "over the 1048576-byte limit" in response.json()["detail"]
    assert enqueued_everywhere(redis_client) == before


def test_jobs_are_filtered_and_paged_newest_first_with_a_cursor(server, api, worker):
    # Given seven finished jobs of one actor and one failure of another
    ids = [api.post("/api/v1/jobs", json={"actor": "add", "args": [i, i]}).json()["id"] for i in range(7)]
    failed = api.post("/api/v1/jobs", json={"actor": "reject", "args": ["not a PDF"]}).json()["id"]
    for job_id in [*ids, failed]:
        wait_for_state(api, job_id, "succeeded", "failed")

    # When the jobs of that actor are read three at a time
    pages, after = [], None
    while True:
        params: dict[str, Any] = {"actor": "add", "since": "1h", "limit": 3, **({"after": after} if after else {})}
        page = api.get("/api/v1/jobs", params=params).json()
        pages.append([job["id"] for job in page["jobs"]])
        after = page["next"]
        if after is None:
            break

    # Then every job comes exactly once, newest first, and other actors stay out
    seen = [job_id for page in pages for job_id in page]
    assert set(ids) <= set(seen) and len(seen) == len(set(seen)) and failed not in seen
    mine = [job_id for job_id in seen if job_id in ids]
    assert mine == list(reversed(ids)) or sorted(mine) == sorted(ids)
    assert all(len(page) <= 3 for page in pages)
    # And a state filter finds the failure only
    failures = api.get("/api/v1/jobs", params={"state": "failed", "actor": "reject"}).json()["jobs"]
    assert failed in [job["id"] for job in failures]
    assert all(job["state"] == "failed" for job in failures)


def test_a_failed_job_has_its_error_and_traceback_and_a_retry_is_linked_to_it(server, api, worker):
    # Given a job that failed on bad input
    job_id = api.post("/api/v1/jobs", json={"actor": "reject", "args": ["the file is not a PDF"]}).json()["id"]
    job = wait_for_state(api, job_id, "failed")

    # Then its row says why, with the traceback
    assert job["error_type"] == "InvalidArgument" and job["error_message"] == "the file is not a PDF"
    assert "Traceback" in job["traceback"] and "raise InvalidArgument(reason)" in job["traceback"]

    # When it is retried
    retried = api.post(f"/api/v1/jobs/{job_id}/retry")

    # Then a new job runs with the same arguments, its parent the original, which lists it as a child
    assert retried.status_code == 200, retried.text
    fresh = wait_for_state(api, retried.json()["id"], "failed")
    assert fresh["parent_id"] == job_id and fresh["error_message"] == "the file is not a PDF"
    assert [child["id"] for child in api.get(f"/api/v1/jobs/{job_id}").json()["children"]] == [fresh["id"]]
    # And a job that succeeded is not retried
    done = api.post("/api/v1/jobs", json={"actor": "add", "args": [1, 1]}).json()["id"]
    wait_for_state(api, done, "succeeded")
    conflict = api.post(f"/api/v1/jobs/{done}/retry")
    assert conflict.status_code == 409 and "only failed or dead jobs are retried" in conflict.json()["detail"]


def test_a_job_shows_the_jobs_it_led_to_as_a_tree(server, api, worker):
    # Given a failure retried, and that retry retried again
    first = api.post("/api/v1/jobs", json={"actor": "reject", "args": ["bad"]}).json()["id"]
    wait_for_state(api, first, "failed")
    second = api.post(f"/api/v1/jobs/{first}/retry").json()["id"]
    wait_for_state(api, second, "failed")
    third = api.post(f"/api/v1/jobs/{second}/retry").json()["id"]
    wait_for_state(api, third, "failed")

    # When the first job is read
    tree = api.get(f"/api/v1/jobs/{first}").json()["children"]

    # Then its children hold the whole chain, each under the job it came from
    assert [node["id"] for node in tree] == [second]
    assert [node["id"] for node in tree[0]["children"]] == [third]
    assert tree[0]["children"][0]["children"] == []


def test_dead_letters_are_listed_replayed_as_new_jobs_and_purged(server, api, worker, redis_client):
    # Given a job that went dead after its retry
    key = f"web:{uuid.uuid4().hex}"
    dead_id = api.post("/api/v1/jobs", json={"actor": "fails_until_fixed", "args": [key]}).json()["id"]
    assert wait_for_state(api, dead_id, "dead")["attempts"] == 2
    failed = api.get(f"/api/v1/jobs/{dead_id}").json()["failed_attempts"]
    assert [(a["attempt"], a["state"]) for a in failed] == [(1, "retrying"), (2, "dead")]
    assert all(a["error_message"] and "Traceback" in a["traceback"] for a in failed)
    wait_until(lambda: dead_id in [d["message_id"] for d in api.get("/api/v1/dead-letters").json()], timeout=10)

    # When the cause is fixed and the dead letter replayed
    redis_client.set(f"{key}:fixed", 1)
    replay = api.post("/api/v1/dead-letters/replay", json={"ids": [dead_id]})

    # Then it runs again as a new job linked to the dead one, and succeeds
    assert replay.status_code == 200, replay.text
    [pair] = replay.json()["replayed"]
    assert pair["dead"] == dead_id
    fresh = wait_for_state(api, pair["id"], "succeeded")
    assert fresh["parent_id"] == dead_id and fresh["result"] == '"fixed"'
    assert dead_id not in [d["message_id"] for d in api.get("/api/v1/dead-letters").json()]

    # And purging empties the dead-letter queues
    other = api.post("/api/v1/jobs", json={"actor": "fails_until_fixed", "args": [f"{key}-2"]}).json()["id"]
    wait_for_state(api, other, "dead")
    wait_until(lambda: api.get("/api/v1/dead-letters?queue=default").json(), timeout=10)
    purged = api.post("/api/v1/dead-letters/purge", json={"queue": "default"})
    assert purged.status_code == 200 and purged.json()["purged"] >= 1
    assert api.get("/api/v1/dead-letters?queue=default").json() == []


def test_a_queued_job_is_cancelled_and_never_runs(server, api, worker, redis_client):
    # Given a job that waits in the delay queue
    job_id = api.post("/api/v1/jobs", json={"actor": "add", "args": [1, 2], "options": {"delay": 1_500}}).json()["id"]
    assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "queued"

    # When it is cancelled
    response = api.post(f"/api/v1/jobs/{job_id}/cancel")

    # Then the request is recorded at once, and the worker that takes the job skips it: it ends
    # cancelled without ever starting
    assert response.status_code == 200 and response.json()["outcome"] in {"cancelled", "cancelling"}
    assert api.get(f"/api/v1/jobs/{job_id}").json()["cancel_requested_at"] is not None
    wait_until(lambda: api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "cancelled", timeout=60)
    wait_until(lambda: job_id not in delayed_ids(redis_client), timeout=30)
    wait_until(lambda: redis_client.llen("dramatiq:default") == 0, timeout=30)
    job = api.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["started_at"] is None
    # And cancelling it again says how it ended
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").json()["outcome"] == "cancelled"


def test_the_event_stream_follows_one_job_through_its_progress(server, api, worker, redis_client):
    # Given a job that reports progress in four steps the test releases one by one
    key = f"web:{uuid.uuid4().hex}"
    job_id = api.post("/api/v1/jobs", json={"actor": "steps", "args": [key, 4]}).json()["id"]

    # When a client follows its events
    received: list[tuple[str, dict[str, Any]]] = []
    with api.stream("GET", "/api/v1/events", params={"job": job_id}, timeout=60) as stream:
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                received.append((name, event))
                step = round(event["progress"] / 25)
                redis_client.set(f"{key}:go", step + 1)
                if name == "succeeded":
                    break

    # Then it sees the job start, its progress climb step by step, and its end, in that order
    names = [name for name, _ in received]
    assert "started" in names and names[-1] == "succeeded"
    progress = [event["progress"] for name, event in received if name == "started"]
    assert progress == sorted(progress) and {25.0, 50.0, 75.0} <= set(progress)
    assert all(event["id"] == job_id for _, event in received)
    assert "traceback" not in received[-1][1]


def test_queues_workers_and_schedules_describe_the_platform(server, api, worker):
    # When an operator reads queues, workers and schedules
    queues = api.get("/api/v1/queues").json()
    workers = wait_until(lambda: api.get("/api/v1/workers").json(), timeout=20)
    schedules = api.get("/api/v1/schedules").json()

    # Then every queue is there with its depths, this process's worker is alive, and periodic actors
    # are listed with their next fire
    assert [row["queue"] for row in queues] == list(QUEUES)
    assert {"ready", "delayed", "dead", "oldest_ms"} <= set(queues[0])
    assert any(row["pid"] == os.getpid() and row["alive"] for row in workers)
    health = next(row for row in schedules if row["actor"] == "health_check")
    assert health["enabled"] and health["next_fire_at"] and health["cron"]
    assert all(isinstance(row["misfires"], int) for row in schedules)


def test_the_openapi_schema_lists_the_api(server, api):
    schema = api.get("/api/v1/openapi.json").json()
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/events", "/api/v1/dead-letters/replay"} <= set(
        schema["paths"]
    )


def test_a_document_request_returns_the_run_handle_the_library_returns(server, api, storage_root):
    # Given a text file under the storage root
    (storage_root / "web-note.txt").write_text("Moving averages smooth prices.\n")

    # When a client asks for it to be ingested
    response = api.post("/api/v1/documents", json={"path": "web-note.txt"})

    # Then it gets the document id and the run id, whose first job is queued
    assert response.status_code == 200, response.text
    handle = response.json()
    assert handle["document_id"] >= 1 and handle["run_id"]
    assert api.get(f"/api/v1/jobs/{handle['run_id']}").json()["actor"] == "extract_document"
    assert api.get(f"/api/v1/documents/{handle['document_id']}").json()["path"] == "web-note.txt"


def test_the_server_refuses_a_non_loopback_bind_without_a_token(tmp_path):
    import subprocess
    import sys

    # When the server is asked to bind every address with no API_TOKEN
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("API_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then it refuses with one line
    assert result.returncode == 1
    assert result.stderr.strip() == "error: refusing to serve on 0.0.0.0: a non-loopback address needs API_TOKEN"


def test_on_loopback_without_a_token_the_server_makes_one_only_its_owner_can_read(broker, tmp_path):
    import stat

    from settings import settings

    # Given no API_TOKEN and no token file
    (settings.var_dir / "api-token").unlink(missing_ok=True)

    # When the server starts on loopback
    running = start_server(tmp_path / "server.log", token=None)
    try:
        # Then it made a token file readable by its owner alone, and writes take that token
        path = settings.var_dir / "api-token"
        token = path.read_text().strip()
        assert len(token) >= 24 and stat.S_IMODE(path.stat().st_mode) == 0o600
        with running.client(token=token) as client:
            assert client.post("/api/v1/jobs/nope/cancel").status_code == 404
        with running.client(token="guess") as client:
            assert client.post("/api/v1/jobs/nope/cancel").status_code == 401
    finally:
        stop_server(running.process)
        (settings.var_dir / "api-token").unlink(missing_ok=True)


def test_off_loopback_every_read_needs_the_token(broker, tmp_path):
    # Given a server bound to every address, with a token
    running = start_server(tmp_path / "server.log", host="0.0.0.0")
    try:
        with httpx.Client(base_url=running.url, timeout=30) as anonymous:
            # When a client without the token reads
            api_read = anonymous.get("/api/v1/queues")
            page = anonymous.get("/jobs", follow_redirects=False)
            # Then the API says 401 and the console sends it to sign in
            assert api_read.status_code == 401 and api_read.json()["detail"] == "missing bearer token"
            assert page.status_code == 303 and page.headers["location"].startswith("/login")
            # And with the token, or a console session made with it, reads work
            assert (
                anonymous.get("/api/v1/queues", headers={"Authorization": f"Bearer {running.token}"}).status_code == 200
            )
            signed = anonymous.post("/login", data={"token": running.token, "next": "/jobs"}, follow_redirects=False)
            assert signed.status_code == 303
            assert anonymous.get("/jobs").status_code == 200
    finally:
        stop_server(running.process)


def test_console_forms_need_a_session_and_its_csrf_token(server, api):
    # Given a queued job
    job_id = api.post("/api/v1/jobs", json={"actor": "add", "args": [1, 2], "options": {"delay": 600_000}}).json()["id"]
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        # When a form is posted with no session, then with a session but no CSRF token
        anonymous = browser.post(f"/jobs/{job_id}/cancel", follow_redirects=False)
        browser.post("/login", data={"token": server.token}, follow_redirects=False)
        forged = browser.post(f"/jobs/{job_id}/cancel", data={"csrf_token": "forged"}, follow_redirects=False)

        # Then neither cancels anything
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
        assert forged.status_code == 403 and "CSRF token" in forged.json()["detail"]
        assert api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "queued"

        # And the page's own form, with its token, does
        page = browser.get(f"/jobs/{job_id}").text
        csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        done = browser.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
        assert done.status_code == 303
        # (no worker runs here: the request is recorded, and the worker that takes the job will skip it)
        assert api.get(f"/api/v1/jobs/{job_id}").json()["cancel_requested_at"] is not None
