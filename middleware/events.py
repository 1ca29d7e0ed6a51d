"""The small vocabulary of what happens to a job, shared by the job table, the log and the metrics.

One word means one thing everywhere: the ``state`` column, the ``event=`` field of a log line and the
``outcome`` label of ``dramatiq_messages_total`` use these same values.
"""

from __future__ import annotations

import enum
from typing import Any


class Event(enum.StrEnum):
    ENQUEUED = "enqueued"  # a message was put on a queue (the job is queued)
    STARTED = "started"  # an attempt began (the job is running)
    SUCCEEDED = "succeeded"  # the attempt returned
    RETRYING = "retrying"  # the attempt raised; another is scheduled after a backoff
    FAILED = "failed"  # the attempt raised and no retry follows (bad input, retry_on, hard limit)
    DEAD = "dead"  # the last retry failed; the message is in the dead-letter queue
    CANCELLED = "cancelled"  # cancelled before or while it ran
    RATE_LIMITED = "rate-limited"  # delayed by its actor's rate limit (the job stays queued)
    SKIPPED = "skipped"  # dropped without running (a periodic run past its grace)
    TIMEOUT = "timeout"  # a soft or hard time limit was reached


def noted(message: Any, attribute: str) -> Any:
    """What a middleware noted on this delivery (an attribute of its MessageProxy), or None.

    Read from the proxy's own ``__dict__``: a missing attribute would otherwise go through the proxy's
    ``__getattr__`` and an AttributeError, several times per message.
    """
    return getattr(message, "__dict__", {}).get(attribute)


#: Attribute on a MessageProxy where middleware leave what they decided about the current attempt.
DECISION_ATTRIBUTE = "_platform_decision"
SKIP_REASON_ATTRIBUTE = "_platform_skip"
ABANDONED_ATTRIBUTE = "_platform_abandoned"
#: Where a consumer that read a message's bytes leaves their length, so a size check need not estimate it.
ENCODED_SIZE_ATTRIBUTE = "_platform_encoded_size"
