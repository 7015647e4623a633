"""Phind: the extension endpoint's body, its `data:` line framing and folding (pure, no network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalpipe import ChatMessage, GenerationParams, LLMBuilder, Provider, errors
from evalpipe.backends.base import StreamState
from evalpipe.backends.framing import DataLineDecoder
from evalpipe.backends.phind import PhindProvider
from evalpipe.testing import FakeServer

FIXTURES = Path(__file__).parent / "fixtures"
EVENTS: list[dict[str, Any]] = json.loads((FIXTURES / "phind_stream.json").read_text(encoding="utf-8"))


def phind() -> PhindProvider:
    provider = LLMBuilder().backend("phind").build()
    assert isinstance(provider, PhindProvider)
    return provider


def test_needs_no_key_and_talks_to_the_extension_endpoint() -> None:
    llm = phind()
    assert llm.config.base_url == "https://https.extension.phind.com/"
    assert llm.model == "Phind-70B"
    assert llm.auth_headers() == {"User-Agent": "", "Accept": "*/*", "Accept-Encoding": "Identity"}


def test_request_body_is_exactly_the_documented_one() -> None:
    request = phind().chat_request([ChatMessage.system("be brief"), ChatMessage.user("Hi")],
                                   GenerationParams(), stream=False)
    assert request.path == "agent/" and request.method == "POST"
    assert request.body == {
        "additional_extension_context": "",
        "allow_magic_buttons": True,
        "is_vscode_extension": True,
        "message_history": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}],
        "requested_model": "Phind-70B",
        "user_input": "Hi",
    }


@pytest.mark.parametrize(("base_url", "path"), [
    ("https://https.extension.phind.com", "agent/"),
    ("https://https.extension.phind.com/agent/", ""),  # the crate's form: the endpoint itself
    ("http://127.0.0.1:8000/phind", "agent/"),
])
def test_the_base_url_may_be_the_host_or_the_endpoint(base_url: str, path: str) -> None:
    llm = LLMBuilder().backend("phind").base_url(base_url).build()
    assert llm.chat_request([ChatMessage.user("Hi")], GenerationParams(), stream=True).path == path


def test_user_input_is_the_last_user_message() -> None:
    messages = [ChatMessage.user("first"), ChatMessage.assistant("answer"), ChatMessage.user("second"),
                ChatMessage.assistant("prefill")]
    body = phind().chat_request(messages, GenerationParams(), stream=True).body
    assert body is not None and body["user_input"] == "second"
    assert len(body["message_history"]) == 4


def test_sampling_parameters_are_never_sent() -> None:
    params = GenerationParams(temperature=0.1, top_p=0.5, top_k=3, max_tokens=9, seed=1, stop=("x",),
                              reasoning_effort="high", reasoning_budget_tokens=2048)
    with_params = phind().chat_request([ChatMessage.user("Hi")], params, stream=False).body
    without = phind().chat_request([ChatMessage.user("Hi")], GenerationParams(), stream=False).body
    assert with_params == without
    assert PhindProvider.ignored_options == {
        "temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "reasoning_effort", "reasoning_budget_tokens"
    }


def test_structured_output_and_embeddings_are_unsupported_not_ignored() -> None:
    assert not PhindProvider.supports_json_schema and not PhindProvider.supports_embeddings
    with pytest.raises(errors.UnsupportedFeatureError, match="json_schema"):
        phind().chat_request([ChatMessage.user("Hi")], GenerationParams(json_schema={"type": "object"}),
                             stream=False)
    with pytest.raises(errors.UnsupportedFeatureError, match="json_schema"):
        structured = LLMBuilder().backend("phind").json_schema({"type": "object"}).build()
        structured.astream([ChatMessage.user("Hi")])  # refused before anything is sent
    with pytest.raises(errors.UnsupportedFeatureError, match="embeddings"):
        phind().embed(["a"])


def test_a_json_body_is_never_an_answer() -> None:
    with pytest.raises(errors.ProtocolError):
        phind().parse_chat({"choices": []})


def body_of(events: list[Any], separator: str, newline: str = "\n") -> bytes:
    return "".join(f"data: {json.dumps(e, ensure_ascii=False)}{newline}{separator}" for e in events).encode()


def decode(body: bytes, cuts: Sequence[int] = ()) -> list[str]:
    decoder = DataLineDecoder()
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    return [p for piece in pieces for p in decoder.feed(piece)] + decoder.flush()


@pytest.mark.parametrize("separator", ["", "\n"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_data_lines_decode_with_or_without_blank_lines(separator: str, newline: str) -> None:
    payloads = decode(body_of(EVENTS, separator, newline))
    assert [json.loads(p) for p in payloads] == EVENTS


def test_a_last_line_without_newline_is_kept_and_other_lines_are_skipped() -> None:
    body = b': keep-alive\nevent: message\ndata: {"a": 1}\nid: 7\n\ndata:{"b": 2}'
    assert decode(body) == ['{"a": 1}', '{"b": 2}']


@given(cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=10),
       separator=st.sampled_from(["", "\n", "\r\n"]))
def test_decoded_lines_do_not_depend_on_chunk_boundaries(cuts: list[int], separator: str) -> None:
    body = body_of(EVENTS, separator)
    assert [json.loads(p) for p in decode(body, cuts)] == EVENTS


def fold(payloads: list[str]) -> tuple[StreamState, list[str]]:
    llm, state = phind(), StreamState()
    texts = [chunk.text for p in payloads if (chunk := llm.read_stream_event(p, state)) is not None]
    return state, texts


def test_deltas_are_concatenated() -> None:
    state, texts = fold(decode(body_of(EVENTS, "")))
    assert texts == ["Hel", "lo, ", "wörld!"]
    assert "".join(state.text) == "Hello, wörld!"
    assert state.finish_reason == "stop" and state.model == "Phind-70B"


def test_done_marker_is_accepted() -> None:
    state, texts = fold([json.dumps(EVENTS[1]), "[DONE]"])
    assert texts == ["Hel"] and state.done


@pytest.mark.parametrize("payload", ['{"choices": [{"delta": {"content": "cut', "[1, 2]"])
def test_malformed_events_are_protocol_errors(payload: str) -> None:
    with pytest.raises(errors.ProtocolError):
        fold([json.dumps(EVENTS[1]), payload])


def test_an_error_event_is_classified() -> None:
    with pytest.raises(errors.RateLimitError):
        fold([json.dumps({"error": {"message": "rate limit exceeded, slow down"}})])


# ---- end to end, over loopback HTTP -------------------------------------------------------------
# Chat, stream, complete, every fault, retries and timeouts of every backend are covered by
# test_on_fake_server.py; these are the Phind-specific paths.


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def live(srv: FakeServer) -> Provider:
    return LLMBuilder().backend("phind").base_url(srv.url_for("phind")).max_retries(0).build()


def test_e2e_sampling_parameters_are_accepted_and_not_sent(srv: FakeServer) -> None:
    # The fake cuts an answer to max_tokens words when it is sent; Phind's answer stays whole.
    sampled = GenerationParams(temperature=0.1, max_tokens=1)
    answer = live(srv).chat([ChatMessage.user("one two three")], sampled)
    assert answer.text == "Echo: one two three" and answer.model == "Phind-70B"


def test_e2e_unsupported_features_fail_before_any_request(srv: FakeServer) -> None:
    srv.reset()
    with pytest.raises(errors.UnsupportedFeatureError):
        live(srv).embed(["a"])
    with pytest.raises(errors.UnsupportedFeatureError):
        live(srv).chat([ChatMessage.user("hi")], GenerationParams(json_schema={"type": "object"}))
    assert srv.stats("").requests == 0


class _FixedBody(BaseHTTPRequestHandler):
    """Answers every POST with status 200 and `body` (the fake server always has text to send)."""

    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.mark.parametrize("body", [b"", b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'])
def test_e2e_an_answer_without_text_is_a_protocol_error(body: bytes) -> None:
    handler = type("Handler", (_FixedBody,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = LLMBuilder().backend("phind").base_url(f"http://127.0.0.1:{server.server_port}").build()
        with pytest.raises(errors.ProtocolError, match="empty"):
            llm.chat([ChatMessage.user("hi")])
    finally:
        server.shutdown()
        server.server_close()
