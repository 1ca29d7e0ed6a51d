"""Checking an actor's arguments against its type annotations before it runs."""

from __future__ import annotations

import inspect
import logging
import types
import typing
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


class ArgumentTypes(Middleware):
    """Fail a message whose arguments do not fit its actor's signature, naming the argument.

    The failure is an ``ArgumentMismatch``, an ``InvalidArgument`` (bad input): the job ends ``failed``
    and is never retried. Only annotations of plain types (``str``, ``int``, ``float``, ``bool``,
    ``list``, ``dict``, unions and ``None``) are checked; any other annotation is accepted as it is.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._signatures: dict[str, tuple[inspect.Signature, dict[str, Any]]] = {}

    def _signature(self, actor: Any) -> tuple[inspect.Signature, dict[str, Any]]:
        cached = self._signatures.get(actor.actor_name)
        if cached is None:
            try:
                hints = typing.get_type_hints(actor.fn)
            except Exception:
                hints = {}
            cached = self._signatures[actor.actor_name] = (inspect.signature(actor.fn), hints)
        return cached

    def before_process_message(self, broker: Broker, message: Any) -> None:
        actor = broker.get_actor(message.actor_name)
        signature, hints = self._signature(actor)
        try:
            bound = signature.bind(*message.args, **message.kwargs)
        except TypeError as error:
            raise ArgumentMismatch(f"{message.actor_name}: {error}") from None
        for name, value in bound.arguments.items():
            annotation = hints.get(name)
            if annotation is None or name == "return":
                continue
            kind = signature.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if not _matches(value, annotation):
                raise ArgumentMismatch(
                    f"{message.actor_name}: argument {name!r} must be {_type_name(annotation)}, "
                    f"got {type(value).__name__} {value!r:.80}"
                )
