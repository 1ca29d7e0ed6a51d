"""The embedded Redis keeps its data on disk: queued and delayed jobs survive a restart of the server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis

from tests.core.process_support import (
    embedded_env,
    job_rows,
    kill,
    port_answers,
    process_gone,
    registry,
    run_python,
    send_counts,
    start_worker,
    stop,
)
from tests.support import wait_until

DEPTHS = """
    import json
    import actors
    from broker import redis_client_for
    client = redis_client_for(actors.broker)
    print(json.dumps({"ready": client.llen("dramatiq:default"), "delayed": client.hlen("dramatiq:default.DQ.msgs")}))
"""


def _server_stopped(env: dict[str, str], port: int, pid: int) -> None:
    wait_until(lambda: process_gone(pid), 120)
    assert not port_answers(port)
    assert registry(env) == {}


def test_queued_and_delayed_jobs_survive_a_restart_of_the_embedded_redis(tmp_path):
    env = embedded_env(tmp_path)
    key = f"test:{uuid.uuid4().hex}"
    # Given three queued and two delayed jobs, sent by processes that started the embedded Redis
    queued = send_counts(env, key, 3)
    delayed = send_counts(env, f"{key}:later", 2, delay=2_000)
    # When the last of them exits, the server stops, leaving its append-only file under var/
    assert registry(env) == {}
    assert any((Path(env["VAR_DIR"]) / "embedded-redis").glob("*.aof"))

    # Then a new server started on the same files still holds every message
    depths = json.loads(run_python(env, DEPTHS).strip().splitlines()[-1])
    assert depths == {"ready": 3, "delayed": 2}

    # And a worker started afterwards (on yet another start of the server) runs them all
    worker = start_worker(env, tmp_path / "worker.log", "-p", "1", "-t", "2", "-Q", "default")
    try:
        server = wait_until(lambda: registry(env).get("pid") and registry(env), 60)
        client = redis.Redis(port=server["port"])
        wait_until(lambda: client.scard(key) == 3 and client.scard(f"{key}:later") == 2, 60)
        stop(worker)
    finally:
        kill(worker)
    assert job_rows(env, queued + delayed) == dict.fromkeys(queued + delayed, ("succeeded", 1))
    _server_stopped(env, server["port"], server["pid"])
