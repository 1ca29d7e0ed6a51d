"""`make demo`'s main job, end to end: embedded Redis, a real worker and scheduler, every pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_every_pipeline_on_embedded_defaults_and_stops_what_it_started(tmp_path):
    # Given a machine state with nothing configured: an embedded Redis and a fresh SQLite file
    env = {
        **os.environ,
        "REDIS_URL": "embedded",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'platform.db'}",
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "CACHE_DIR": str(tmp_path / "var" / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("METRICS_DIR", None)

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
    summary = result.stdout.split("job       actor", 1)[1]
    for actor in ("health_check", "extract_document", "embed_document", "transcribe_media", "import_prices"):
        assert actor in summary
    assert " failed " not in summary and " dead " not in summary
    assert "metrics: http://" in result.stdout
    assert _processes_started_with(env["VAR_DIR"]) == []


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
