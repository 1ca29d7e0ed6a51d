"""The Redis keys the chaos benchmark and its actor share (no import of the actors: the benchmark's own
process stays outside the stack it tests)."""

from __future__ import annotations


def runs_key(run: str) -> str:
    """Hash: job index → how many executions of it finished."""
    return f"chaos:{run}:runs"


def starts_key(run: str) -> str:
    return f"chaos:{run}:starts"


def hold_key(run: str) -> str:
    """Jobs whose index is at or past this key's value wait while it is set: the kill scenario holds them so
    its kills happen mid-run however fast the machine is."""
    return f"chaos:{run}:hold"
