"""A worker imports only what its queues run, and the docs list every setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "faster_whisper",
    "ctranslate2",
    "pandas",
    "sentence_transformers",
    "matplotlib",
    "ta",
    "yt_dlp",
    "anthropic",
    "openai",
)


def test_importing_every_actor_loads_no_heavy_library(broker):
    # Given a fresh interpreter that imports the actors package, as `dramatiq actors` does
    script = f"import sys, actors; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Then none of the heavy libraries was imported at start-up
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_the_readme_documents_every_setting():
    names = set(re.findall(r'_env_[a-z]+\("([A-Z_]+)"', (ROOT / "settings.py").read_text()))
    readme = (ROOT / "README.md").read_text()

    missing = sorted(name for name in names if f"`{name}`" not in readme)

    assert names and not missing, f"README.md does not document: {missing}"


def test_actors_import_with_metrics_switched_off(broker):
    result = subprocess.run(
        [sys.executable, "-c", "import actors; print([type(m).__name__ for m in actors.broker.middleware])"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "METRICS_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "MetricsOff" in result.stdout and "'Metrics'" not in result.stdout
