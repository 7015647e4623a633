"""Scorers by the names job files use: a built-in, or `module:function` for your own.

Any of them takes `negate: true` (1 − its score) and `when: "{{ ... }}"` (only the items for which
the template renders true): see `modifiers`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError

from evalpipe.errors import ConfigError
from evalpipe.scoring.base import Scorer, as_scorer
from evalpipe.scoring.calls import ModelCalls
from evalpipe.scoring.choice import Choice
from evalpipe.scoring.fields import FieldCriterion
from evalpipe.scoring.judge import LLMJudge, tone, toxicity_judge
from evalpipe.scoring.length import Length
from evalpipe.scoring.modifiers import Conditional, Negated
from evalpipe.scoring.normalized import NormalizedMatch, TokenF1
from evalpipe.scoring.numeric import Numeric
from evalpipe.scoring.refusal import IsRefusal
from evalpipe.scoring.self_explain import SelfExplain
from evalpipe.scoring.semantic import SemanticRelevance
from evalpipe.scoring.similarity import Bleu, EditSimilarity, RougeL
from evalpipe.scoring.structured import JsonSchema, JsonValid
from evalpipe.scoring.text import Contains, ExactMatch, Regex
from evalpipe.scoring.tools import ToolCallMatch, ToolCallValid, Trajectory
from evalpipe.scoring.toxicity import Toxicity

# Scorers that call models: built with the job's `ModelCalls` as their first argument, and the
# backend they name (option `backend`, else their default) must be one the job can call.
CALLS_MODELS: dict[str, Callable[..., Scorer]] = {
    "llm_judge": LLMJudge,
    "self_explain": SelfExplain,
    "semantic_relevance": SemanticRelevance,
    "tone": tone,
    "toxicity_judge": toxicity_judge,
}
BUILT_IN: dict[str, Callable[..., Scorer]] = {
    "bleu": Bleu,
    "choice": Choice,
    "contains": Contains,
    "edit_similarity": EditSimilarity,
    "exact_match": ExactMatch,
    "field": FieldCriterion,
    "is_refusal": IsRefusal,
    "json_schema": JsonSchema,
    "json_valid": JsonValid,
    "length": Length,
    "normalized_match": NormalizedMatch,
    "numeric": Numeric,
    "regex": Regex,
    "rouge_l": RougeL,
    "token_f1": TokenF1,
    "tool_call": ToolCallMatch,
    "tool_call_valid": ToolCallValid,
    "toxicity": Toxicity,
    "trajectory": Trajectory,
    **CALLS_MODELS,
}
_GIVEN_BY_THE_JOB = frozenset({"calls", "base_dir"})  # passed by build_scorer, never options of a job file


def build_scorer(kind: str, name: str | None = None, options: Mapping[str, Any] | None = None,
                 calls: ModelCalls | None = None, base_dir: Path | None = None) -> Scorer:
    """The scorer `kind` with `options`; a ConfigError says what is wrong with them.

    `calls` serves scorers that call models (judges, embeddings); `base_dir` is where relative
    file options (a json_schema file) are found, the job file's folder.
    """
    options = dict(options or {})
    negate, when = options.pop("negate", False), options.pop("when", None)
    if not isinstance(negate, bool):
        raise ConfigError(f"scorer {name or kind!r}: negate must be true or false, got {negate!r}")
    scorer = _build(kind, name, options, calls, base_dir)
    if negate:
        scorer = Negated(scorer)
    if when is None:
        return scorer
    try:
        return Conditional(scorer, when)
    except (ValueError, TemplateSyntaxError) as exc:
        raise ConfigError(f"scorer {name or kind!r}: {exc}") from None


def _build(kind: str, name: str | None, options: dict[str, Any], calls: ModelCalls | None,
           base_dir: Path | None) -> Scorer:
    if kind in BUILT_IN:
        factory = BUILT_IN[kind]
        reserved = sorted(_GIVEN_BY_THE_JOB & options.keys())
        if reserved:
            raise ConfigError(f"scorer {kind!r}: {', '.join(reserved)} is not an option")
        arguments: list[Any] = []
        if kind in CALLS_MODELS:
            arguments.append(_calls_for(kind, name or kind, factory, options, calls))
        if "base_dir" in inspect.signature(factory).parameters:
            options["base_dir"] = base_dir
        try:
            return factory(*arguments, **options, name=name or kind)
        except (TypeError, ValueError, re.error, TemplateSyntaxError) as exc:  # wrong options, bad regex/template
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


def model_backend(kind: str, options: Mapping[str, Any]) -> Any:
    """The backend id a scorer of `kind` with `options` calls (its option `backend`, else its default);
    None for a scorer that calls no model, or one whose backend is missing."""
    if kind not in CALLS_MODELS:
        return None
    default = inspect.signature(CALLS_MODELS[kind]).parameters["backend"].default
    return options.get("backend", None if default is inspect.Parameter.empty else default)


def _calls_for(kind: str, name: str, factory: Callable[..., Scorer], options: Mapping[str, Any],
               calls: ModelCalls | None) -> ModelCalls:
    """`calls`, checked (at job load, before any paid call) to reach the backend the scorer names."""
    backend = model_backend(kind, options)
    if backend is None:
        raise ConfigError(f"scorer {name!r} ({kind}) needs the option `backend`: the id of the backend it calls")
    if not isinstance(backend, str):
        raise ConfigError(f"scorer {name!r} ({kind}): backend must be a backend id, got {backend!r}")
    if calls is None:
        raise ConfigError(f"scorer {name!r} ({kind}) calls backend {backend!r}, but no model calls were provided")
    if not calls.has(backend):
        hint = f"; add it under `judges:`, e.g. {{id: {backend}, backend: local}}" if backend == "local" else ""
        raise ConfigError(f"scorer {name!r} ({kind}) calls backend {backend!r}, which the job does not define{hint}")
    return calls
