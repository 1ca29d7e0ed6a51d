"""Cache sweeps that never stop part-way, and paths the OS cannot take refused as bad input."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import wait_for_job

EIGHT_DAYS = 8 * 86400


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_sweep_removes_old_links_as_links_and_never_touches_their_targets(tmp_path):
    from processing.housekeeping import delete_files_older_than

    # Given a cache holding an old file, a link to an empty directory outside it, and a link to a file
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    (cache / "downloads").mkdir(parents=True)
    (outside / "empty").mkdir(parents=True)
    kept = outside / "precious.txt"
    kept.write_text("keep me")
    old = cache / "downloads" / "old.bin"
    old.write_bytes(b"x" * 100)
    to_dir = cache / "downloads" / "to-empty-dir"
    to_dir.symlink_to(outside / "empty", target_is_directory=True)
    to_file = cache / "to-file"
    to_file.symlink_to(kept)
    for path in (old, to_dir, to_file):
        _age(path, EIGHT_DAYS)

    # When the week-old entries are swept
    removed = delete_files_older_than(cache, 7)

    # Then the file and both links are gone, their targets are untouched, and nothing was skipped
    assert (removed.files, removed.bytes, removed.skipped) == (3, 100, 0)
    assert not old.exists() and not to_dir.is_symlink() and not to_file.is_symlink()
    assert (outside / "empty").is_dir() and kept.read_text() == "keep me"


def _make_unremovable(path: Path) -> Callable[[], None]:
    """Make ``path`` impossible to delete; returns the undo. Root ignores permissions: use the
    immutable attribute there."""
    if os.geteuid() != 0:
        path.parent.chmod(0o500)
        return lambda: path.parent.chmod(0o700)
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    assert done.returncode == 0, f"cannot make a file immutable here: {done.stderr.decode().strip()}"
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=False)


def test_an_entry_that_cannot_be_removed_is_counted_and_the_sweep_goes_on(tmp_path):
    from processing.housekeeping import delete_files_older_than

    # Given an old file that cannot be removed, and another old file beside it
    (tmp_path / "locked").mkdir()
    stuck = tmp_path / "locked" / "stuck.bin"
    stuck.write_bytes(b"s")
    loose = tmp_path / "loose.bin"
    loose.write_bytes(b"l")
    _age(stuck, EIGHT_DAYS)
    _age(loose, EIGHT_DAYS)
    undo = _make_unremovable(stuck)
    try:
        # When the sweep runs
        removed = delete_files_older_than(tmp_path, 7)
    finally:
        undo()

    # Then the free file went, and the stuck one is counted as skipped instead of stopping the sweep
    assert removed.skipped == 1 and not loose.exists() and stuck.exists()


def test_cleanup_cache_through_the_worker_copes_with_a_link_to_an_empty_directory(worker, tmp_path):
    from actors.maintenance import cleanup_cache
    from settings import settings

    # Given an old symlink to an empty directory in the cache (it made the sweep fail part-way)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    (tmp_path / "empty").mkdir()
    link = settings.cache_dir / "link-to-empty"
    link.symlink_to(tmp_path / "empty", target_is_directory=True)
    _age(link, EIGHT_DAYS)

    # When the cleanup runs
    row = wait_for_job(cleanup_cache.send().message_id)

    # Then it succeeded, removed the link, and left its target alone
    assert row.state == "succeeded", row.error_message
    assert json.loads(row.result or "{}")["skipped"] == 0
    assert not link.is_symlink() and (tmp_path / "empty").is_dir()


@pytest.mark.parametrize("path", ["reports/a\x00b.pdf", "\x00"])
def test_a_path_with_a_nul_byte_is_bad_input_not_a_reason_to_retry(tmp_path, path):
    from processing.errors import InvalidArgument, PermanentError
    from processing.paths import resolve_under

    # Given a path no file system can hold / When it is resolved / Then it is refused as bad input
    with pytest.raises(InvalidArgument, match="NUL byte") as caught:
        resolve_under(tmp_path, path)
    assert isinstance(caught.value, PermanentError)


def test_a_media_path_with_a_nul_byte_fails_at_once_through_the_worker(worker):
    from pipelines.media import process_video

    # When a media job names a local path with a NUL byte
    row = wait_for_job(process_video("clips/a\x00b.mp4").id, timeout=60)

    # Then it failed once with one readable line, and was not retried
    assert row.state == "failed" and row.attempts == 1
    assert row.error_message and "NUL byte" in row.error_message
