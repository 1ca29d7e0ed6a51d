"""``python -m worker``: the ``dramatiq`` command, with worker processes that are replaced when they exit.

It takes dramatiq's own arguments (``python -m worker actors -Q media -p 1 -t 2``) and runs dramatiq's own
worker and fork processes; only the parent's loop is ours. Dramatiq 2.2.1's parent stops the whole command
when one worker process exits, and polls the wrong process while they boot. This one:

- replaces a worker process that exits while the command runs (it retired itself because an attempt would
  not stop at its hard limit — exit code ``EXIT_STUCK`` —, it crashed, or it was killed) within about a
  second, while the other processes go on working; a process that keeps failing at start-up is restarted
  with a growing pause, and an import error stops the command as dramatiq does;
- waits for each worker process's own boot event;
- makes every child stop when the parent dies (``PR_SET_PDEATHSIG`` plus a watchdog thread that ends the
  child ``ORPHAN_EXIT_AFTER`` seconds after the parent is gone), so no orphan keeps working or holds the
  metrics port.

SIGTERM and SIGINT stop the children gracefully, as with dramatiq. SIGHUP stops them too but does not
re-exec the command, and ``--watch`` is refused: use plain ``dramatiq --watch`` while developing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import dramatiq
from dramatiq import cli as dramatiq_cli
from dramatiq.canteen import Canteen, canteen_get
from dramatiq.compat import StreamablePipe, file_or_stderr

from middleware.time_limit import EXIT_STUCK

#: The dramatiq whose ``cli.main`` this module's loop stands in for; its worker and fork process
#: functions, argument parser and canteen are used as they are.
DRAMATIQ_VERSION = "2.2.1"
if dramatiq.__version__ != DRAMATIQ_VERSION:  # pragma: no cover - a guard for upgrades
    raise ImportError(
        f"worker.py re-implements dramatiq {DRAMATIQ_VERSION}'s command loop, but dramatiq "
        f"{dramatiq.__version__} is installed: check dramatiq/cli.py's main() and update worker.py"
    )

#: How long a child outlives its parent, at most (seconds).
ORPHAN_EXIT_AFTER = 1.5
#: Exit codes after which restarting cannot help: the command stops, as dramatiq's does.
FATAL_EXIT_CODES = frozenset({dramatiq_cli.RET_IMPORT, dramatiq_cli.RET_PIDFILE})

_PR_SET_PDEATHSIG = 1

logger = logging.getLogger("dramatiq.Supervisor")


def _die_with_parent(parent_pid: int) -> None:
    """In a child: stop when the parent process goes away, even if it was SIGKILLed."""
    with contextlib.suppress(OSError, AttributeError):
        # The kernel sends SIGTERM the moment the parent dies: dramatiq's handler starts a graceful stop.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(dramatiq_cli.RET_KILLED)

    def watch() -> None:
        # A graceful stop may wait for long jobs; an orphan gets ORPHAN_EXIT_AFTER, then goes. Its
        # unacknowledged messages return to their queues after the heartbeat timeout.
        while os.getppid() == parent_pid:
            time.sleep(0.1)
        time.sleep(ORPHAN_EXIT_AFTER)
        os._exit(dramatiq_cli.RET_KILLED)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker_child(parent_pid: int, *args: Any) -> None:
    _die_with_parent(parent_pid)
    dramatiq_cli.worker_process(*args)


def _fork_child(parent_pid: int, *args: Any) -> None:
    _die_with_parent(parent_pid)
    dramatiq_cli.fork_process(*args)


@dataclass
class _Slot:
    """One worker process position: the process in it now, and how its predecessors fared."""

    worker_id: int
    process: Any = None
    event: Any = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)


class _Logs:
    """Copies every child's log pipe to the log file; pipes can be added while it runs."""

    def __init__(self, log_file: str | None) -> None:
        self.log_file = log_file
        self.pipes: list[Any] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="log-watcher", daemon=False)

    def add(self, pipe: Any) -> None:
        with self.lock:
            self.pipes.append(pipe)

    def _run(self) -> None:
        with file_or_stderr(self.log_file, mode="a", encoding="utf-8") as out:
            while not self.stop.is_set() or self._pending():
                with self.lock:
                    self.pipes = [pipe for pipe in self.pipes if not pipe.closed]
                    pipes = list(self.pipes)
                if not pipes:
                    time.sleep(0.1)
                    continue
                try:
                    ready = multiprocessing.connection.wait(pipes, timeout=0.2)
                except OSError:
                    continue
                for ready_pipe in ready:
                    pipe: Any = ready_pipe
                    try:
                        while pipe.poll():
                            out.write(pipe.recv_bytes().decode("utf-8", errors="replace"))
                            out.flush()
                    except (EOFError, OSError):
                        pipe.close()

    def _pending(self) -> bool:
        with self.lock:
            pipes = [pipe for pipe in self.pipes if not pipe.closed]
        try:
            return bool(pipes) and bool(multiprocessing.connection.wait(pipes, timeout=0))
        except OSError:
            return False


