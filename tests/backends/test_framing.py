"""Stream decoders: the decoded events must not depend on how the bytes were split."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from evalpipe.backends.framing import NDJSONDecoder, SSEDecoder, SSEEvent

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def sse_body(payloads: list[str], newline: str) -> bytes:
    lines = [": keep-alive", ""]
    for payload in payloads:
        lines += ["event: delta", "data: " + json.dumps({"t": payload}), ""]
    return (newline.join(lines) + newline).encode()


@settings(max_examples=300)
@given(payloads=st.lists(texts, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12),
       newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_sse_events_do_not_depend_on_chunk_boundaries(payloads: list[str], cuts: list[int], newline: str) -> None:
    body = sse_body(payloads, newline)
    decoder = SSEDecoder()
    events = [e for piece in split_at(body, cuts) for e in decoder.feed(piece)] + decoder.flush()
    assert [json.loads(e.data)["t"] for e in events] == payloads
    assert all(e.event == "delta" for e in events)


@settings(max_examples=300)
@given(payloads=st.lists(texts, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_ndjson_objects_do_not_depend_on_chunk_boundaries(payloads: list[str], cuts: list[int]) -> None:
    body = "".join(json.dumps({"t": p}, ensure_ascii=False) + "\n" for p in payloads).encode()
    decoder = NDJSONDecoder()
    objects = [o for piece in split_at(body, cuts) for o in decoder.feed(piece)]
    objects += decoder.flush()
    assert [o["t"] for o in objects] == payloads


def test_sse_joins_multi_line_data_and_defaults_the_event_name() -> None:
    events = SSEDecoder().feed(b"data: a\ndata: b\n\nevent: ping\ndata: {}\n\n")
    assert events == [SSEEvent("message", "a\nb"), SSEEvent("ping", "{}")]


def test_sse_drops_an_event_cut_off_by_the_end_of_the_body() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"complete": true}\n\ndata: {"cut') == [SSEEvent("message", '{"complete": true}')]


def test_json_line_separators_inside_strings_do_not_split_lines() -> None:
    # U+2028 is legal unescaped inside JSON strings; str.splitlines() would break the line there.
    body = '{"t": "a\u2028b"}\n'.encode()
    assert NDJSONDecoder().feed(body) == [{"t": "a\u2028b"}]


def test_ndjson_without_final_newline_is_flushed() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    assert decoder.feed(b": 2}") == []
    assert decoder.flush() == [{"b": 2}]
