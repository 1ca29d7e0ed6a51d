"""File drive thumbnails: our ``make_thumbnail`` against the library calls it is built on, in the same run.

    python -m bench.files                          # 500 camera JPEGs (4000×3000) and 100 PNGs
    python -m bench.files --jpegs 40 --pngs 10     # a quick run

The files are made first, in a temporary folder, and the making is not timed: a few distinct pictures
(a smooth gradient with film-grain noise, like a photo; a PNG with transparent areas, like a logo or a
screenshot), linked under as many names as asked, so each thumbnail opens a file it has not opened before.

Each variant runs in a fresh process (multiprocessing "spawn"), so its peak RSS (``ru_maxrss``) is its
own: the interpreter, its library and the largest picture it held. Each does one untimed thumbnail first
(imports, library start-up), then every JPEG and every PNG, writing the thumbnail's bytes as our path does
(JPEG, or PNG when the image has alpha). Variants:

- ``Pillow, naive``: ``Image.open``, full decode, ``thumbnail``: what code without shrink-on-load does;
- ``Pillow, draft()``: the same with ``draft()`` to the box first, so a JPEG is decoded at 1/2, 1/4 or 1/8
  scale; to the box itself (1/8 for a camera JPEG into 256), where pyvips and ours stop at twice the box
  (1/4) so the final resize has pixels to average: less decoding work, a little less sharpness;
- ``pyvips thumbnail``: ``pyvips.Image.thumbnail`` from the file (shrink-on-load, autorotate);
- ``ours (auto)``: ``processing.thumbnails.make_thumbnail(path, "image", engine="auto")``, with its
  header check, exact dimensions, alpha check and no metadata; ``ours (pillow)`` is its Pillow engine;
- ``actor, N proc``: the ``make_file_thumbnail`` job through a real worker (``dramatiq actors -Q files
  -p N -t 1``, embedded Redis and SQLite in a temporary folder), from the first send until the last
  thumbnail is recorded in the ``files`` table; peak RSS is the largest worker process's. With one
  process it is the per-core figure next to the direct calls; with one per CPU, what a deployment gets.

Printed: thumbnails/s for the JPEGs and the PNGs and peak RSS per variant, then ours against naive Pillow
(target at least 3×) and against the fastest direct call (target: within 1.2×).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A variant makes one thumbnail of the file, fitting size × size, and returns its encoded bytes.
Variant = Callable[[Path, int], bytes]
JPEG_QUALITY = 85


def _encode_pillow(image: Any) -> bytes:
    out = io.BytesIO()
    if image.mode in ("RGBA", "LA", "PA"):
        image.save(out, "PNG")
    else:
        image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def pillow_naive(path: Path, size: int) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # decoded at full size: loading first also stops thumbnail() from drafting
        image.thumbnail((size, size))
        return _encode_pillow(image)


def pillow_draft(path: Path, size: int) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        image.thumbnail((size, size))
        return _encode_pillow(image)


def pyvips_thumbnail(path: Path, size: int) -> bytes:
    import pyvips

    image = pyvips.Image.thumbnail(str(path), size, height=size, size="down")
    return bytes(image.write_to_buffer(".png" if image.hasalpha() else f".jpg[Q={JPEG_QUALITY}]"))


def ours_auto(path: Path, size: int) -> bytes:
    from processing.thumbnails import make_thumbnail

    return make_thumbnail(path, "image", size=size, engine="auto").data


def ours_pillow(path: Path, size: int) -> bytes:
    from processing.thumbnails import make_thumbnail

    return make_thumbnail(path, "image", size=size, engine="pillow").data


#: (name, function); the direct calls first. A variant needs only to be a module-level function, so a
#: spawned process can find it by name.
VARIANTS: list[tuple[str, Variant]] = [
    ("Pillow, naive", pillow_naive),
    ("Pillow, draft()", pillow_draft),
    ("pyvips thumbnail", pyvips_thumbnail),
    ("ours (auto)", ours_auto),
    ("ours (pillow)", ours_pillow),
]
BASELINE = "Pillow, naive"
DIRECT = ("Pillow, naive", "Pillow, draft()", "pyvips thumbnail")
OURS = "ours (auto)"


@dataclass(frozen=True)
class Result:
    jpeg_seconds: float
    png_seconds: float
    peak_rss_mb: float
    start_rss_mb: float  # peak after the imports, before any thumbnail


def _run_variant(name: str, jpegs: list[Path], pngs: list[Path], size: int) -> Result:
    """Runs in a spawned process: one untimed thumbnail, then the JPEGs and the PNGs, timed apart."""
    function = dict(VARIANTS)[name]
    import PIL.Image  # noqa: F401 - every variant loads Pillow or pyvips; count the import in the start

    if name in ("pyvips thumbnail", OURS):
        try:
            import pyvips  # noqa: F401
        except (ImportError, OSError):
            pass
    start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    function(jpegs[0], size)
    started = time.perf_counter()
    for path in jpegs:
        function(path, size)
    middle = time.perf_counter()
    for path in pngs:
        function(path, size)
    ended = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Result(middle - started, ended - middle, peak_kb / 1024, start_kb / 1024)


def _photo(width: int, height: int, seed: int) -> Any:
    """A camera-like picture: smooth colour gradients with film grain, which JPEG compresses as it would
    a photo (pure noise would make the entropy decoder, not the scaling, the whole cost)."""
    from PIL import Image, ImageChops

    small = (max(width // 16, 1), max(height // 16, 1))
    channels = [
        Image.linear_gradient("L").rotate(seed * 37 + band * 120).resize(small).resize((width, height))
        for band in range(3)
    ]
    grain = Image.effect_noise((width, height), 6 + seed)
    return Image.merge("RGB", [ImageChops.add(channel, grain, scale=1.0, offset=-128) for channel in channels])


def _logo(width: int, height: int, seed: int) -> Any:
    """A screenshot-like RGBA picture: flat colour blocks on a transparent background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    step = max(width // 12, 8)
    for index, left in enumerate(range(step, width - step, step)):
        colour = ((index * 53 + seed * 31) % 256, (index * 97) % 256, (200 - index * 17) % 256, 255)
        draw.rectangle((left, step, left + step // 2, height - step), fill=colour)
    return image


def make_files(
    folder: Path, *, jpegs: int, pngs: int, width: int, height: int, distinct: int
) -> tuple[list[Path], list[Path]]:
    """``jpegs`` JPEGs and ``pngs`` PNGs under distinct names, linked from ``distinct`` pictures of each."""
    sources: list[Path] = []
    for seed in range(min(distinct, jpegs)):
        source = folder / f"source-{seed}.jpg"
        _photo(width, height, seed).save(source, "JPEG", quality=90)
        sources.append(source)
    png_sources: list[Path] = []
    for seed in range(min(distinct, pngs)):
        source = folder / f"source-{seed}.png"
        _logo(width // 2, height // 2, seed).save(source, "PNG")
        png_sources.append(source)

    def linked(sources: list[Path], count: int, suffix: str) -> list[Path]:
        paths = []
        for number in range(count):
            target = folder / f"file-{number:05d}{suffix}"
            try:
                os.link(sources[number % len(sources)], target)
            except OSError:  # a file system without hard links
                shutil.copyfile(sources[number % len(sources)], target)
            paths.append(target)
        return paths

    return linked(sources, jpegs, ".jpg"), linked(png_sources, pngs, ".png")


def _engine_line() -> str:
    """Which engine ``engine="auto"`` picks here, with versions (run in a child, like everything heavy)."""
    from processing.thumbnails import vips_available

    if not vips_available():
        return "Pillow (pyvips not importable)"
    import pyvips

    version = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    return f"Pillow for JPEG, pyvips {pyvips.__version__} on libvips {version} for the rest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jpegs", type=int, default=500, help="camera JPEGs (default 500)")
    parser.add_argument("--pngs", type=int, default=100, help="PNGs with transparency (default 100)")
    parser.add_argument("--width", type=int, default=4000, help="JPEG width in pixels (default 4000)")
    parser.add_argument("--height", type=int, default=3000, help="JPEG height in pixels (default 3000)")
    parser.add_argument("--size", type=int, default=256, help="thumbnail box, pixels (default 256)")
    parser.add_argument("--distinct", type=int, default=4, help="distinct pictures of each format (default 4)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant, best kept (default 1)")
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="worker processes of the deployment figure"
    )
    args = parser.parse_args()
    if min(args.jpegs, args.pngs, args.distinct, args.repeat) < 1:
        parser.error("--jpegs, --pngs, --distinct and --repeat must be at least 1")

    # This process only starts others and prints. A child's ru_maxrss starts from its parent's at the
    # fork, even across exec, so the parent must never hold a big picture itself: making the files and
    # probing the engine happen in children too.
    spawn = multiprocessing.get_context("spawn")
    folder = Path(tempfile.mkdtemp(prefix="bench-files-"))
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            started = time.perf_counter()
            sizes = dict(jpegs=args.jpegs, pngs=args.pngs, width=args.width, height=args.height)
            jpegs, pngs = pool.submit(make_files, folder, **sizes, distinct=args.distinct).result()
            made_in = time.perf_counter() - started
            engine = pool.submit(_engine_line).result()
        distinct = min(args.distinct, len(jpegs))
        jpeg_mb = sum(path.stat().st_size for path in jpegs[:distinct]) / distinct / 1e6
        print(
            f"{args.jpegs} JPEGs {args.width}×{args.height} (~{jpeg_mb:.1f} MB each), {args.pngs} RGBA PNGs "
            f"{args.width // 2}×{args.height // 2}, made in {made_in:.1f} s (not timed); box {args.size}; "
            f"auto engine: {engine}; {os.cpu_count()} CPUs; best of {args.repeat}"
        )

        results: dict[str, Result] = {}
        for _round in range(args.repeat):  # round-robin, so a slow spell of the machine hits every variant
            for name, _function in VARIANTS:
                if name == "pyvips thumbnail" and "pyvips" not in engine:
                    continue
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    result = pool.submit(_run_variant, name, jpegs, pngs, args.size).result()
                results[name] = _best(results.get(name), result)
            for processes in sorted({1, args.processes}):
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    result = pool.submit(actor_path, jpegs, pngs, args.size, processes).result()
                name = f"actor, {processes} proc"
                results[name] = _best(results.get(name), result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print()
    header = f"{'variant':<20}{'JPEG thumbs/s':>15}{'PNG thumbs/s':>14}{'all thumbs/s':>14}"
    print(f"{header}{'peak RSS MB':>13}{'start MB':>10}")
    for name, result in results.items():
        print(
            f"{name:<20}{args.jpegs / result.jpeg_seconds:>15.1f}{args.pngs / result.png_seconds:>14.1f}"
            f"{_overall(args, result):>14.1f}{result.peak_rss_mb:>13.0f}{result.start_rss_mb:>10.0f}"
        )

    ours = results[OURS]
    naive = results[BASELINE]
    for name in (name for name in results if name.startswith("actor")):
        print(f"{name} vs {BASELINE}: {_overall(args, results[name]) / _overall(args, naive):.2f}x the throughput")
    fastest_name = max((name for name in DIRECT if name in results), key=lambda name: _overall(args, results[name]))
    fastest = results[fastest_name]
    print()
    print(
        f"ours vs {BASELINE}: {_overall(args, ours) / _overall(args, naive):.2f}x the throughput "
        f"(JPEG {naive.jpeg_seconds / ours.jpeg_seconds:.2f}x, PNG {naive.png_seconds / ours.png_seconds:.2f}x; "
        "target >= 3x)"
    )
    print(
        f"ours takes {_overall(args, fastest) / _overall(args, ours):.2f}x the time of the fastest direct call, "
        f"{fastest_name} (JPEG {ours.jpeg_seconds / fastest.jpeg_seconds:.2f}x, "
        f"PNG {ours.png_seconds / fastest.png_seconds:.2f}x; target <= 1.2x)"
    )


def actor_path(jpegs: list[Path], pngs: list[Path], size: int, processes: int) -> Result:
    """Runs in a spawned process: ``make_file_thumbnail`` through a real worker of ``processes``
    processes, the JPEGs then the PNGs, each timed from the first send to the last thumbnail recorded."""
    folder = Path(tempfile.mkdtemp(prefix="bench-files-actor-"))
    os.environ.update(VAR_DIR=str(folder / "var"), STORAGE_ROOT=str(folder / "storage"))
    os.environ.update(THUMBNAIL_SIZE_PX=str(size), REDIS_URL="embedded")
    for name in ("BROKER_URL", "DATABASE_URL"):  # the defaults: embedded Redis, SQLite under VAR_DIR
        os.environ.pop(name, None)
    from actors.files import make_file_thumbnail
    from processing.files import detect_type, store_blob
    from settings import settings
    from storage import files as store
    from storage.db import migrate

    migrate()

    def register(paths: list[Path]) -> list[int]:
        ids = []
        for path in paths:
            blob = store_blob(path, root=settings.storage_root, max_bytes=settings.max_file_bytes)
            detected = detect_type(path, path.name)
            file_id = store.create_file(
                filename=path.name, owner="", sha256=blob.sha256, blob_path=blob.path, size_bytes=blob.size_bytes
            )
            store.update_file(file_id, mime_type=detected.mime_type, kind=detected.kind)
            ids.append(file_id)
        return ids

    def run(ids: list[int]) -> float:
        from sqlalchemy import func, select

        from storage.db import session_scope

        started = time.perf_counter()
        for file_id in ids:
            make_file_thumbnail.send(file_id)
        query = select(func.count()).where(store.File.id.in_(ids), store.File.thumbnail_path.is_not(None))
        while True:
            with session_scope() as session:
                if session.scalar(query) == len(ids):
                    return time.perf_counter() - started
            time.sleep(0.01)

    warm, jpeg_ids, png_ids = register(jpegs[:1] + pngs[:1]), register(jpegs), register(pngs)
    command = [sys.executable, "-m", "dramatiq", "actors", "-p", str(processes), "-t", "1", "-Q", "files"]
    with socket.socket() as probe:  # a free loopback port for the worker's metrics server
        probe.bind(("127.0.0.1", 0))
        env = {**os.environ, "METRICS_PORT": str(probe.getsockname()[1])}
    root = Path(__file__).resolve().parent.parent
    with open(folder / "worker.log", "wb") as log:
        worker = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=log, start_new_session=True)
    try:
        run(warm)  # imports, the first queries, every process up
        start_mb = _tree_peak_mb(worker.pid)
        jpeg_seconds, png_seconds = run(jpeg_ids), run(png_ids)
        return Result(jpeg_seconds, png_seconds, _tree_peak_mb(worker.pid), start_mb)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        shutil.rmtree(folder, ignore_errors=True)


def _tree_peak_mb(pid: int) -> float:
    """The largest peak RSS (VmHWM) of ``pid`` and its children: one worker process's own."""
    peaks = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("Pid", "").strip() == str(pid) or fields.get("PPid", "").strip() == str(pid):
            peaks.append(int(fields.get("VmHWM", "0 kB").split()[0]) / 1024)
    return max(peaks, default=0.0)


def _best(kept: Result | None, new: Result) -> Result:
    """The fastest times of two runs, and the larger peak (memory is not a matter of luck)."""
    if kept is None:
        return new
    return Result(
        min(kept.jpeg_seconds, new.jpeg_seconds),
        min(kept.png_seconds, new.png_seconds),
        max(kept.peak_rss_mb, new.peak_rss_mb),
        max(kept.start_rss_mb, new.start_rss_mb),
    )


def _overall(args: argparse.Namespace, result: Result) -> float:
    return (args.jpegs + args.pngs) / (result.jpeg_seconds + result.png_seconds)


if __name__ == "__main__":
    main()
