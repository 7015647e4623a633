"""evalpipe: one client for many LLMs, and evaluation jobs that answer with numbers."""

# ruff: noqa: E402 - the command's start-up guard runs before the slow imports

from __future__ import annotations

from evalpipe import _command_start

_command_start.guard_command_start()  # first: the imports below are slow; a Ctrl-C there prints no traceback

import importlib
from typing import TYPE_CHECKING, Any

from evalpipe.backends.base import ChatStream, Provider
from evalpipe.backends.registry import LLMBackend
from evalpipe.builder import LLMBuilder
from evalpipe.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConnectionError,
    ContextLengthError,
    EvalpipeError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ProtocolError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TimeoutError,
    TransientError,
    UnsupportedFeatureError,
)
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, Image, StreamChunk, Tool, ToolCall, Usage

if TYPE_CHECKING:
    from evalpipe.chain import MultiPromptChain, PromptChain
    from evalpipe.evaluator import EvalResult, LLMEvaluator, ParamSet

# The evaluation API loads the runner (pyarrow, numpy, the scorers' libraries): imported on first use,
# so that a program using only the client starts quickly and small.
_LAZY = {"PromptChain": "evalpipe.chain", "MultiPromptChain": "evalpipe.chain", "LLMEvaluator": "evalpipe.evaluator",
         "ParamSet": "evalpipe.evaluator", "EvalResult": "evalpipe.evaluator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evalpipe' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ChatMessage",
    "ChatResponse",
    "ChatStream",
    "ConfigError",
    "ConnectionError",
    "ContextLengthError",
    "EvalResult",
    "EvalpipeError",
    "GenerationParams",
    "Image",
    "LLMBackend",
    "LLMBuilder",
    "LLMEvaluator",
    "MultiPromptChain",
    "NotFoundError",
    "OverloadedError",
    "ParamSet",
    "PermissionDeniedError",
    "PromptChain",
    "ProtocolError",
    "Provider",
    "ProviderError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "StreamChunk",
    "TimeoutError",
    "Tool",
    "ToolCall",
    "TransientError",
    "UnsupportedFeatureError",
    "Usage",
    "__version__",
]
