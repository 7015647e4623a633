"""The fake provider server itself: framing, faults, rate limits, counters, the command line.

Plain httpx clients, so these tests see the bytes. The official SDKs are driven in
`test_sdk_conformance.py`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from evalpipe.testing import VENDORS, FakeServer, Fault
from evalpipe.testing._answers import answer_for, instance_for, split_pieces
from evalpipe.testing._wire import Call, Operation


def new_key() -> str:
    return f"sk-{uuid.uuid4().hex[:12]}"


def openai_chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def post_openai(server: FakeServer, key: str, body: dict[str, Any], timeout: float = 5.0) -> httpx.Response:
    url = server.url_for("openai") + "/chat/completions"
    return httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=timeout)


def sse_data(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: ")]


# -- answers ------------------------------------------------------------------------------------
def test_answer_is_an_echo_cut_to_max_tokens() -> None:
    call = Call(Operation.CHAT, "m", prompt="one two three [[latency:0]]", texts=["be brief", "one two three"])
    answer = answer_for(call)
    assert (answer.text, answer.finish.value, answer.input_tokens, answer.output_tokens) == (
        "Echo: one two three",
        "stop",
        5,
        4,
    )
    call.max_tokens = 2
    assert (answer_for(call).text, answer_for(call).finish.value) == ("Echo: one", "length")


@pytest.mark.parametrize("text", ["", "a", "Echo: a  b\nc ", "  lead", "x\n\n"])
def test_stream_pieces_join_back_to_the_text(text: str) -> None:
    assert "".join(split_pieces(text)) == text


def test_schema_instances_are_valid() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 8},
            "age": {"type": "integer", "minimum": 3},
            "score": {"type": "number", "exclusiveMaximum": -1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["cat", "dog"]},
            "ok": {"type": "boolean"},
            "nested": {"$ref": "#/$defs/Nested"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        },
        "required": ["name"],
        "$defs": {"Nested": {"type": "object", "properties": {"x": {"type": ["integer", "null"]}}}},
    }
    value = instance_for(schema)
    assert len(value["name"]) >= 8 and value["age"] >= 3 and value["score"] < -1
    assert value["tags"] == ["text", "text"] and value["kind"] == "cat" and value["ok"] is True
    assert value["nested"] == {"x": 0} and value["maybe"] == 0
    gemini_style = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}, "s": {"type": "STRING"}}}
    assert instance_for(gemini_style) == {"n": 0, "s": "text"}


def test_embeddings_are_unit_vectors_closer_for_shared_words(fake_server: FakeServer) -> None:
    body = {
        "model": "text-embedding-3-small",
        "input": ["red apple pie", "red apple tart", "quantum physics"],
    }
    url = fake_server.url_for("openai") + "/embeddings"
    data = httpx.post(url, json=body, headers={"authorization": f"Bearer {new_key()}"}).json()
    a, b, c = (item["embedding"] for item in data["data"])
    assert len(a) == 64 and math.isclose(sum(x * x for x in a), 1.0)

    def cosine(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert cosine(a, b) > cosine(a, c)
    sized = httpx.post(url, json={**body, "dimensions": 16}, headers={"authorization": "Bearer k"}).json()
    assert len(sized["data"][0]["embedding"]) == 16


# -- framing ------------------------------------------------------------------------------------
def test_openai_stream_framing(fake_server: FakeServer) -> None:
    body = openai_chat("hi there", stream=True, stream_options={"include_usage": True})
    response = post_openai(fake_server, new_key(), body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text.endswith("data: [DONE]\n\n")
    events = [json.loads(data) for data in sse_data(response.text)[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Echo: hi there"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 3
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("vendor", "path", "comment"),
    [
        ("deepseek", "/chat/completions", ": keep-alive"),
        ("openrouter", "/chat/completions", ": OPENROUTER PROCESSING"),
    ],
)
def test_keep_alive_comments(fake_server: FakeServer, vendor: str, path: str, comment: str) -> None:
    url = fake_server.url_for(vendor) + path
    response = httpx.post(url, json=openai_chat("x", stream=True), headers={"authorization": "Bearer k"})
    assert response.text.startswith(comment + "\n\n") and response.text.endswith("data: [DONE]\n\n")


def test_deepseek_reasoner_thinks_before_answering(fake_server: FakeServer) -> None:
    url = fake_server.url_for("deepseek") + "/chat/completions"
    body = {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "why"}]}
    message = httpx.post(url, json=body, headers={"authorization": "Bearer k"}).json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Echo: why", "reasoning_content": "Thinking: why"}


def test_xai_puts_usage_on_the_finish_chunk(fake_server: FakeServer) -> None:
    url = fake_server.url_for("xai") + "/chat/completions"
    body = {**openai_chat("a b", stream=True, stream_options={"include_usage": True}), "model": "grok-3-mini"}
    events = [
        json.loads(d) for d in sse_data(httpx.post(url, json=body, headers={"authorization": "Bearer k"}).text)[:-1]
    ]
    usage = events[-1]["usage"]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    # grok-3-mini thinks ("Thinking: a b"); xAI bills those 3 tokens on top of completion_tokens.
    assert (usage["completion_tokens"], usage["completion_tokens_details"]["reasoning_tokens"]) == (3, 3)
    assert usage["total_tokens"] == 2 + 3 + 3


def test_mistral_refuses_seed_and_answers_flat_errors(fake_server: FakeServer) -> None:
    url = fake_server.url_for("mistral") + "/chat/completions"
    response = httpx.post(url, json=openai_chat("x", seed=7), headers={"authorization": "Bearer k"})
    assert response.status_code == 422 and response.json()["object"] == "error"
    ok = httpx.post(url, json=openai_chat("x", random_seed=7), headers={"authorization": "Bearer k"})
    assert ok.status_code == 200


def test_azure_deployment_route_needs_api_version(fake_server: FakeServer) -> None:
    base = fake_server.url_for("azure") + "/openai/deployments/my-gpt/chat/completions"
    headers = {"api-key": "k"}
    assert httpx.post(base, json=openai_chat("x"), headers=headers).status_code == 404
    ok = httpx.post(
        base,
        params={"api-version": "2024-10-21"},
        json={"messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )
    assert ok.status_code == 200 and ok.json()["model"] == "my-gpt"


def test_anthropic_event_sequence(fake_server: FakeServer) -> None:
    url = fake_server.url_for("anthropic") + "/v1/messages"
    body = {
        "model": "claude",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "yo"}],
    }
    response = httpx.post(url, json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    names = [line[len("event: ") :] for line in response.text.split("\n") if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "[DONE]" not in response.text


def test_anthropic_requires_version_max_tokens_and_top_level_system(fake_server: FakeServer) -> None:
    url = fake_server.url_for("anthropic") + "/v1/messages"
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "yo"}]}
    assert httpx.post(url, json=body, headers={"x-api-key": "k"}).status_code == 400
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    no_max = {k: v for k, v in body.items() if k != "max_tokens"}
    assert "max_tokens" in httpx.post(url, json=no_max, headers=headers).json()["error"]["message"]
    system_role = {
        **body,
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "yo"}],
    }
    assert httpx.post(url, json=system_role, headers=headers).status_code == 400


def test_gemini_sse_events_end_with_crlf(fake_server: FakeServer) -> None:
    url = fake_server.url_for("gemini") + "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "a b"}]}]}
    response = httpx.post(url, params={"alt": "sse"}, json=body, headers={"x-goog-api-key": "k"})
    events = response.text.split("\r\n\r\n")
    assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1])
    last = json.loads(events[-2][len("data: ") :])
    assert last["candidates"][0]["finishReason"] == "STOP" and last["usageMetadata"]["candidatesTokenCount"] == 3
    array = httpx.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in array.json()] == [
        "Echo: ",
        "a ",
        "b",
        "",
    ]


def test_ollama_streams_ndjson_by_default(fake_server: FakeServer) -> None:
    url = fake_server.url_for("ollama") + "/api/chat"
    response = httpx.post(url, json={"model": "llama3.2", "messages": [{"role": "user", "content": "hey"}]})
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n") and "\n\n" not in response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == "Echo: hey"
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["eval_count"] == 2
    assert isinstance(final["total_duration"], int) and all(not line["done"] for line in lines[:-1])


def test_phind_streams_data_lines(fake_server: FakeServer) -> None:
    url = fake_server.url_for("phind") + "/agent/"
    body = {
        "message_history": [{"role": "user", "content": "hi"}],
        "requested_model": "Phind-70B",
        "user_input": "hi",
    }
    events = [json.loads(d) for d in sse_data(httpx.post(url, json=body).text)]
    assert "".join(e["choices"][0]["delta"]["content"] for e in events) == "Echo: hi"


# -- auth ---------------------------------------------------------------------------------------
AUTH_CASES = {
    # vendor: (path, header carrying the key, statuses for: no key, an "invalid..." key, a "forbidden..." key)
    "openai": ("/chat/completions", "authorization", (401, 401, 403)),
    "azure": ("/openai/v1/chat/completions", "api-key", (401, 401, 403)),
    "anthropic": ("/v1/messages", "x-api-key", (401, 401, 403)),
    "gemini": ("/v1beta/models/g:generateContent", "x-goog-api-key", (403, 400, 403)),
}


@pytest.mark.parametrize("vendor", sorted(AUTH_CASES))
def test_keys_missing_invalid_forbidden(fake_server: FakeServer, vendor: str) -> None:
    path, header, expected = AUTH_CASES[vendor]
    url = fake_server.url_for(vendor) + path

    def headers(key: str) -> dict[str, str]:
        value = f"Bearer {key}" if header == "authorization" else key
        return {"anthropic-version": "2023-06-01", **({header: value} if key else {})}

    body = {**openai_chat("x"), "max_tokens": 5, "contents": [{"parts": [{"text": "x"}]}]}
    statuses = (
        httpx.post(url, json=body, headers=headers("")).status_code,
        httpx.post(url, json=body, headers=headers("invalid-key")).status_code,
        httpx.post(url, json=body, headers=headers("forbidden-key")).status_code,
    )
    assert statuses == expected
    assert httpx.post(url, json=body, headers=headers("good")).status_code == 200


def test_gemini_key_in_query(fake_server: FakeServer) -> None:
    url = fake_server.url_for("gemini") + "/v1beta/models/g:generateContent"
    response = httpx.post(url, params={"key": "k"}, json={"contents": [{"parts": [{"text": "x"}]}]})
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == "Echo: x"


# -- faults -------------------------------------------------------------------------------------
def test_marker_fault_fails_the_first_n_identical_attempts_then_clears(fake_server: FakeServer) -> None:
    key = new_key()
    body = openai_chat("hello [[fault:server_error:2]]")
    first = post_openai(fake_server, key, body)
    second = post_openai(fake_server, key, {**body, "stream": True})  # the stream flag is not part of identity
    other_key = post_openai(fake_server, new_key(), body)  # another key has its own attempts
    third = post_openai(fake_server, key, body)
    assert (first.status_code, second.status_code, other_key.status_code, third.status_code) == (
        500,
        500,
        500,
        200,
    )
    assert first.headers["x-fake-fault"] == "server_error"
    assert third.json()["choices"][0]["message"]["content"] == "Echo: hello"
    stats = fake_server.stats(key)
    assert (stats.requests, stats.succeeded, stats.by_status) == (3, 1, {500: 2, 200: 1})


def test_server_wide_fault_for_the_next_n_calls() -> None:
    with FakeServer(fault="unavailable") as server:
        assert post_openai(server, "k", openai_chat("x")).status_code == 503
        server.set_fault(Fault.OVERLOADED, times=1)
        url = server.url_for("anthropic") + "/v1/messages"
        body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        overloaded = httpx.post(url, json=body, headers=headers)
        assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
        assert httpx.post(url, json=body, headers=headers).status_code == 200
        server.reset()  # back to the constructor's fault
        assert post_openai(server, "k", openai_chat("x")).status_code == 503


def test_unknown_fault_marker_is_a_bad_request(fake_server: FakeServer) -> None:
    assert post_openai(fake_server, new_key(), openai_chat("[[fault:nope]]")).status_code == 400


def test_rate_limit_hint_styles() -> None:
    with FakeServer(retry_after_s=0.2) as server:
        seconds = post_openai(server, "k", openai_chat("[[fault:rate_limit_retry_after]]"))
        millis = post_openai(server, "k", openai_chat("[[fault:rate_limit_retry_after_ms]]"))
        date = post_openai(server, "k", openai_chat("[[fault:rate_limit_http_date]]"))
        plain = post_openai(server, "k", openai_chat("[[fault:rate_limit_gemini]]"))
        url = server.url_for("gemini") + "/v1beta/models/g:generateContent"
        body = {"contents": [{"parts": [{"text": "[[fault:rate_limit_gemini]]"}]}]}
        gemini = httpx.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert {r.status_code for r in (seconds, millis, date, plain, gemini)} == {429}
    assert seconds.headers["retry-after"] == "0.2" and millis.headers["retry-after-ms"] == "200"
    assert email.utils.parsedate_to_datetime(date.headers["retry-after"]).timestamp() > time.time() - 2
    assert "retry-after" not in plain.headers and "retry-after-ms" not in plain.headers
    assert seconds.json()["error"]["code"] == "rate_limit_exceeded"
    error = gemini.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED" and error["details"][0]["retryDelay"] == "0.2s"


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [
        ("openai", 429),
        ("deepseek", 402),
        ("openrouter", 402),
        ("anthropic", 400),
        ("gemini", 429),
        ("ollama", 429),
    ],
)
def test_insufficient_quota_status_per_vendor(fake_server: FakeServer, vendor: str, expected: int) -> None:
    paths = {"anthropic": "/v1/messages", "gemini": "/v1beta/models/g:generateContent", "ollama": "/api/chat"}
    text = "[[fault:insufficient_quota]]"
    body = {**openai_chat(text), "max_tokens": 5, "contents": [{"parts": [{"text": text}]}]}
    headers = {
        "authorization": "Bearer k",
        "x-api-key": "k",
        "anthropic-version": "2023-06-01",
        "x-goog-api-key": "k",
    }
    response = httpx.post(
        fake_server.url_for(vendor) + paths.get(vendor, "/chat/completions"), json=body, headers=headers
    )
    assert response.status_code == expected
    if vendor == "openai":
        assert response.json()["error"]["code"] == "insufficient_quota"


def test_html_error_and_malformed_json(fake_server: FakeServer) -> None:
    key = new_key()
    html = post_openai(fake_server, key, openai_chat("[[fault:html_error]]"))
    assert html.status_code == 502 and html.headers["content-type"].startswith("text/html")
    broken = post_openai(fake_server, key, openai_chat("[[fault:malformed_json]]"))
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    stream = post_openai(fake_server, key, openai_chat("[[fault:malformed_json]]", stream=True))
    with pytest.raises(json.JSONDecodeError):
        [json.loads(d) for d in sse_data(stream.text)[:-1]]
    assert fake_server.stats(key).succeeded == 0


def test_truncated_stream_ends_cleanly_without_terminal_event(fake_server: FakeServer) -> None:
    key = new_key()
    response = post_openai(fake_server, key, openai_chat("one two three four [[fault:truncated_stream]]", stream=True))
    assert response.status_code == 200 and "[DONE]" not in response.text and 'finish_reason":"stop' not in response.text
    with pytest.raises(httpx.RemoteProtocolError):
        post_openai(fake_server, key, openai_chat("[[fault:truncated_stream]]"))
    assert fake_server.stats(key).succeeded == 0
    phind = {"message_history": [{"role": "user", "content": "a b c [[fault:truncated_stream]]"}]}
    with pytest.raises(httpx.RemoteProtocolError):  # no terminal event to leave out: the body is cut instead
        httpx.post(fake_server.url_for("phind") + "/agent/", json=phind)


def test_error_event_inside_a_200_stream(fake_server: FakeServer) -> None:
    response = post_openai(fake_server, new_key(), openai_chat("a b c [[fault:error_event]]", stream=True))
    assert response.status_code == 200
    assert json.loads(sse_data(response.text)[-1])["error"]["type"] == "server_error"
    url = fake_server.url_for("ollama") + "/api/chat"
    lines = httpx.post(url, json={"model": "m", "messages": [{"role": "user", "content": "x [[fault:error_event]]"}]})
    assert "error" in json.loads(lines.text.splitlines()[-1])


def test_reset_midstream_after_the_first_delta(fake_server: FakeServer) -> None:
    url = fake_server.url_for("openai") + "/chat/completions"
    received = []
    with (
        pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        httpx.stream(
            "POST",
            url,
            json=openai_chat("a b c [[fault:reset_midstream]]", stream=True),
            headers={"authorization": "Bearer k"},
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            received.append(line)
    assert any(line.startswith("data: ") for line in received)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post_openai(fake_server, "k", openai_chat("[[fault:reset_midstream]]"))


def test_hang_lasts_past_the_client_timeout(fake_server: FakeServer) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post_openai(fake_server, new_key(), openai_chat("[[fault:hang]]"), timeout=0.3)
    assert time.monotonic() - started < 2


def test_hang_midstream_stalls_after_the_first_delta(fake_server: FakeServer) -> None:
    url = fake_server.url_for("openai") + "/chat/completions"
    body = openai_chat("a b c [[fault:hang_midstream]]", stream=True)
    received = []
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream("POST", url, json=body, headers={"authorization": "Bearer k"}, timeout=0.3) as response,
    ):
        received.extend(response.iter_lines())
    assert any(line.startswith("data: ") for line in received)


def test_latency_and_stream_delay_markers(fake_server: FakeServer) -> None:
    started = time.monotonic()
    post_openai(fake_server, new_key(), openai_chat("a b c [[latency:0.2]] [[stream_delay:0.05]]", stream=True))
    assert time.monotonic() - started >= 0.2 + 0.05 * 4


# -- rate limits --------------------------------------------------------------------------------
def test_requests_per_window_per_key() -> None:
    with FakeServer(rpm=2, window_s=0.5) as server:
        first = post_openai(server, "a", openai_chat("x"))
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert post_openai(server, "a", openai_chat("x")).status_code == 200
        limited = post_openai(server, "a", openai_chat("x"))
        assert post_openai(server, "b", openai_chat("x")).status_code == 200  # other keys are not affected
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
        wait_ms = int(limited.headers["retry-after-ms"])
        assert 0 < wait_ms <= 500 and limited.headers["retry-after"] == "1"
        time.sleep(wait_ms / 1000 + 0.02)
        assert post_openai(server, "a", openai_chat("x")).status_code == 200
        assert server.stats("a").by_status == {200: 3, 429: 1}


def test_tokens_per_window_per_key_with_each_vendors_429() -> None:
    with FakeServer(tpm=10, window_s=0.5) as server:
        assert post_openai(server, "k", openai_chat("one two three")).status_code == 200  # 3 in + 4 out
        assert post_openai(server, "k", openai_chat("one two three")).status_code == 429
        url = server.url_for("gemini") + "/v1beta/models/g:generateContent"
        body = {"contents": [{"parts": [{"text": "one two three"}]}]}
        assert httpx.post(url, json=body, headers={"x-goog-api-key": "g"}).status_code == 200
        limited = httpx.post(url, json=body, headers={"x-goog-api-key": "g"})
        assert limited.status_code == 429 and "retry-after" not in limited.headers
        assert limited.json()["error"]["details"][0]["retryDelay"].endswith("s")


# -- counters and control over HTTP -------------------------------------------------------------
def test_stats_and_reset_over_http() -> None:
    with FakeServer() as server:
        post_openai(server, "k1", openai_chat("a b"))
        post_openai(server, "k1", openai_chat("[[fault:server_error]]"))
        post_openai(server, "k2", openai_chat("c", stream=True))
        httpx.post(server.url_for("ollama") + "/api/chat", json={"model": "m", "messages": [], "stream": False})
        mine = httpx.get(server.url + "/_fake/stats", params={"key": "k1"}).json()
        assert mine == {
            "requests": 2,
            "succeeded": 1,
            "input_tokens": 2,
            "output_tokens": 3,
            "by_status": {"200": 1, "500": 1},
        }
        assert httpx.get(server.url + "/_fake/stats").json()["succeeded"] == 3
        assert server.stats("").succeeded == 1  # keyless vendors count under ""
        httpx.post(server.url + "/_fake/fault", json={"fault": "not_found", "times": 1})
        assert post_openai(server, "k1", openai_chat("x")).status_code == 404
        assert httpx.post(server.url + "/_fake/reset").json() == {"ok": True}
        assert server.stats().requests == 0


def test_async_context_manager() -> None:
    async def main() -> str:
        async with FakeServer() as server, httpx.AsyncClient() as client:
            url = server.url_for("openai") + "/chat/completions"
            response = await client.post(url, json=openai_chat("async"), headers={"authorization": "Bearer k"})
            return str(response.json()["choices"][0]["message"]["content"])

    assert asyncio.run(main()) == "Echo: async"


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeServer(host="0.0.0.0")


def test_url_for_every_vendor(fake_server: FakeServer) -> None:
    assert fake_server.url_for("openai") == fake_server.url + "/openai/v1"
    assert fake_server.url_for("gemini") == fake_server.url + "/gemini"
    assert len({fake_server.url_for(v) for v in VENDORS}) == len(VENDORS)
    with pytest.raises(KeyError):
        fake_server.url_for("nope")


def test_command_line_prints_its_url_first() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "evalpipe.testing", "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            health = httpx.get(url + "/_fake/health", timeout=5).json()
            assert health["vendors"]["anthropic"] == url + "/anthropic"
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert process.returncode == 0
