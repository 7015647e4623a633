"""`ContextValue`: a context variable set for the length of a `with` block, without a generator."""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ContextValue(Generic[T, R]):
    """`with ContextValue(var, value, result) as result:` sets `var` to `value` for the block and resets it
    after, as a `contextlib.contextmanager` around `var.set` would. The scoring contexts are entered for
    every answer scored, and the generator behind a `contextmanager` cost several times the setting."""

    __slots__ = ("_result", "_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[T], value: T, result: R) -> None:
        self._var = var
        self._value = value
        self._result = result

    def __enter__(self) -> R:
        self._token = self._var.set(self._value)
        return self._result

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._var.reset(self._token)


__all__ = ["ContextValue"]
