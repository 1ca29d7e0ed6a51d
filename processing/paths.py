"""Resolving user-supplied paths safely under the storage root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from processing.errors import InvalidArgument, NotFound, OutsideStorageRoot


def resolve_under(root: Path, path: str | Path, *, must_exist: bool = True) -> Path:
    """Return ``path`` as an absolute path inside ``root``.

    A relative path is taken relative to ``root``. Symlinks are resolved before the check, so a link
    that points outside the root is refused like a ``../`` path.
    """
    if not isinstance(path, str | Path) or not str(path).strip():
        raise InvalidArgument("a path must be a non-empty string")
    if "\x00" in str(path):
        # The OS cannot take it (ValueError deep in os.stat): bad input, not a reason to retry.
        raise InvalidArgument(f"path {str(path)!r} contains a NUL byte")
    root = Path(root).resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise OutsideStorageRoot(f"path {str(path)!r} is outside the storage root")
    if must_exist and not resolved.exists():
        raise NotFound(f"file {str(path)!r} does not exist")
    return resolved


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file renamed over it, so a reader never sees half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
