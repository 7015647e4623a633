"""A recognisable API key never appears in an exception, repr, log line or response object."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from evalpipe import ChatMessage, LLMBuilder, ProviderError
from evalpipe.testing import FakeServer

SECRET = "sk-SECRET-evalpipe-leak-canary-0123456789"
BAD_SECRET = "invalid-SECRET-evalpipe-leak-canary-9876543210"
FAULTS = ["rate_limit_retry_after_ms", "server_error", "malformed_json", "html_error", "insufficient_quota",
          "context_length", "reset_midstream", "error_event", "not_found"]


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    lines: list[str] = []

    def capture(_logger: object, _method: str, event_dict: dict[str, object]) -> str:
        lines.append(json.dumps(event_dict, default=str))
        raise structlog.DropEvent

    structlog.configure(processors=[capture])
    try:
        yield lines
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize("backend,vendor,path", [
    ("openai", "openai", ""), ("anthropic", "anthropic", ""), ("google", "gemini", "/v1beta"),
    ("azure_openai", "azure", ""), ("mistral", "mistral", ""),
])
def test_key_never_leaks(
    backend: str, vendor: str, path: str, captured_logs: list[str], caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with FakeServer(retry_after_s=0.05) as srv:
        for key in (SECRET, BAD_SECRET):
            llm = (LLMBuilder().backend(backend).api_key(key).base_url(srv.url_for(vendor) + path)
                   .model("fake-model").max_retries(1).build())
            seen += [repr(llm), str(llm.config), repr(llm.config)]
            for fault in [*FAULTS, "none"]:
                for call in ("chat", "stream"):
                    try:
                        message = [ChatMessage.user(f"hi [[fault:{fault}]]" if fault != "none" else "hi")]
                        if call == "chat":
                            response = llm.chat(message)
                            seen += [repr(response), json.dumps(response.raw)]
                        else:
                            stream = llm.stream(message)
                            seen += [c.text for c in stream] + [repr(stream.response)]
                    except ProviderError as error:
                        seen += [str(error), repr(error), error.message, repr(error.args)]
    out = capsys.readouterr()
    everything = "\n".join([*seen, *captured_logs, caplog.text, out.out, out.err])
    assert "retrying" in "\n".join(captured_logs)  # the log capture really saw the retry lines
    for key in (SECRET, BAD_SECRET):
        assert key not in everything
        assert key[10:30] not in everything


def test_a_vendor_message_that_quotes_the_key_is_redacted() -> None:
    from evalpipe.backends.classify import classify_status

    LLMBuilder().backend("openai").api_key(SECRET).build()  # building registers the key as a secret
    error = classify_status("openai", 401, {"error": {"message": f"Incorrect API key provided: {SECRET}."}})
    assert SECRET not in str(error) and SECRET not in repr(error)
    assert "Incorrect API key provided: ***" in str(error)
