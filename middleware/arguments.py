"""Checking an actor's arguments against its type annotations before it runs."""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware, MiddlewareError

from processing.errors import InvalidArgument


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """True when ``value`` fits ``annotation``; annotations this check does not know always fit."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return value is None
    if origin is not None:
        annotation = origin
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (list, tuple):
        # JSON has no tuples: a tuple argument arrives as a list.
        return isinstance(value, (list, tuple))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


class ArgumentMismatch(InvalidArgument, MiddlewareError):
    """Arguments that do not fit the actor. A MiddlewareError, so Dramatiq lets it end the attempt."""


def _compile(annotation: Any) -> Callable[[Any], bool] | None:
    """A fast isinstance check equivalent to ``_matches`` for plain annotations; None when unchecked."""
    if annotation is None or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    arms = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    allowed: list[type] = []
    for arm in arms:
        if arm is Any:
            return None
        if arm is None or arm is type(None):
            allowed.append(type(None))
            continue
        arm = typing.get_origin(arm) or arm
        if arm is float:
            allowed += [float, int]
        elif arm in (list, tuple):
            allowed += [list, tuple]
        elif isinstance(arm, type):
            allowed.append(arm)
        else:
            return lambda value: _matches(value, annotation)
    kinds = tuple(allowed)
    # bool is an int to isinstance, but not to a caller who asked for an int.
    if bool in kinds or object in kinds:
        return lambda value: isinstance(value, kinds)
    return lambda value: isinstance(value, kinds) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Signature:
    signature: inspect.Signature
    hints: dict[str, Any]
    # Positional parameters in order, with their annotation and its compiled check (None: unchecked).
    positional: tuple[tuple[str, Any, Callable[[Any], bool] | None], ...]
    required: int
    # True when plain positional calls can skip ``Signature.bind`` (no *args, no keyword-only).
    simple: bool


def _inspect(fn: Any) -> _Signature:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    signature = inspect.signature(fn)
    kinds = [parameter.kind for parameter in signature.parameters.values()]
    positional = tuple(
        (parameter.name, hints.get(parameter.name), _compile(hints.get(parameter.name)))
        for parameter in signature.parameters.values()
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    required = sum(
        1
        for parameter in signature.parameters.values()
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and parameter.default is inspect.Parameter.empty
    )
    simple = inspect.Parameter.VAR_POSITIONAL not in kinds and inspect.Parameter.KEYWORD_ONLY not in kinds
    return _Signature(signature, hints, positional, required, simple)


class ArgumentTypes(Middleware):
    """Fail a message whose arguments do not fit its actor's signature, naming the argument.

    The failure is an ``ArgumentMismatch``, an ``InvalidArgument`` (bad input): the job ends ``failed``
    and is never retried. Only annotations of plain types (``str``, ``int``, ``float``, ``bool``,
    ``list``, ``dict``, unions and ``None``) are checked; any other annotation is accepted as it is.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._signatures: dict[str, _Signature] = {}

    def _signature(self, actor: Any) -> _Signature:
        cached = self._signatures.get(actor.actor_name)
        if cached is None:
            cached = self._signatures[actor.actor_name] = _inspect(actor.fn)
        return cached

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self.check(broker.get_actor(message.actor_name), message.args, message.kwargs)

    def check(self, actor: Any, args: Any, kwargs: Any) -> None:
        """Raise ``ArgumentMismatch`` when ``args``/``kwargs`` do not fit ``actor``; callers that enqueue
        (the HTTP API) use it to refuse a request before anything is sent."""
        spec = self._signature(actor)
        if spec.simple and not kwargs and spec.required <= len(args) <= len(spec.positional):
            # The common case, checked without Signature.bind.
            for value, (name, annotation, check) in zip(args, spec.positional, strict=False):
                if check is not None and not check(value):
                    raise self._mismatch(actor.actor_name, name, annotation, value)
            return
        try:
            bound = spec.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ArgumentMismatch(f"{actor.actor_name}: {error}") from None
        for name, value in bound.arguments.items():
            annotation = spec.hints.get(name)
            if annotation is None or name == "return":
                continue
            kind = spec.signature.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if not _matches(value, annotation):
                raise self._mismatch(actor.actor_name, name, annotation, value)

    @staticmethod
    def _mismatch(actor_name: str, name: str, annotation: Any, value: Any) -> ArgumentMismatch:
        expected = _type_name(annotation)
        return ArgumentMismatch(
            f"{actor_name}: argument {name!r} must be {expected}, got {type(value).__name__} {value!r:.80}"
        )
