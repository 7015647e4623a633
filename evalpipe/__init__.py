"""evalpipe: one client for many LLMs, and evaluation jobs that answer with numbers."""

from __future__ import annotations

from evalpipe.backends.base import ChatStream, Provider
from evalpipe.backends.registry import LLMBackend
from evalpipe.builder import LLMBuilder
from evalpipe.chain import MultiPromptChain, PromptChain
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
from evalpipe.evaluator import EvalResult, LLMEvaluator, ParamSet
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, StreamChunk, Usage

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
    "TransientError",
    "UnsupportedFeatureError",
    "Usage",
    "__version__",
]
