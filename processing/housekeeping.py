"""File housekeeping: old cache files, disk space, database backups and their rotation."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from processing.redaction import redact_text, redact_url, url_password, without_password


@dataclass(frozen=True)
class Removed:
    files: int
    bytes: int
    # Entries that could not be removed (permissions, a file busy elsewhere); the rest still were.
    skipped: int = 0


def delete_files_older_than(
    root: Path, days: float, *, now: float | None = None, skip: tuple[str, ...] = ()
) -> Removed:
    """Delete regular files and symlinks under ``root`` not modified for ``days``; then empty directories.

    A symlink is judged and removed as a link, never followed: its target may be anywhere, and a link
    to a directory is not a directory of the cache. One entry that cannot be removed is counted in
    ``skipped`` and does not stop the sweep. ``skip`` names folders directly under ``root`` that are
    left alone (another process prunes them).
    """
    if not root.exists():
        return Removed(0, 0)
    cutoff = (now if now is not None else time.time()) - days * 86400
    files = size = skipped = 0
    for path in sorted(root.rglob("*"), reverse=True):
        if skip and path.relative_to(root).parts[0] in skip:
            continue
        try:
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode) or stat.S_ISREG(info.st_mode):
                if info.st_mtime < cutoff:
                    path.unlink()
                    files += 1
                    size += info.st_size if stat.S_ISREG(info.st_mode) else 0
            elif stat.S_ISDIR(info.st_mode) and not any(path.iterdir()):
                path.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            skipped += 1
    return Removed(files, size, skipped)


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


class BackupFailed(Exception):
    """``pg_dump`` exited with an error; the message is its own, with any credential removed."""


def pg_dump_invocation(url: str, target: Path) -> tuple[list[str], dict[str, str]]:
    """The ``pg_dump`` command line and the environment it needs for the database at ``url``.

    The password travels in ``PGPASSWORD``, never on the command line, where every local user can read
    it in ``/proc/<pid>/cmdline``.
    """
    dsn = without_password(url.replace("postgresql+psycopg2://", "postgresql://", 1))
    env = dict(os.environ)
    password = url_password(url)
    if password is not None:
        env["PGPASSWORD"] = password
    return ["pg_dump", "--format=custom", f"--file={target}", dsn], env


def backup_postgres(url: str, target_dir: Path, *, now: datetime | None = None) -> Path:
    """A ``pg_dump`` custom-format dump of the database at ``url``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"postgres-{stamp}.dump"
    command, env = pg_dump_invocation(url, target)
    completed = subprocess.run(command, env=env, capture_output=True, check=False)
    if completed.returncode != 0:
        target.unlink(missing_ok=True)
        output = completed.stderr.decode("utf-8", errors="replace").strip().splitlines()
        reason = redact_text(output[-1] if output else f"exit status {completed.returncode}", url_password(url))
        raise BackupFailed(f"pg_dump of {redact_url(url)} failed: {reason}")
    return target


def rotate(directory: Path, pattern: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` files matching ``pattern``; returns the deleted ones."""
    files = sorted(directory.glob(pattern), key=lambda path: path.stat().st_mtime, reverse=True)
    removed = files[keep:]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
