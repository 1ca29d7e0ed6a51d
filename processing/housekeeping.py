"""File housekeeping: old cache files, disk space, database backups and their rotation."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Removed:
    files: int
    bytes: int


def delete_files_older_than(root: Path, days: float, *, now: float | None = None) -> Removed:
    """Delete regular files under ``root`` not modified for ``days``; then empty directories."""
    if not root.exists():
        return Removed(0, 0)
    cutoff = (now if now is not None else time.time()) - days * 86400
    files = size = 0
    for path in sorted(root.rglob("*"), reverse=True):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                size += path.stat().st_size
                path.unlink()
                files += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except FileNotFoundError:
            continue
    return Removed(files, size)


def disk_free_fraction(path: Path) -> float:
    """Free space of the file system holding ``path``, as a fraction of its size."""
    path.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(path)
    return usage.free / usage.total if usage.total else 0.0


def backup_sqlite(database: Path, target_dir: Path, *, now: datetime | None = None) -> Path:
    """A consistent copy of a live SQLite database, made with SQLite's online backup API."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{database.stem}-{stamp}.db"
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
        finally:
            destination.close()
    finally:
        source.close()
    return target


def backup_postgres(url: str, target_dir: Path, *, now: datetime | None = None) -> Path:
    """A ``pg_dump`` custom-format dump of the database at ``url``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"postgres-{stamp}.dump"
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    subprocess.run(["pg_dump", "--format=custom", f"--file={target}", dsn], check=True, capture_output=True)
    return target


def rotate(directory: Path, pattern: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` files matching ``pattern``; returns the deleted ones."""
    files = sorted(directory.glob(pattern), key=lambda path: path.stat().st_mtime, reverse=True)
    removed = files[keep:]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
