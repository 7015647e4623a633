"""Scorers by the names job files use: a built-in, or `module:function` for your own."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from evalpipe.errors import ConfigError
from evalpipe.scoring.base import Scorer, as_scorer
from evalpipe.scoring.structured import JsonValid
from evalpipe.scoring.text import Contains, ExactMatch, Regex

BUILT_IN: dict[str, Callable[..., Scorer]] = {
    "contains": Contains,
    "exact_match": ExactMatch,
    "json_valid": JsonValid,
    "regex": Regex,
}


def build_scorer(kind: str, name: str | None = None, options: Mapping[str, Any] | None = None) -> Scorer:
    """The scorer `kind` with `options`; a ConfigError says what is wrong with them."""
    options = dict(options or {})
    if kind in BUILT_IN:
        try:
            return BUILT_IN[kind](**options, name=name or kind)
        except (TypeError, ValueError, re.error) as exc:  # wrong or missing options, a bad regex
            raise ConfigError(f"scorer {kind!r}: {exc}") from None
    if ":" in kind:
        module_name, _, attribute = kind.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"scorer {kind!r} cannot be imported: {exc}") from None
        if options:
            raise ConfigError(f"scorer {kind!r}: custom scorers take no options, got {sorted(options)}")
        return as_scorer(function, name or attribute)
    known = ", ".join(sorted(BUILT_IN))
    raise ConfigError(f"unknown scorer {kind!r}; expected one of: {known}, or module:function")
