"""The fake server's `[[reply:TEXT]]` marker: a scripted answer, as judge and self-explain tests need."""

from __future__ import annotations

import httpx

from evalpipe.testing import FakeServer
from evalpipe.testing._answers import answer_for
from evalpipe.testing._wire import Call, Operation


def test_reply_marker_replaces_the_echo_and_wins_over_json_mode() -> None:
    verdict = '{"score": 7, "explanation": "mostly right"}'
    call = Call(Operation.CHAT, "m", prompt=f"Rate this.\n<answer>Paris [[reply:{verdict}]]</answer>",
                texts=["Rate this."])
    assert answer_for(call).text == verdict
    call.json_mode = True
    assert answer_for(call).text == verdict
    call.max_tokens = 2
    assert (answer_for(call).text, answer_for(call).finish.value) == ('{"score": 7,', "length")
    multiline = Call(Operation.CHAT, "m", prompt="[[reply:Score: 3/10\nExplanation: wrong city]]")
    assert answer_for(multiline).text == "Score: 3/10\nExplanation: wrong city"


def test_reply_marker_over_http(fake_server: FakeServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "[[reply:first]] earlier turns do not steer"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Rate it. [[reply:Score: 9/10]]"},
    ]}
    response = httpx.post(fake_server.url_for("openai") + "/chat/completions", json=body,
                          headers={"authorization": "Bearer sk-reply-marker"}, timeout=5)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Score: 9/10"
