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
