"""Every actor's arguments fuzzed: whatever a sender puts in a message, the job ends with a reason and the
worker stays up. Values fit each parameter's annotation half of the time (so they reach the actor's own
checks) and are anything JSON can carry otherwise; argument lists are also short, long or misnamed."""

from __future__ import annotations

import inspect
import time
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import job, wait_for_job

pytestmark = pytest.mark.timeout(900)

#: Examples per actor: enough to reach each argument check, few enough for a 2-core machine.
EXAMPLES = 6
#: Each fuzzed attempt may run this long (a valid but huge request is cut here, and fails with a reason).
ATTEMPT_LIMIT_MS = 60_000
#: Actors whose well-typed arguments would delete or rewrite what the rest of this run reads (the job
#: table itself): they get only ill-typed and misshapen arguments.
DESTRUCTIVE = {"prune_old_data", "reap_stuck_jobs"}

FINAL = {"succeeded", "failed", "dead", "cancelled"}

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
TYPED: dict[Any, st.SearchStrategy[Any]] = {
    int: st.one_of(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from([0, -1, 1, 2**31, 2**62])),
    float: st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -1.0, 1e308])),
    str: st.one_of(
        st.text(max_size=80),
        st.sampled_from(["", "../../etc/passwd", "/etc/passwd", "http://127.0.0.1:1/x", "document:999999", " "]),
    ),
    bool: st.booleans(),
    dict: st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=4),
}


def _for_annotation(annotation: Any) -> st.SearchStrategy[Any]:
    options = [TYPED[part] for part in typing.get_args(annotation) or (annotation,) if part in TYPED]
    origin = typing.get_origin(annotation)
    if origin is dict:
        options.append(TYPED[dict])
    if type(None) in typing.get_args(annotation):
        options.append(st.none())
    return st.one_of(*options) if options else ANY_JSON


def _arguments(actor: Any, destructive: bool) -> st.SearchStrategy[tuple[tuple[Any, ...], dict[str, Any]]]:
    hints = typing.get_type_hints(actor.fn)
    parameters = list(inspect.signature(actor.fn).parameters.values())
    value = {p.name: ANY_JSON if destructive else st.one_of(_for_annotation(hints.get(p.name)), ANY_JSON)
             for p in parameters}  # fmt: skip

    @st.composite
    def draw(data: st.DrawFn) -> tuple[tuple[Any, ...], dict[str, Any]]:
        shape = data(st.sampled_from(["positional", "keywords", "missing", "extra", "unknown keyword"]))
        if not parameters and shape in ("positional", "keywords", "missing"):
            shape = "extra"
        if destructive and shape in ("positional", "keywords") and parameters:
            shape = data(st.sampled_from(["extra", "unknown keyword"]))
        args = tuple(data(value[p.name]) for p in parameters)
        if shape == "keywords":
            return (), {p.name: arg for p, arg in zip(parameters, args, strict=True)}
        if shape == "missing":
            return args[:-1] if parameters[-1].default is inspect.Parameter.empty else args[:0], {}
        if shape == "extra":
            return (*args, data(ANY_JSON)), {}
        if shape == "unknown keyword":
            return args, {"no_such_argument": data(ANY_JSON)}
        return args, {}

    return draw()


def _sender(actor: Any, destructive: bool, sent: list[tuple[str, Any, Any, str]]) -> Any:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(arguments=_arguments(actor, destructive))
    def send(arguments: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        args, kwargs = arguments
        try:
            message = actor.send_with_options(args=args, kwargs=kwargs, max_retries=0, time_limit=ATTEMPT_LIMIT_MS)
        except Exception as error:  # refused at send: that is an answer too, if it says why
            assert str(error) and "\n" not in str(error), (actor.actor_name, args, kwargs, error)
            return
        sent.append((actor.actor_name, args, kwargs, message.message_id))

    return send


def _unclear(reason: str, state: str, error_type: str | None, storage_root: Any) -> bool:
    one_line = bool(reason.strip()) and "\n" not in reason and "Traceback" not in reason
    return state not in ("failed", "dead") or not error_type or not one_line or str(storage_root) in reason


def test_no_argument_makes_an_actor_crash_the_worker_or_hang(worker, broker, storage_root):
    from actors.maintenance import health_check
    from middleware.job_status import flush

    # Given every declared actor, sent arguments of every shape and type
    sent: list[tuple[str, Any, Any, str]] = []
    for name in sorted(broker.get_declared_actors()):
        _sender(broker.get_actor(name), name in DESTRUCTIVE, sent)()

    # Then every job ended, and each that did not succeed says why in one readable line
    deadline = time.monotonic() + 300
    rows: dict[str, Any] = {}
    while time.monotonic() < deadline:
        flush()
        rows = {message_id: job(message_id) for *_, message_id in sent}
        if all(row is not None and row.state in FINAL for row in rows.values()):
            break
        time.sleep(0.5)
    unfinished = [(name, args, kwargs, rows[i].state if rows[i] else None) for name, args, kwargs, i in sent
                  if rows[i] is None or rows[i].state not in FINAL]  # fmt: skip
    assert unfinished == []
    unclear = []
    for name, args, kwargs, message_id in sent:
        row = rows[message_id]
        reason = row.error_message or ""
        if row.state != "succeeded" and _unclear(reason, row.state, row.error_type, storage_root):
            unclear.append((name, args, kwargs, row.state, row.error_type, reason[:300]))
    assert len(sent) >= 40 * EXAMPLES // 2
    assert unclear == []

    # And the worker is still up, every thread alive, and runs the next job
    assert all(thread.is_alive() for thread in worker.workers)
    assert wait_for_job(health_check.send().message_id, timeout=60).state == "succeeded"
