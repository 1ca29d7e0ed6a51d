"""An actor whose work needs a module that is not installed, as after an incomplete installation."""

from __future__ import annotations

import dramatiq


@dramatiq.actor(queue_name="documents", max_retries=3, min_backoff=100)
def needs_a_missing_module() -> None:
    import taskforge_module_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401
