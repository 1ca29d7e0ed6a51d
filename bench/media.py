"""Transcription speed: faster-whisper called directly vs the platform's worker vs openai-whisper.

    python -m bench.media                 # a 60-second clip, 3 timed runs each
    python -m bench.media --seconds 120 --runs 5

The clip is espeak-ng speech (the sample sentence, repeated) over a test picture, made on the spot.
The real-time factor is audio seconds per wall second (higher is faster). The direct figure times
``processing.transcription.transcribe`` with the model already loaded; the worker figure is a real
``dramatiq actors -Q media`` process running ``transcribe_media`` on the same file with the same
weights, timed from enqueue to the job's finish (so it includes queueing, probing and the database
write), after one warm-up job that loads the model. openai-whisper runs on the same clip where it is
installed with its own copy of the same weights. Worker RSS is read before and after the model loads.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


SCRIPT = (
    "Bond yields slipped after the central bank kept its policy rate unchanged for a third month.",
    "Oil futures climbed as traders weighed fresh supply cuts against a softer demand outlook.",
    "Technology shares led the index lower while utilities and consumer staples held steady.",
    "The dollar weakened against the yen, and silver followed gold higher into the close.",
    "Analysts expect quarterly earnings to beat estimates, although margins remain under pressure.",
    "Volume was light ahead of the holiday, so a small order could move the price sharply.",
    "A break above the fifty day moving average would confirm the new upward trend.",
    "Risk managers trimmed positions once volatility rose above its one year average.",
)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_url(explicit: str) -> str:
    if explicit:
        return explicit
    from broker import EmbeddedRedis, _port_answers

    if _port_answers("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/13"
    return EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-"))).acquire()


def _worker_rss_mb(parent_pid: int) -> float:
    import psutil

    parent = psutil.Process(parent_pid)
    children = [child for child in parent.children() if "dramatiq" in " ".join(child.cmdline())]
    if not children:
        return float("nan")
    return max(child.memory_info().rss for child in children) / 1024 / 1024


def _wait_finished(message_id: str, timeout: float) -> tuple[str, float]:
    """Wait for the job row; returns (state, seconds from enqueue to finish by the worker's clock)."""
    from storage.jobs import get_job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(message_id)
        if job is not None and job.finished_at is not None and job.enqueued_at is not None:
            return str(job.state), (job.finished_at - job.enqueued_at).total_seconds()
        time.sleep(0.05)
    raise TimeoutError(f"job {message_id} did not finish within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length (default 60)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per engine (default 3)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="bench-media-"))
    redis_url = _redis_url(args.redis_url)
    os.environ.update(
        {
            "VAR_DIR": str(var_dir),
            "STORAGE_ROOT": str(var_dir / "storage"),
            "CACHE_DIR": str(var_dir / "cache"),
            "DATABASE_URL": f"sqlite:///{var_dir / 'bench.db'}",
            "REDIS_URL": redis_url,
            "METRICS_PORT": str(_free_port()),
            "METRICS_DIR": str(var_dir / "metrics"),
            "JOB_FLUSH_INTERVAL_MS": "20",
            "PYTHONPATH": str(ROOT),
        }
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    from samples.media.make_clip import SENTENCE, make_clip
    from settings import settings

    # Varied sentences: one sentence said over and over makes Whisper fall back to slow re-decoding.
    words_needed = int(args.seconds * 2.3)
    script: list[str] = [SENTENCE]
    while sum(len(line.split()) for line in script) < words_needed:
        script.append(SCRIPT[len(script) % len(SCRIPT)])
    clip = make_clip(
        settings.storage_root / "bench" / "speech.mp4",
        sentence=" ".join(script),
        duration_seconds=args.seconds,
    )
    from processing.frames import probe_duration

    audio_seconds = probe_duration(clip)
    print(
        f"clip: {audio_seconds:.1f} s (espeak-ng speech + test video); model {settings.whisper_model!r} "
        f"({settings.whisper_compute_type}); {os.cpu_count()} CPUs; {args.runs} timed runs each"
    )

    # faster-whisper, called directly
    from processing import transcription

    started = time.perf_counter()
    transcription.load_model(settings.whisper_model, compute_type=settings.whisper_compute_type)
    load_seconds = time.perf_counter() - started
    model, compute_type = settings.whisper_model, settings.whisper_compute_type
    transcription.transcribe(clip, model=model, compute_type=compute_type)
    direct: list[float] = []
    for _ in range(args.runs):
        started = time.perf_counter()
        transcription.transcribe(clip, model=model, compute_type=compute_type)
        direct.append(time.perf_counter() - started)

    # the platform: a real worker process serving the media queue
    import actors
    from storage.db import migrate

    migrate()
    log = (var_dir / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "1", "-Q", "media"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    through_worker: list[float] = []
    try:
        time.sleep(6)
        rss_idle = _worker_rss_mb(worker.pid)
        relative = str(clip.relative_to(settings.storage_root))
        transcribe_media = actors.broker.get_actor("transcribe_media")
        state, _ = _wait_finished(transcribe_media.send(relative).message_id, timeout=600)
        if state != "succeeded":
            raise SystemExit(f"the warm-up job ended {state}; see {var_dir / 'worker.log'}")
        rss_loaded = _worker_rss_mb(worker.pid)
        for _ in range(args.runs):
            state, seconds = _wait_finished(transcribe_media.send(relative).message_id, timeout=600)
            if state != "succeeded":
                raise SystemExit(f"a timed job ended {state}; see {var_dir / 'worker.log'}")
            through_worker.append(seconds)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        log.close()

    rows = [
        ("faster-whisper, direct", statistics.median(direct)),
        ("platform worker (transcribe_media)", statistics.median(through_worker)),
    ]
    print()
    print(f"{'engine':<38}{'wall s':>9}{'RTF':>9}")
    for name, seconds in rows:
        print(f"{name:<38}{seconds:>9.2f}{audio_seconds / seconds:>9.1f}")
    if importlib.util.find_spec("whisper") is None:
        print(f"{'openai-whisper':<38}{'not installed':>18}")
    else:
        print(f"{'openai-whisper':<38}{_openai_whisper(clip, args.runs, audio_seconds):>18}")
    overhead = statistics.median(through_worker) / statistics.median(direct)
    print()
    print(f"worker / direct wall time: {overhead:.2f}x (queueing, probing and the database write included)")
    print(f"model load (direct): {load_seconds:.2f} s")
    print(f"worker RSS: {rss_idle:.0f} MB booted, {rss_loaded:.0f} MB with the model loaded")


def _openai_whisper(clip: Path, runs: int, audio_seconds: float) -> str:
    """openai-whisper on the same clip, if its copy of the weights is already on this machine."""
    import whisper  # type: ignore[import-not-found]

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper" / "tiny.en.pt"
    if not cache.is_file():
        return "weights not on disk"
    model = whisper.load_model(str(cache), device="cpu")
    model.transcribe(str(clip), language="en", fp16=False)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.transcribe(str(clip), language="en", fp16=False)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return f"{seconds:9.2f}{audio_seconds / seconds:9.1f}"


if __name__ == "__main__":
    main()
