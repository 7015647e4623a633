"""The fake server's fidelity, proven by the vendors' official SDKs.

Each SDK is pointed at the fake with only a base URL and must parse every answer and raise its
own exception types for the fake's errors. If an SDK cannot parse the fake, the fake is wrong.
SDK retries are off so each error surfaces at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import BaseModel

from evalpipe.testing import FakeServer


def new_key() -> str:
    return f"sk-{uuid.uuid4().hex[:12]}"


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


class City(BaseModel):
    name: str
    population: int
    coastal: bool
    districts: list[str]


# -- OpenAI and compatibles ---------------------------------------------------------------------
def openai_client(server: FakeServer, vendor: str = "openai", key: str | None = None, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url_for(vendor), api_key=key or new_key(), max_retries=0, **kw)


def test_openai_chat(fake_server: FakeServer) -> None:
    key = new_key()
    client = openai_client(fake_server, key=key)
    messages = [{"role": "system", "content": "Be terse."}, *user("hello there world")]
    response = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    choice = response.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Echo: hello there world", "stop")
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 4)
    short = client.chat.completions.create(model="gpt-4o-mini", messages=user("a b c d"), max_completion_tokens=2)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("Echo: a", "length")
    assert fake_server.stats(key).succeeded == 2


def test_openai_stream_with_usage(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=user("stream me"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream me"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


def test_openai_embeddings(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    packed = client.embeddings.create(model="text-embedding-3-small", input=["cats purr", "cats sleep"])
    plain = client.embeddings.create(
        model="text-embedding-3-small",
        input=["cats purr", "cats sleep"],
        encoding_format="float",
        dimensions=32,
    )
    assert len(packed.data) == 2 and len(packed.data[0].embedding) == 64
    assert len(plain.data[1].embedding) == 32 and packed.usage.prompt_tokens == 4
    assert packed.data[0].embedding[:3] == pytest.approx(
        client.embeddings.create(model="m", input="cats purr", encoding_format="float").data[0].embedding[:3],
        rel=1e-6,
    )


def test_openai_json_schema(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=user("a city"), response_format=City)
    city = parsed.choices[0].message.parsed
    assert isinstance(city, City) and city.districts
    mode = client.chat.completions.create(
        model="gpt-4o-mini", messages=user("hi"), response_format={"type": "json_object"}
    )
    assert json.loads(mode.choices[0].message.content or "") == {"echo": "hi"}


@pytest.mark.parametrize(
    ("vendor", "model"),
    [
        ("deepseek", "deepseek-chat"),
        ("xai", "grok-3-mini"),
        ("groq", "llama-3.1-8b-instant"),
        ("mistral", "mistral-small-latest"),
        ("openrouter", "openai/gpt-4o-mini"),
    ],
)
def test_openai_sdk_on_compatible_vendors(fake_server: FakeServer, vendor: str, model: str) -> None:
    client = openai_client(fake_server, vendor)
    response = client.chat.completions.create(model=model, messages=user("compatible"), max_tokens=10)
    assert response.choices[0].message.content == "Echo: compatible"
    stream = client.chat.completions.create(
        model=model, messages=user("compatible stream"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: compatible stream"
    assert any(c.usage is not None and c.usage.completion_tokens == 3 for c in chunks)
    assert [m.id for m in client.models.list()]


def test_deepseek_reasoning_content_via_openai_sdk(fake_server: FakeServer) -> None:
    client = openai_client(fake_server, "deepseek")
    message = client.chat.completions.create(model="deepseek-reasoner", messages=user("why")).choices[0].message
    assert message.content == "Echo: why" and (message.model_extra or {})["reasoning_content"] == "Thinking: why"
    chunks = list(client.chat.completions.create(model="deepseek-reasoner", messages=user("why"), stream=True))
    thinking = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    assert thinking == "Thinking: why"


def test_openai_sdk_reads_refusals_tool_calls_and_usage_details(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    refused = client.chat.completions.create(model="gpt-4o-mini", messages=user("no [[shape:refusal]]"))
    assert refused.choices[0].message.refusal == "I'm sorry, but I can't help with that."
    assert refused.choices[0].message.content is None
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=user("no [[shape:refusal]]"),
                                                 stream=True))
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == refused.choices[0].message.refusal
    tool = client.chat.completions.create(model="gpt-4o-mini", messages=user("w [[shape:tool_call]]")).choices[0]
    assert tool.finish_reason == "tool_calls" and tool.message.tool_calls is not None
    function = tool.message.tool_calls[0].function  # type: ignore[union-attr]
    assert json.loads(function.arguments) == {"city": "Paris"}
    streamed = list(client.chat.completions.create(model="gpt-4o-mini", messages=user("w [[shape:tool_call]]"),
                                                   stream=True))
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in streamed if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"city": "Paris"}
    usage = client.chat.completions.create(model="o3-mini", messages=user("a b [[cached:2]]")).usage
    assert usage is not None and usage.completion_tokens_details is not None and usage.prompt_tokens_details
    assert (usage.completion_tokens_details.reasoning_tokens, usage.prompt_tokens_details.cached_tokens) == (3, 2)


@pytest.mark.parametrize(
    ("vendor", "model", "field"),
    [("groq", "openai/gpt-oss-20b", "reasoning"), ("openrouter", "deepseek/deepseek-r1", "reasoning"),
     ("xai", "grok-3-mini", "reasoning_content")],
)
def test_openai_sdk_reads_each_vendors_reasoning_field(fake_server: FakeServer, vendor: str, model: str,
                                                       field: str) -> None:
    client = openai_client(fake_server, vendor)
    message = client.chat.completions.create(model=model, messages=user("why")).choices[0].message
    assert message.content == "Echo: why" and (message.model_extra or {})[field] == "Thinking: why"
    chunks = list(client.chat.completions.create(model=model, messages=user("why"), stream=True))
    thinking = "".join((c.choices[0].delta.model_extra or {}).get(field) or "" for c in chunks if c.choices)
    assert thinking == "Thinking: why"
    if vendor == "openrouter":
        details = (message.model_extra or {})["reasoning_details"]
        assert details == [{"type": "reasoning.text", "text": "Thinking: why", "signature": None,
                            "format": "unknown", "index": 0}]


def test_openai_sdk_on_mistral_thinking_chunks(fake_server: FakeServer) -> None:
    client = openai_client(fake_server, "mistral")
    message = client.chat.completions.create(model="magistral-small-latest", messages=user("why")).choices[0].message
    content: Any = message.content
    assert [chunk["type"] for chunk in content] == ["thinking", "text"] and content[1]["text"] == "Echo: why"


def test_openai_sdk_raises_for_a_request_error_inside_a_stream(fake_server: FakeServer) -> None:
    client = openai_client(fake_server)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=user("a b c [[fault:error_event]] [[shape:invalid_request]]"), stream=True
    )
    with pytest.raises(openai.APIError, match="Invalid value"):
        list(stream)


def test_azure_sdk_content_filter(fake_server: FakeServer) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=fake_server.url_for("azure"), api_key=new_key(), api_version="2024-10-21", max_retries=0
    )
    filtered = client.chat.completions.create(model="d", messages=user("x [[shape:content_filter]]"))
    assert filtered.choices[0].finish_reason == "content_filter"
    assert (filtered.choices[0].model_extra or {})["content_filter_results"]["violence"]["filtered"] is True
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="d", messages=user("x [[shape:content_filter_error]]"))
    assert info.value.code == "content_filter"
    body: Any = info.value.body
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"


def test_azure_openai_sdk(fake_server: FakeServer) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=fake_server.url_for("azure"),
        api_key=new_key(),
        api_version="2024-10-21",
        max_retries=0,
    )
    response = client.chat.completions.create(model="my-deployment", messages=user("azure"))
    assert response.choices[0].message.content == "Echo: azure" and response.model == "my-deployment"
    chunks = list(client.chat.completions.create(model="my-deployment", messages=user("azure stream"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: azure stream"
    assert len(client.embeddings.create(model="my-embedder", input="x").data[0].embedding) == 64
    v1 = openai.OpenAI(base_url=fake_server.url_for("azure") + "/openai/v1", api_key=new_key(), max_retries=0)
    assert v1.chat.completions.create(model="gpt-4o-mini", messages=user("v1")).choices[0].message.content == "Echo: v1"
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=fake_server.url_for("azure"),
            api_key="invalid",
            api_version="2024-10-21",
            max_retries=0,
        ).chat.completions.create(model="d", messages=user("x"))


@pytest.mark.parametrize(
    ("marker", "error", "status"),
    [
        ("rate_limit_retry_after", openai.RateLimitError, 429),
        ("insufficient_quota", openai.RateLimitError, 429),
        ("server_error", openai.InternalServerError, 500),
        ("overloaded", openai.InternalServerError, 503),
        ("not_found", openai.NotFoundError, 404),
        ("context_length", openai.BadRequestError, 400),
        ("html_error", openai.InternalServerError, 502),
    ],
)
def test_openai_sdk_raises_its_own_errors(
    fake_server: FakeServer, marker: str, error: type[openai.APIStatusError], status: int
) -> None:
    client = openai_client(fake_server)
    with pytest.raises(error) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=user(f"x [[fault:{marker}]]"))
    assert caught.value.status_code == status
    if marker == "insufficient_quota":
        assert caught.value.code == "insufficient_quota"
    if marker == "context_length":
        assert caught.value.code == "context_length_exceeded"


def test_openai_sdk_auth_and_transport_errors(fake_server: FakeServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai_client(fake_server, key="invalid-key").chat.completions.create(model="m", messages=user("x"))
    with pytest.raises(openai.PermissionDeniedError):
        openai_client(fake_server, key="forbidden-key").chat.completions.create(model="m", messages=user("x"))
    with pytest.raises(openai.APIStatusError) as quota:
        openai_client(fake_server, "deepseek").chat.completions.create(
            model="deepseek-chat", messages=user("[[fault:insufficient_quota]]")
        )
    assert quota.value.status_code == 402
    client = openai_client(fake_server, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=user("[[fault:hang]]"))
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=user("[[fault:reset_midstream]]"))
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model="m", messages=user("a b [[fault:reset_midstream]]"), stream=True))


@pytest.mark.parametrize("vendor", ["openai", "openrouter"])
def test_openai_sdk_raises_on_an_error_event(fake_server: FakeServer, vendor: str) -> None:
    client = openai_client(fake_server, vendor)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="m", messages=user("a b [[fault:error_event]]"), stream=True))


def test_openai_sdk_retry_honours_the_fakes_hint() -> None:
    with FakeServer(retry_after_s=0.05) as server:
        key = new_key()
        client = openai.OpenAI(base_url=server.url_for("openai"), api_key=key, max_retries=2)
        response = client.chat.completions.create(
            model="m", messages=user("again [[fault:rate_limit_retry_after_ms:2]]")
        )
        assert response.choices[0].message.content == "Echo: again"
        stats = server.stats(key)
        assert (stats.requests, stats.succeeded, stats.by_status) == (3, 1, {429: 2, 200: 1})


# -- Anthropic ----------------------------------------------------------------------------------
def anthropic_client(server: FakeServer, key: str | None = None, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url_for("anthropic"), api_key=key or new_key(), max_retries=0, **kw)


def test_anthropic_messages(fake_server: FakeServer) -> None:
    client = anthropic_client(fake_server)
    message = client.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=100, system="Be terse.", messages=user("hi claude")
    )
    block = message.content[0]
    assert block.type == "text" and block.text == "Echo: hi claude"
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == (
        "end_turn",
        4,
        3,
    )
    short = client.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=1,
        system=[{"type": "text", "text": "Be terse."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two"}]}],
    )
    assert short.stop_reason == "max_tokens" and short.content[0].type == "text" and short.content[0].text == "Echo:"


def test_anthropic_stream(fake_server: FakeServer) -> None:
    client = anthropic_client(fake_server)
    with client.messages.stream(model="claude", max_tokens=100, messages=user("stream please")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: stream please"
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == ("end_turn", 2, 3)


@pytest.mark.parametrize(
    ("marker", "error", "status"),
    [
        ("rate_limit_retry_after", anthropic.RateLimitError, 429),
        ("overloaded", anthropic.OverloadedError, 529),
        ("server_error", anthropic.InternalServerError, 500),
        ("insufficient_quota", anthropic.BadRequestError, 400),
        ("not_found", anthropic.NotFoundError, 404),
    ],
)
def test_anthropic_sdk_raises_its_own_errors(
    fake_server: FakeServer, marker: str, error: type[anthropic.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as caught:
        anthropic_client(fake_server).messages.create(
            model="claude", max_tokens=10, messages=user(f"[[fault:{marker}]]")
        )
    assert caught.value.status_code == status


def test_anthropic_sdk_auth_and_stream_errors(fake_server: FakeServer) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(fake_server, key="invalid").messages.create(model="c", max_tokens=5, messages=user("x"))
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic_client(fake_server, key="forbidden").messages.create(model="c", max_tokens=5, messages=user("x"))
    with pytest.raises(anthropic.BadRequestError):  # the system prompt belongs at the top level
        anthropic_client(fake_server).messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "system", "content": "s"}, *user("x")],
        )
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        anthropic_client(fake_server).messages.stream(
            model="c", max_tokens=50, messages=user("a b [[fault:error_event]]")
        ) as stream,
    ):
        "".join(stream.text_stream)
    assert "overloaded_error" in str(caught.value)


# -- Ollama -------------------------------------------------------------------------------------
@pytest.fixture
def ollama_client(fake_server: FakeServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake_server.url_for("ollama")) as client:
        yield client


def test_ollama_chat_generate_embed(ollama_client: ollama.Client) -> None:
    client = ollama_client
    reply = client.chat(model="llama3.2", messages=user("hello llama"), stream=False, options={"num_predict": 100})
    assert reply.message.content == "Echo: hello llama" and reply.done and reply.eval_count == 3
    cut = client.chat(model="llama3.2", messages=user("a b c"), stream=False, options={"num_predict": 2})
    assert (cut.message.content, cut.done_reason) == ("Echo: a", "length")
    parts = list(client.chat(model="llama3.2", messages=user("stream llama"), stream=True))
    assert "".join(p.message.content or "" for p in parts) == "Echo: stream llama"
    assert parts[-1].done and parts[-1].prompt_eval_count == 2 and (parts[-1].total_duration or 0) > 0
    assert client.generate(model="llama3.2", prompt="gen", system="sys").response == "Echo: gen"
    assert (
        "".join(p.response or "" for p in client.generate(model="llama3.2", prompt="gen s", stream=True))
        == "Echo: gen s"
    )
    embedded = client.embed(model="nomic-embed-text", input=["a", "b c"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 64
    assert len(client.embeddings(model="nomic-embed-text", prompt="older route").embedding) == 64
    assert [m.model for m in client.list().models]


def test_ollama_format_schema(ollama_client: ollama.Client) -> None:
    client = ollama_client
    reply = client.chat(model="llama3.2", messages=user("a city"), format=City.model_json_schema(), stream=False)
    assert City.model_validate_json(reply.message.content or "").districts


def test_ollama_sdk_raises_response_error(ollama_client: ollama.Client) -> None:
    client = ollama_client
    for marker, status in [
        ("not_found", 404),
        ("server_error", 500),
        ("unavailable", 503),
        ("rate_limit_retry_after", 429),
    ]:
        with pytest.raises(ollama.ResponseError) as caught:
            client.chat(model="llama3.2", messages=user(f"[[fault:{marker}]]"), stream=False)
        assert caught.value.status_code == status
    with pytest.raises(ollama.ResponseError):
        list(client.chat(model="llama3.2", messages=user("a b [[fault:error_event]]"), stream=True))


# -- Google Gemini ------------------------------------------------------------------------------
def gemini_client(server: FakeServer, key: str | None = None) -> genai.Client:
    options = genai_types.HttpOptions(
        base_url=server.url_for("gemini"), retry_options=genai_types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=key or new_key(), http_options=options)


def test_gemini_generate_and_stream(fake_server: FakeServer) -> None:
    client = gemini_client(fake_server)
    config = genai_types.GenerateContentConfig(system_instruction="Be terse.", max_output_tokens=100)
    response = client.models.generate_content(model="gemini-2.0-flash", contents="hello gemini", config=config)
    assert response.text == "Echo: hello gemini"
    assert response.candidates and response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None and (usage.prompt_token_count, usage.candidates_token_count) == (4, 3)
    short = client.models.generate_content(
        model="gemini-2.0-flash",
        contents="a b c",
        config=genai_types.GenerateContentConfig(max_output_tokens=2),
    )
    assert short.candidates and short.candidates[0].finish_reason == genai_types.FinishReason.MAX_TOKENS
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="stream gemini"))
    assert "".join(c.text or "" for c in chunks) == "Echo: stream gemini"
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.total_token_count == 5


def test_gemini_json_schema_and_embeddings(fake_server: FakeServer) -> None:
    client = gemini_client(fake_server)
    config = genai_types.GenerateContentConfig(response_mime_type="application/json", response_schema=City)
    response = client.models.generate_content(model="gemini-2.0-flash", contents="a city", config=config)
    assert isinstance(response.parsed, City)
    embedded = client.models.embed_content(
        model="text-embedding-004",
        contents=["one", "two three"],
        config=genai_types.EmbedContentConfig(output_dimensionality=16),
    )
    assert embedded.embeddings and [len(e.values or []) for e in embedded.embeddings] == [16, 16]


@pytest.mark.parametrize(
    ("marker", "error", "code"),
    [
        ("rate_limit_gemini", genai_errors.ClientError, 429),
        ("insufficient_quota", genai_errors.ClientError, 429),
        ("overloaded", genai_errors.ServerError, 503),
        ("server_error", genai_errors.ServerError, 500),
        ("not_found", genai_errors.ClientError, 404),
    ],
)
def test_gemini_sdk_raises_its_own_errors(
    fake_server: FakeServer, marker: str, error: type[genai_errors.APIError], code: int
) -> None:
    client = gemini_client(fake_server)  # keep a reference: a collected Client closes its connection pool
    with pytest.raises(error) as caught:
        client.models.generate_content(model="gemini-2.0-flash", contents=f"[[fault:{marker}]]")
    assert caught.value.code == code
    if marker == "rate_limit_gemini":
        assert caught.value.details["error"]["details"][0]["retryDelay"] == "1s"


def test_gemini_sdk_auth_and_stream_errors(fake_server: FakeServer) -> None:
    invalid_client, forbidden_client = (
        gemini_client(fake_server, "invalid"),
        gemini_client(fake_server, "forbidden"),
    )
    with pytest.raises(genai_errors.ClientError) as invalid:
        invalid_client.models.generate_content(model="g", contents="x")
    assert invalid.value.code == 400 and invalid.value.status == "INVALID_ARGUMENT"
    with pytest.raises(genai_errors.ClientError) as forbidden:
        forbidden_client.models.generate_content(model="g", contents="x")
    assert forbidden.value.code == 403
    client = gemini_client(fake_server)
    with pytest.raises(genai_errors.ServerError):
        list(client.models.generate_content_stream(model="g", contents="a b [[fault:error_event]]"))
