"""The chaos suite at a small size: the real worker command, its own Redis and job table, processes killed.

Each scenario runs ``bench.chaos`` (the benchmark prints the same figures at the issue's sizes). Nothing
here uses the shared Redis: every scenario starts a ``redis-server`` of its own, so stopping it is safe.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import chaos

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "docker" / "systemd" / "taskforge-worker.service"


@pytest.fixture
def running() -> Iterator[chaos.Stack]:
    # A short heartbeat so a killed process's messages come back quickly; the mechanism is the same.
    with chaos.stack(heartbeat_ms=3_000) as own:
        yield own


def test_worker_processes_sigkilled_in_turn_lose_no_job_and_leave_no_row_running(running):
    # When 300 jobs run while a worker process, then the parent, is SIGKILLed: at a third and at two thirds
    # of the run (the jobs past each point wait for its kill), then every 2-3 s until the run ends
    result = chaos.scenario_kills(running, 300, (2.0, 3.0), seconds=0.02, timeout=600)

    # Then every job ran, each duplicate is counted, and every row ended succeeded
    assert result.lost == 0, result.as_dict()
    assert result.completed == 300
    # (the whole figure set as text: pytest shortens a dict in the summary, and the notes say what happened)
    assert result.states == {"succeeded": 300}, json.dumps(result.as_dict())
    assert result.extra_runs >= result.ran_twice >= 0
    kills = next(note.split() for note in result.notes if note.endswith("parents SIGKILLed"))
    assert int(kills[0]) >= 1 and int(kills[4]) >= 1, result.notes


def test_redis_stopped_and_started_again_twice_loses_no_job_and_the_workers_reconnect(running):
    # When Redis is stopped with SIGTERM, then with SIGKILL, mid-run, and started again each time
    result = chaos.scenario_redis(running, 300, seconds=0.02, down_s=2.0, timeout=600)

    # Then the worker command went on by itself after each outage, never restarted, and every job ran and
    # ended succeeded (those fetched around an outage too: they go back from the live process's ack set)
    assert result.lost == 0, result.as_dict()
    assert result.states == {"succeeded": 300}, result.as_dict()
    assert len(result.recover_s) == 2
    assert any(note.startswith("worker command still up") for note in result.notes), result.notes


@pytest.mark.parametrize(("job_seconds", "shutdown_ms"), [(2.0, 30_000), (20.0, 2_000)])
def test_sigterm_to_a_busy_worker_finishes_or_requeues_its_long_jobs(running, job_seconds, shutdown_ms):
    # When a worker running four long jobs (four more prefetched) gets SIGTERM, with jobs shorter and
    # longer than its shutdown timeout
    result = chaos.scenario_sigterm(running, 8, job_seconds, shutdown_ms, timeout=600)

    # Then none is lost and every row ended succeeded: finished before the stop, or run by the next worker
    assert result.lost == 0, result.as_dict()
    assert result.states == {"succeeded": 8}, result.as_dict()
    parts = result.notes[0].split("; ")
    finished_before, started_before = int(parts[1].split()[0]), int(parts[3].split()[0])
    # (what the stopped worker recorded: it finished only jobs it had started, and it had started the four
    # the scenario waited for; whatever it did not finish ran on the next worker, as lost == 0 says)
    assert started_before >= 4 and 0 <= finished_before <= started_before, result.notes


def test_poison_messages_fail_with_a_reason_and_the_worker_stays_up(running):
    _, outcome = chaos.scenario_poison(running)

    assert outcome["malformed_json_dead_lettered"] is True
    assert outcome["oversized_send"] == "refused: MessageTooLarge"
    rows = outcome["rows"]
    assert (rows["unknown_actor"]["state"], rows["unknown_actor"]["error_type"]) == ("dead", "ActorNotFound")
    assert (rows["oversized_raw"]["state"], rows["oversized_raw"]["error_type"]) == ("failed", "MessageTooLarge")
    assert (rows["wrong_types"]["state"], rows["wrong_types"]["error_type"]) == ("failed", "ArgumentMismatch")
    for row in rows.values():
        assert row["attempts"] == 1 and "\n" not in row["error_message"]
    assert outcome["next_job"] == "succeeded"
    assert outcome["worker_processes_unchanged"] is True and outcome["command_up"] is True


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_the_systemd_unit_restarts_the_worker_and_stops_it_gracefully():
    service = _unit()["Service"]
    assert service["ExecStart"].split()[1:3] == ["-m", "worker"]
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "always"
    words = service["ExecStart"].split()
    shutdown_ms = int(words[words.index("--worker-shutdown-timeout") + 1])
    assert int(service["TimeoutStopSec"]) * 1000 > shutdown_ms
    assert _unit()["Unit"]["StartLimitIntervalSec"] == "0"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # The unit names /opt/taskforge; here it points at this checkout, whose .venv python exists.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/taskforge", str(ROOT)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
