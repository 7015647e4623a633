"""Blocking twins of async methods, produced in one place.

Every blocking call runs on one shared event loop in a background thread (an anyio blocking
portal). That makes blocking calls work inside a running event loop too (a notebook), and keeps
each provider's HTTP connection pool on a single loop.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Concatenate, ParamSpec, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None


def portal() -> BlockingPortal:
    """The process-wide portal, started on first use and stopped at interpreter exit."""
    global _portal, _portal_cm
    with _lock:
        if _portal is None:
            _portal_cm = start_blocking_portal()
            _portal = _portal_cm.__enter__()
            atexit.register(_stop_portal)
        return _portal


def _stop_portal() -> None:
    global _portal, _portal_cm
    with _lock:
        if _portal_cm is not None:
            _portal_cm.__exit__(None, None, None)
        _portal, _portal_cm = None, None


def run_blocking(function: Callable[[], Awaitable[T]]) -> T:
    """Run an async callable to completion from synchronous code."""
    return portal().call(function)


def blocking(
    async_method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], T]:
    """The blocking twin of an async method: `chat = blocking(achat)`. It looks the async method
    up on the instance, so a subclass that overrides `achat` gets a matching `chat`."""
    name = async_method.__name__

    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound: Callable[P, Awaitable[T]] = getattr(self, name)
        return run_blocking(functools.partial(bound, *args, **kwargs))

    method.__name__ = method.__qualname__ = name.removeprefix("a")
    method.__doc__ = f"Blocking twin of `{name}`."
    return method


class BlockingIterator(Iterator[T]):
    """Iterates an async iterator from synchronous code, one step at a time on the portal."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source

    def __iter__(self) -> BlockingIterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return run_blocking(self._source.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Stop early and release the connection."""
        aclose: Any = getattr(self._source, "aclose", None)
        if aclose is not None:
            run_blocking(aclose)
