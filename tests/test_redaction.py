"""`redact` removes a registered secret in every spelling a message or log line can hold it in,
and vendor-masked echoes of it; nothing else is touched. A client error is sent once, whatever
the response headers say."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from pydantic import SecretStr

from evalpipe.backends.classify import classify_status
from evalpipe.backends.retry import RetryPolicy
from evalpipe.errors import ServerError, redact, register_secret
from evalpipe.pipeline.job.load import JobFileError, load_job

KEY = "k3y\"with'quote\\back%2B+plus-é-0123456789abcdef\n"
SPELLINGS = {
    "raw": KEY,
    "stripped": KEY.strip(),
    "repr": repr(KEY),
    "ascii": ascii(KEY),
    "repr of bytes (httpx/h11 errors)": repr(("Bearer " + KEY).encode()),
    "repr inside a longer text": repr(f"header {KEY} and \"quotes\""),
    "json": json.dumps(KEY),
    "json, not ascii": json.dumps(KEY, ensure_ascii=False),
    "json of json (a log line of a message)": json.dumps({"message": json.dumps({"key": KEY})}),
    "url": quote(KEY, safe=""),
    "url, path-safe": quote(KEY),
    "url, form": quote_plus(KEY),
    "html": html.escape(KEY),
    "basic auth": base64.b64encode(f"user:{KEY}".encode()).decode(),
    "basic auth, other offset": base64.b64encode(f"me:{KEY}".encode()).decode(),
    "basic auth, third offset": base64.b64encode(f"alice:{KEY}".encode()).decode(),
    "url-safe base64": base64.urlsafe_b64encode(f"user:{KEY}".encode()).decode(),
    "cut short (a truncated error body)": "error body: " + KEY[:30],
}


@pytest.fixture(autouse=True)
def registered() -> None:
    register_secret(KEY)


@pytest.mark.parametrize("name", list(SPELLINGS))
def test_every_spelling_of_a_secret_is_redacted(name: str) -> None:
    text = f"before {SPELLINGS[name]} after"
    redacted = redact(text)
    assert redacted != text and "***" in redacted
    assert "0123456789" not in redacted and "3456789abc" not in redacted.replace("=", "")
    assert redacted.startswith("before ") and redacted.endswith(" after")


@pytest.mark.parametrize("echo", [
    "Incorrect API key provided: k3y\"with**********************cdef. You can find your API key at ...",  # OpenAI
    "Authentication Fails, Your api key: ****cdef is invalid",  # DeepSeek
    "Incorrect API key provided: k3***ef. You can obtain an API key from https://console.x.ai.",  # xAI
])
def test_a_vendor_masked_echo_of_a_registered_key_is_redacted(echo: str) -> None:
    redacted = redact(echo)
    assert "*cdef" not in redacted and "***ef" not in redacted and "k3y" not in redacted
    assert "***" in redacted


def test_masks_of_other_keys_and_ordinary_text_are_left_alone() -> None:
    from evalpipe.redaction import Redactor

    # A redactor of its own: the process-wide one holds whatever keys other tests registered.
    redactor = Redactor()
    redactor.register(KEY)
    text = "Incorrect API key provided: sk-abc*****wxyz. Rated ***** by 5 users; k3y facts; 0123"
    assert redactor.redact(text) == text


def test_a_redacted_json_line_stays_json() -> None:
    line = json.dumps({"event": "retrying", "message": f"key {KEY} and k3***ef", "n": 1})
    assert json.loads(redact(line)) == {"event": "retrying", "message": "key *** and ***", "n": 1}


def test_any_value_can_be_registered_any_number_of_times() -> None:
    from evalpipe.redaction import Redactor

    redactor = Redactor()
    for value in (None, 12, b"bytes-secret-1", SecretStr("pydantic-secret-2"), {"X-Token": "header-secret-3"},
                  ["listed-secret-4"], "abc"):
        redactor.register(value)
        redactor.register(value)
    text = "bytes-secret-1 pydantic-secret-2 header-secret-3 listed-secret-4 abc 12"
    assert redactor.redact(text) == "*** *** *** *** abc 12"  # too short to be a secret: kept


def test_many_secrets_compile_into_one_rule_set() -> None:
    from evalpipe.redaction import Redactor

    redactor = Redactor()
    keys = [f"sk-test-{i:04d}-{'x' * 30}-{i:04d}" for i in range(200)]
    for key in keys:
        redactor.register(key)
    assert redactor.redact(" ".join(keys[::37])) == " ".join(["***"] * len(keys[::37]))


@pytest.mark.parametrize("value,problem", [
    ("sk-fine-0123", None), ("key\n", "whitespace"), ("\tkey", "whitespace"), ("a\rb", "control"),
    ("a\x00b", "control"), ("a\x7fb", "control"), ("naïve", "non-ASCII"), ("", "empty"),
])
def test_header_value_problem_says_why_without_the_value(value: str, problem: str | None) -> None:
    from evalpipe.redaction import header_value_problem

    said = header_value_problem(value)
    assert (said is None) if problem is None else (said is not None and problem in said)
    assert not value or value not in (said or "")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_a_client_error_is_never_retried_even_when_a_header_says_so(status: int) -> None:
    error = classify_status("openai", status, {"error": {"message": "no"}}, {"x-should-retry": "true"})
    assert RetryPolicy(max_retries=4).delay(error, 0) is None


def test_server_errors_and_rate_limits_are_still_retried() -> None:
    policy = RetryPolicy(max_retries=4)
    assert policy.delay(classify_status("openai", 429, {}, {"retry-after": "1"}), 0) == 1.0
    assert policy.delay(classify_status("openai", 409, {}), 0) is not None
    assert policy.delay(ServerError("boom", provider="x", status=500), 0) is not None


def test_a_job_header_that_cannot_be_sent_is_refused_at_load_naming_the_field(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: h\ndataset:\n  items: [{id: a, q: hi}]\nprompt:\n  user: '{{ q }}'\nbackends:\n"
        "  - id: b\n    backend: openai\n    headers:\n      X-Proxy-Token: \"tok-3f9a8b7c\\n\"\n",
        encoding="utf-8",
    )
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    message = str(caught.value)
    assert "backends[0].headers.X-Proxy-Token" in message and "whitespace at its start or end" in message
    assert "tok-3f9a8b7c" not in message


def test_the_credential_inside_an_authorization_value_is_a_secret_on_its_own() -> None:
    from evalpipe.redaction import Redactor

    redactor = Redactor()
    redactor.register({"Authorization": "Bearer tok-1a2b3c4d5e6f", "X-Upstream": "Basic "
                       + base64.b64encode(b"alice:pw-9z8y7x6w5v").decode()})
    assert redactor.redact("token tok-1a2b3c4d5e6f refused; password pw-9z8y7x6w5v wrong") == (
        "token *** refused; password *** wrong")


def test_an_ordinary_two_word_header_value_makes_no_word_a_secret() -> None:
    from evalpipe.redaction import Redactor

    redactor = Redactor()
    redactor.register({"X-Title": "evalpipe nightly"})
    assert redactor.redact("job nightly finished; evalpipe nightly ran") == "job nightly finished; *** ran"