class Supervisor:
    """The parent of one worker command's processes."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.pid = os.getpid()
        self.canteen = multiprocessing.Value(Canteen)
        self.logs = _Logs(args.log_file)
        self.slots = [_Slot(worker_id) for worker_id in range(args.processes)]
        self.forks: list[tuple[str, Any]] = []
        self.running = True
        self.retcode = dramatiq_cli.RET_OK

    def _start_worker(self, slot: _Slot) -> None:
        read_pipe, write_pipe = multiprocessing.Pipe(duplex=False)
        slot.event = multiprocessing.Event()
        slot.process = multiprocessing.Process(
            target=_worker_child,
            args=(self.pid, self.args, slot.worker_id, StreamablePipe(write_pipe), self.canteen, slot.event),
            daemon=False,
        )
        slot.process.start()
        slot.started = time.monotonic()
        slot.restart_at = None
        self.logs.add(read_pipe)
        write_pipe.close()

    def _start_fork(self, fork_id: int, fork_path: str) -> Any:
        read_pipe, write_pipe = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.Process(
            target=_fork_child,
            args=(self.pid, self.args, fork_id, fork_path, StreamablePipe(write_pipe)),
            daemon=True,
        )
        process.start()
        self.logs.add(read_pipe)
        write_pipe.close()
        return process

    def _signal_children(self, signum: int) -> None:
        for process in chain((slot.process for slot in self.slots), (process for _, process in self.forks)):
            if process is not None and process.exitcode is None:
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signum)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            signum = signal.SIGTERM
        logger.info("Sending signal %r to subprocesses...", signal.Signals(signum).name)
        self.running = False
        self._signal_children(signum)

    def run(self) -> int:
        dramatiq_cli.try_block_signals()
        for slot in self.slots:
            self._start_worker(slot)
        # Each process's own boot event (dramatiq 2.2.1 checks the last-started process for all of them).
        for slot in self.slots:
            if slot.process.is_alive():
                slot.event.wait(timeout=self.args.worker_fork_timeout / 1000)
        for fork_id, fork_path in enumerate(chain(self.args.forks, canteen_get(self.canteen))):
            self.forks.append((fork_path, self._start_fork(fork_id, fork_path)))

        parent_read, parent_write = multiprocessing.Pipe(duplex=False)
        self.logs.add(parent_read)
        dramatiq_cli.setup_parent_logging(self.args, stream=StreamablePipe(parent_write))
        logger.info("Dramatiq %r is booting up under the platform's supervisor.", dramatiq.__version__)
        self.logs.thread.start()
        for sig in dramatiq_cli.HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        dramatiq_cli.try_unblock_signals()

        try:
            self._loop()
        finally:
            self.logs.stop.set()
            self.logs.thread.join(10)
        return dramatiq_cli.RET_KILLED if self.retcode < 0 else self.retcode

    def _loop(self) -> None:
        while True:
            alive = False
            for slot in self.slots:
                process = slot.process
                if process is not None and process.exitcode is None:
                    process.join(timeout=0.1)
                if process is not None and process.exitcode is None:
                    alive = True
                    continue
                if not self.running:
                    if process is not None:
                        self.retcode = self.retcode or process.exitcode
                        slot.process = None
                    continue
                alive = True
                if process is not None:
                    self._exited(slot, process.exitcode)
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self._start_worker(slot)
            for index, (fork_path, process) in enumerate(self.forks):
                if self.running and process.exitcode is not None:
                    logger.warning("Fork %r exited (code %r); starting it again.", fork_path, process.exitcode)
                    self.forks[index] = (fork_path, self._start_fork(index, fork_path))
            if not alive:
                return
            if not self.running:
                time.sleep(0.05)

    def _exited(self, slot: _Slot, code: int) -> None:
        slot.process = None
        slot.exit_codes.append(code)
        if code in FATAL_EXIT_CODES:
            logger.critical("Worker process %d could not start (code %r). Shutting down...", slot.worker_id, code)
            self.retcode = code
            self.running = False
            self._signal_children(signal.SIGTERM)
            return
        # Only a process that died before it was ready counts as failing to start: one that served and
        # then died (or retired) is replaced at once, however often that happens.
        booted = slot.event is not None and slot.event.is_set()
        slot.failures = 0 if booted and time.monotonic() - slot.started > 1.0 else slot.failures + 1
        pause = 0.0 if slot.failures <= 1 else min(2.0 ** (slot.failures - 1), 30.0)
        reason = "it retired: an attempt would not stop at its hard time limit" if code == EXIT_STUCK else "it died"
        logger.critical(
            "Worker process %d exited with code %r (%s); starting another in %.0f s.",
            slot.worker_id,
            code,
            reason,
            pause,
        )
        slot.restart_at = time.monotonic() + pause


def main(argv: Sequence[str] | None = None) -> int:
    args = dramatiq_cli.make_argument_parser().parse_args(argv)
    for path in args.path:
        sys.path.insert(0, path)
    if args.watch:
        with file_or_stderr(args.log_file) as stream:
            dramatiq_cli.setup_parent_logging(args, stream=stream).critical(
                "--watch is not supported here; use `dramatiq --watch` while developing."
            )
        return dramatiq_cli.RET_IMPORT
    if args.use_spawn:
        multiprocessing.set_start_method("spawn")
    if args.pid_file:
        try:
            dramatiq_cli.setup_pidfile(args.pid_file)
        except RuntimeError as error:
            with file_or_stderr(args.log_file) as stream:
                dramatiq_cli.setup_parent_logging(args, stream=stream).critical(error)
            return dramatiq_cli.RET_PIDFILE
    try:
        return Supervisor(args).run()
    finally:
        if args.pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.remove(args.pid_file)


if __name__ == "__main__":
    sys.exit(main())
