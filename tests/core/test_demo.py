"""`make demo`'s main job, end to end: embedded Redis, a real worker and scheduler, every pipeline."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _ctrl_c_delivered() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _fresh_machine_env(tmp_path: Path) -> dict[str, str]:
    """Nothing configured: an embedded Redis and a fresh SQLite file, all under ``tmp_path``."""
    env = {
        **os.environ,
        "REDIS_URL": "embedded",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'platform.db'}",
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "CACHE_DIR": str(tmp_path / "var" / "cache"),
        "BACKUPS_DIR": str(tmp_path / "var" / "backups"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("METRICS_DIR", None)
    return env


def test_the_demo_runs_every_pipeline_on_embedded_defaults_and_stops_what_it_started(tmp_path):
    # Given a machine state with nothing configured: an embedded Redis and a fresh SQLite file
    env = _fresh_machine_env(tmp_path)

    # When the demo runs to its summary
    result = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--no-linger", "--processes", "1", "--threads", "4", "--timeout", "400"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    # Then every job it sent succeeded, the summary names each domain, and nothing is left running
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # The worker is the supervised command deployments run, which replaces a worker process that dies
    assert "started worker: python -m worker actors" in result.stdout
    # The summary is one line per run, with its steps (children) by state
    summary = result.stdout.split("\nrun ", 1)[1]
    for actor in (
        "health_check",
        "extract_document",
        "transcribe_media",
        "import_prices",
        "refresh_assets",
        "extract_trading_strategy",
        "collect_all_sources",
    ):
        assert actor in summary
    # the market refresh with every asset's indicators, signals and chart, the documents with their steps
    assert re.search(r"refresh_assets\s+succeeded\s+\d+ succeeded", summary), summary
    assert re.search(r"extract_document\s+succeeded\s+3 succeeded", summary), summary
    # and the collection demo fetched its fixtures from the local server and printed the trends
    assert "collection run" in result.stdout and "succeeded" in result.stdout.split("collection run", 1)[1]
    assert "rust compiler" in result.stdout and "demo-reddit" in result.stdout
    assert " failed " not in summary and " dead " not in summary
    assert "metrics: http://" in result.stdout
    assert _processes_started_with(env["VAR_DIR"]) == []


def test_ctrl_c_on_the_demo_piped_into_tee_stops_the_worker_and_the_scheduler(tmp_path):
    # Given `python -m cli demo | tee demo.log` in a process group of its own, as `make demo | tee
    # demo.log` runs in a terminal, with the worker and the scheduler started
    env = _fresh_machine_env(tmp_path)
    log = tmp_path / "demo.log"
    demo = [sys.executable, "-m", "cli", "demo", "--linger", "--processes", "1", "--threads", "2"]
    shell = subprocess.Popen(
        ["bash", "-c", f"{shlex.join(demo)} | tee {shlex.quote(str(log))} >/dev/null"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        # A terminal delivers Ctrl-C; whoever ran this suite in the background (`cmd &`, nohup) left
        # SIGINT ignored, and every child would inherit that.
        preexec_fn=_ctrl_c_delivered,
    )
    try:
        # (the Ctrl-C comes while the demo follows its jobs, where a person watching it presses it)
        wait_until(lambda: log.exists() and "following them" in log.read_text(), timeout=600)
        worker_and_scheduler = wait_until(lambda: len(_worker_and_scheduler(env["VAR_DIR"])) >= 2, timeout=120)

        # When Ctrl-C reaches the whole pipeline: tee dies at once, so the demo's pipe is closed
        os.killpg(shell.pid, signal.SIGINT)
        shell.wait(timeout=300)

        # Then the worker (with its forked processes) and the scheduler are gone, and so is everything
        # else the demo started
        assert worker_and_scheduler
        wait_until(lambda: not _worker_and_scheduler(env["VAR_DIR"]), timeout=60)
        wait_until(lambda: _processes_started_with(env["VAR_DIR"]) == [], timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        _kill_processes_started_with(env["VAR_DIR"])


def _worker_and_scheduler(var_dir: str) -> list[str]:
    return [
        cmdline
        for cmdline in _processes_started_with(var_dir)
        if " actors " in f"{cmdline} " or "scheduler.py" in cmdline
    ]


def _kill_processes_started_with(var_dir: str) -> None:
    """SIGKILL what a failed run left behind (only processes that carry this test's own var dir)."""
    marker = var_dir.encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (proc / "environ").read_bytes() or marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


def _processes_started_with(var_dir: str) -> list[str]:
    """Processes still alive whose environment or command line names this demo's var dir."""
    marker = var_dir.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes() or marker in (proc / "cmdline").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found
