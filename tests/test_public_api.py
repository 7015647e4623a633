"""The public surface is exactly what the README documents."""

from __future__ import annotations

import evalpipe

DOCUMENTED = {
    # the client
    "LLMBuilder", "LLMBackend", "Provider", "ChatStream",
    # values
    "ChatMessage", "ChatResponse", "GenerationParams", "StreamChunk", "Usage", "Image", "Tool", "ToolCall",
    # the error tree
    "EvalpipeError", "ConfigError", "UnsupportedFeatureError", "ProviderError", "AuthenticationError",
    "PermissionDeniedError", "NotFoundError", "BadRequestError", "ContextLengthError", "QuotaExceededError",
    "ProtocolError", "TransientError", "RateLimitError", "OverloadedError", "ServerError", "TimeoutError",
    "ConnectionError",
    # evaluation
    "PromptChain", "MultiPromptChain", "LLMEvaluator", "ParamSet", "EvalResult",
    "__version__",
}


def test_all_is_exactly_the_documented_surface() -> None:
    assert set(evalpipe.__all__) == DOCUMENTED
    for name in evalpipe.__all__:
        assert hasattr(evalpipe, name), name


def test_backend_members() -> None:
    assert {b.name for b in evalpipe.LLMBackend} == {
        "OPENAI", "ANTHROPIC", "OLLAMA", "DEEPSEEK", "PHIND", "GOOGLE", "XAI", "GROQ", "MISTRAL",
        "OPENROUTER", "AZURE_OPENAI", "LOCAL",
    }


def test_error_classes_document_themselves() -> None:
    for name in evalpipe.__all__:
        obj = getattr(evalpipe, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert obj.__doc__, f"{name} needs a docstring"
            assert obj.__name__ in (evalpipe.errors.__doc__ or ""), f"{name} missing from the drawn tree"


def test_chat_message_constructors() -> None:
    assert evalpipe.ChatMessage.system("s") == evalpipe.ChatMessage("system", "s")
    assert evalpipe.ChatMessage.user("u").role == "user"
    assert evalpipe.ChatMessage.assistant("a").content == "a"
