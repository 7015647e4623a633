"""The sandbox job templates run in: jinja2's `SandboxedEnvironment` (no attribute escapes) with limits
on what one render may cost, so that a template can neither hang `validate` nor exhaust memory.

One render may take `MAX_RENDER_SECONDS`, produce `MAX_RENDERED_CHARS` characters, nest macro calls
`MAX_CALL_DEPTH` deep; `**` may not make an integer past `MAX_INTEGER_BITS` bits; `*` and every call
or filter argument may not ask for a text, list or width past `MAX_RENDERED_CHARS`; a format width
(`%9999999999d`, `{:>9999999999}`) has at most six digits. The time limit is checked at every loop
iteration, call, filter, `*`/`**`/`%` and output chunk: every for-loop's iterable is wrapped so that
even an empty loop body counts. `**` and `*` are intercepted, which also stops jinja2 from folding a
constant like `9**(9**9)` while it compiles. A limit reached raises `TemplateLimitError`.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_RENDER_SECONDS = 1.0
MAX_RENDERED_CHARS = 10_000_000  # past any vendor's context window: 2.5 M tokens and more
MAX_CALL_DEPTH = 40
MAX_INTEGER_BITS = 4096
MAX_RANGE = 100_000  # jinja2's own sandbox limit, kept
_LOOP_GUARD = "__evalpipe_loop__"  # the wrapper every for-loop's iterable goes through
# A width or precision of a million or more, in a %-format or a str.format field.
_WIDE_FORMAT = re.compile(r"%[-+ #0]*\d*\.?\d{7,}|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


class TemplateLimitError(SecurityError):
    """A template render went past one of the sandbox's limits (time, size, depth)."""


@dataclass(slots=True)
class _Budget:
    """What the render under way has spent."""

    deadline: float
    depth: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"the template ran for more than {MAX_RENDER_SECONDS:g} s (a loop too long?)")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _check_size(what: str, size: int) -> None:
    if size > MAX_RENDERED_CHARS:
        raise TemplateLimitError(f"{what} would be {size:,} long; the limit is {MAX_RENDERED_CHARS:,}")


def _check_arguments(args: Iterable[Any]) -> None:
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDERED_CHARS:
            raise TemplateLimitError(f"an argument of {value:,} is past the limit of {MAX_RENDERED_CHARS:,}")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateLimitError("a format width of a million or more characters is past the limit")


def _guarded_loop(iterable: Any) -> Iterator[Any]:
    for value in iterable:
        _tick()
        yield value


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps `jinja_pass_arg`, which tells jinja2 to pass the context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if name == "format":
            _check_format(next((a for a in args if isinstance(a, str)), None))  # after a passed context
        # Not the filtered value itself (after the context or environment, for filters that take one).
        _check_arguments(args[2 if hasattr(function, "jinja_pass_arg") else 1:])
        _check_arguments(kwargs.values())
        return function(*args, **kwargs)

    return guarded


def _safe_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(numbers):,} numbers; the limit is {MAX_RANGE:,}")
    return numbers


class BoundedSandbox(SandboxedEnvironment):
    """A `SandboxedEnvironment` whose renders are bounded in time, size and depth."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _safe_range
        self.globals[_LOOP_GUARD] = _guarded_loop
        self.filters = {name: _guarded_filter(name, function) for name, function in self.filters.items()}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every loop's iterable goes through `_guarded_loop`, so that nested loops over a long list
        # reach the time limit even when their body outputs and calls nothing.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_LOOP_GUARD, "load"), [loop.iter], [], None, None,
                                   lineno=loop.iter.lineno)
        return tree

    def concat(self, chunks: Iterable[str]) -> str:
        """The rendered text, with the render's budget in force while the template runs."""
        outer = _budget.get()
        token = _budget.set(outer or _Budget(time.monotonic() + MAX_RENDER_SECONDS))
        try:
            parts: list[str] = []
            size = 0
            for chunk in chunks:
                size += len(chunk)
                _check_size("the rendered text", size)
                _tick()
                parts.append(chunk)
            return "".join(parts)
        finally:
            _budget.reset(token)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            bits = right * math.log2(abs(left))
            if bits > MAX_INTEGER_BITS:
                raise TemplateLimitError(f"{left} ** {right} has about {bits:,.0f} bits; the limit is "
                                         f"{MAX_INTEGER_BITS:,}")
        elif operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and _is_int(times):
                    _check_size("a repeated text or list", len(sequence) * times)
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INTEGER_BITS:
                raise TemplateLimitError(f"a product of more than {MAX_INTEGER_BITS:,} bits")
        elif operator == "%":
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _budget.get()
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        budget.tick()
        _check_arguments(args)
        _check_arguments(kwargs.values())
        if getattr(__obj, "__name__", None) == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            old, new = (list(args) + ["", ""])[:2]
            if isinstance(new, str) and isinstance(old, str):
                _check_size("replace()'s result", len(__obj.__self__) * max(len(new), 1) // max(len(old), 1))
        if budget.depth >= MAX_CALL_DEPTH:
            raise TemplateLimitError(f"calls nested more than {MAX_CALL_DEPTH} deep (a macro calling itself?)")
        budget.depth += 1
        try:
            return super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if str(getattr(value, "__name__", "")).startswith("format"):
            _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["MAX_CALL_DEPTH", "MAX_RENDERED_CHARS", "MAX_RENDER_SECONDS", "BoundedSandbox", "TemplateLimitError"]
