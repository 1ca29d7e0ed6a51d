"""Errors that mean the input is bad: retrying cannot help, so no retry is ever scheduled for them.

Processing code raises these with a message a person understands; the job ends ``failed`` with that
message as its reason.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Bad input or a request that can never succeed. Never retried."""


class InvalidArgument(PermanentError):
    """An argument has the wrong type or an impossible value."""


class NotFound(PermanentError):
    """The thing asked for (a file, a row, an actor) does not exist."""


class OutsideStorageRoot(PermanentError):
    """A path points outside the storage root."""


class UnsupportedFormat(PermanentError):
    """The file's type is not one this platform reads."""


class CorruptInput(PermanentError):
    """The file claims a format but its content is damaged or unreadable."""


class TooLarge(PermanentError):
    """The input is over a configured cap (bytes, pages, seconds)."""


class MissingDependency(PermanentError):
    """A module or tool the work needs is not installed: an installation error, not a passing fault."""


def is_permanent(error: BaseException) -> bool:
    """True when retrying cannot help: bad input (a ``PermanentError``) or a missing dependency.

    An ``ImportError`` (``ModuleNotFoundError`` included) means the installation lacks an optional
    module; the next attempt runs on the same installation and fails the same way, so it is never retried.
    """
    return isinstance(error, PermanentError | ImportError)


class TryLater(Exception):
    """Not a failure: the work cannot run now (a provider's rate limit, a spent budget) and should be put
    back for ``delay_ms`` milliseconds, without counting an attempt."""

    def __init__(self, message: str, *, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = max(int(delay_ms), 0)
