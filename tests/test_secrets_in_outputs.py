"""A key of any shape, in any spelling, reaches none of a run's outputs: Parquet, CSV, run.sqlite,
run.log.jsonl, stdout/stderr, the HTML report, exceptions and reprs.

The keys are the shapes an audit found leaking: a hex key read from a file with its trailing
newline (refused when the job loads, naming the variable), keys with quotes and backslashes or `%`
and `+` that the vendor quotes back masked in its 401 (`invalid"qu****cdef`, `****cdef`, `in***ef`).
The spellings checked are written out here, independently of the redaction code.
"""

from __future__ import annotations

import base64
import html
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import polars as pl
import pytest
import structlog

from evalpipe import ChatMessage, ConfigError, GenerationParams, LLMBuilder, ProviderError
from evalpipe.cli import main
from evalpipe.testing import FakeServer

HEX_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4"  # 40 hex characters, no vendor prefix
# variable: (backend, fake-server vendor, key). The fake answers a key starting `invalid` with 401.
KEYS = {
    "EVALPIPE_LEAK_NEWLINE": ("mistral", "mistral", HEX_KEY + "\n"),
    "EVALPIPE_LEAK_QUOTES": ("openai", "openai", "invalid\"quo'te\\back\\slash-9f8e7d6c5b4a39281706cdef"),
    "EVALPIPE_LEAK_HEX": ("deepseek", "deepseek", "invalid0f1e2d3c4b5a69788796a5b4c3d2e1f03e7f"),
    "EVALPIPE_LEAK_PERCENT": ("xai", "xai", "invalid%2Bplus+per%25cent-5a4b3c2d1e0f9a8b7cZe"),
}

# Header values may carry credentials (a proxy's token): secrets too, wherever the job sets them.
HEADER_SECRETS = {"X-Proxy-Token": "proxy-token-5e6f7a8b9c0d1e2f3a4b", "X-Set-Token": "set-token-0a9b8c7d6e5f4a3b2c1d"}

JOB = """\
name: leak-test
dataset:
  items:
    - {id: a, question: "What is 2 + 2?"}
    - {id: b, question: "What is 3 + 3?"}
prompt:
  user: "{{ question }}"
backends:
BACKENDS
parameters:
  sets:
    - {name: calm, temperature: 0.1, max_tokens: 8, headers: {X-Set-Token: SET_TOKEN}}
scorers:
  - type: contains
    values: ["4"]
"""


def spellings(key: str) -> set[str]:
    """The ways a key can be written out: as is, stripped, escaped (Python, JSON, HTML), URL-encoded, in base64."""
    found = {key, key.strip(), json.dumps(key)[1:-1], json.dumps(key, ensure_ascii=False)[1:-1],
             repr(key)[1:-1], repr(key.encode())[2:-1], quote(key, safe=""), quote_plus(key),
             json.dumps(json.dumps(key)[1:-1])[1:-1], base64.b64encode(key.encode()).decode()[:-4], html.escape(key)}
    middle = key.strip()[8:-6]  # a piece of the key long enough to identify it
    return found | {middle}


def leaks(key: str, text: str) -> list[str]:
    """What of `key` shows in `text`: spellings, and vendor-masked echoes (asterisks then its last characters)."""
    shown = sorted(s for s in spellings(key) if s in text)
    tail = re.escape(key.strip()[-2:])
    shown += re.findall(rf"\S*\*{{3,}}\S*{tail}(?![A-Za-z0-9])", text)
    return shown


def file_text(path: Path) -> str:
    """Everything a file holds, whatever its format: Parquet and SQLite decoded, the rest as bytes."""
    if path.suffix == ".parquet":
        return pl.read_parquet(path).write_ndjson()  # JSON: best_of.parquet has list columns
    raw = path.read_bytes()
    if raw.startswith(b"SQLite format 3"):
        with sqlite3.connect(path) as db:
            return "\n".join(db.iterdump()) + raw.decode("latin-1")
    return raw.decode("utf-8", errors="replace") + raw.decode("latin-1")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for variable, (_, _, key) in KEYS.items():
        monkeypatch.setenv(variable, key)
    return {variable: key for variable, (_, _, key) in KEYS.items()}


def test_no_key_reaches_any_output_of_a_job(
    keys: dict[str, str], fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backends = "".join(
        f"  - {{id: {backend}, backend: {backend}, model: fake-model, base_url: '{fake_server.url_for(vendor)}', "
        f"api_key_env: {variable}, optional: true, headers: {{X-Proxy-Token: {HEADER_SECRETS['X-Proxy-Token']}}}}}\n"
        for variable, (backend, vendor, _) in KEYS.items()
    )
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("BACKENDS\n", backends).replace("SET_TOKEN", HEADER_SECRETS["X-Set-Token"]),
                   encoding="utf-8")
    requests_before = {key: fake_server.stats(key).requests for key in keys.values()}

    code = main(["run", str(job), "--out", str(tmp_path / "results")])
    run_out = capsys.readouterr()
    assert code == 0, run_out.err
    run_dir = Path(next(line for line in run_out.out.splitlines() if line.startswith("csv: "))[5:]).parent
    assert main(["report", str(run_dir), "-o", str(tmp_path / "report.html")]) == 0
    report_out = capsys.readouterr()

    outputs = {"stdout": run_out.out + report_out.out, "stderr": run_out.err + report_out.err,
               "report.html": (tmp_path / "report.html").read_text(encoding="utf-8")}
    outputs |= {str(p.relative_to(run_dir)): file_text(p) for p in run_dir.rglob("*") if p.is_file()}
    assert {"rows.csv", "run.sqlite", "run.log.jsonl"} <= set(outputs)
    assert any(name.endswith(".parquet") for name in outputs)
    secrets = {**keys, **HEADER_SECRETS}
    found = {(variable, name): shown for variable, key in secrets.items() for name, text in outputs.items()
             if (shown := leaks(key, text))}
    assert found == {}

    # The key with a newline is refused when the job loads, named by its variable; the optional backend is skipped.
    assert ("skipped backend mistral (optional): EVALPIPE_LEAK_NEWLINE has whitespace at its start or end"
            in run_out.err)
    assert fake_server.stats(keys["EVALPIPE_LEAK_NEWLINE"]).requests == 0
    assert fake_server.stats(keys["EVALPIPE_LEAK_NEWLINE"].strip()).requests == 0
    # A wrong key costs one request per task: a 401 is never retried.
    for variable in ("EVALPIPE_LEAK_QUOTES", "EVALPIPE_LEAK_HEX", "EVALPIPE_LEAK_PERCENT"):
        assert fake_server.stats(keys[variable]).requests - requests_before[keys[variable]] == 2, variable
    rows = pl.read_csv(run_dir / "rows.csv")
    assert rows.height == 6 and set(rows["error_type"]) == {"AuthenticationError"}


@pytest.mark.parametrize("variable", ["EVALPIPE_LEAK_QUOTES", "EVALPIPE_LEAK_HEX", "EVALPIPE_LEAK_PERCENT"])
def test_no_key_reaches_an_exception_or_a_repr(
    variable: str, keys: dict[str, str], fake_server: FakeServer
) -> None:
    backend, vendor, key = KEYS[variable]
    builder = (LLMBuilder().backend(backend).api_key(key).base_url(fake_server.url_for(vendor)).model("fake-model")
               .header("X-Proxy-Token", HEADER_SECRETS["X-Proxy-Token"]))
    llm = builder.build()
    seen = [repr(builder), repr(llm), str(llm.config), repr(llm.config)]
    before = fake_server.stats(key).requests
    for call in ("chat", "stream"):
        with pytest.raises(ProviderError) as caught:
            if call == "chat":
                llm.chat([ChatMessage.user("hi")])
            else:
                list(llm.stream([ChatMessage.user("hi")]))
        error = caught.value
        assert error.kind == "AuthenticationError" and error.attempts == 1
        seen += [str(error), repr(error), error.message, repr(error.args)]
    assert fake_server.stats(key).requests - before == 2  # one per call: never retried
    assert "Incorrect API key provided: ***" in seen[4] or "Your api key: *** is invalid" in seen[4]
    assert leaks(key, "\n".join(seen)) == []
    assert leaks(HEADER_SECRETS["X-Proxy-Token"], "\n".join(seen)) == []


@pytest.mark.parametrize("key,why", [
    (HEX_KEY + "\n", "has whitespace at its start or end"),
    (" " + HEX_KEY, "has whitespace at its start or end"),
    (HEX_KEY[:20] + "\t" + HEX_KEY[20:], "has a control character"),
    (HEX_KEY[:20] + "é" + HEX_KEY[20:], "has a non-ASCII character"),
    (HEX_KEY[:20] + "\u2028" + HEX_KEY[20:], "has a non-ASCII character"),
])
def test_a_key_that_cannot_be_sent_is_refused_naming_its_variable_never_its_value(
    key: str, why: str, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", key)
    with pytest.raises(ConfigError) as from_env:
        LLMBuilder().backend("mistral").base_url(fake_server.url_for("mistral")).build()
    assert str(from_env.value).startswith(f"MISTRAL_API_KEY {why}")
    with pytest.raises(ConfigError) as given:
        LLMBuilder().backend("openai").api_key(key).base_url(fake_server.url_for("openai")).build()
    assert str(given.value).startswith(f"the api_key given to the builder {why}")
    for error in (from_env.value, given.value):
        assert leaks(key, f"{error} {error!r}") == []
    assert fake_server.stats(key).requests == fake_server.stats(key.strip()).requests == 0


def test_a_header_value_that_cannot_be_sent_is_refused_naming_the_header() -> None:
    with pytest.raises(ConfigError, match="header 'X-Custom-Auth' given to the builder has a non-ASCII") as caught:
        LLMBuilder().backend("openai").api_key("sk-fine").header("X-Custom-Auth", "tökén-0123456789").build()
    assert "tökén" not in repr(caught.value)


def test_header_values_are_secrets(fake_server: FakeServer) -> None:
    """A header value (a proxy's token, say) is redacted like a key when a message quotes it."""
    from evalpipe.backends.classify import classify_status

    token = "proxy-token-7f3a9c1e5b2d4680"
    LLMBuilder().backend("openai").api_key("sk-fine").header("X-Proxy-Token", token).build()
    error = classify_status("openai", 403, {"error": {"message": f"token {token} is not allowed here"}})
    assert token not in str(error) and "token *** is not allowed" in str(error)


def test_the_backends_command_says_a_key_is_unusable_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", HEX_KEY + "\n")
    assert main(["backends"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "unusable: MISTRAL_API_KEY has whitespace" in out
    assert leaks(HEX_KEY + "\n", out) == []


def test_a_per_call_header_that_cannot_be_sent_is_refused_before_any_request(fake_server: FakeServer) -> None:
    key = "sk-per-call-header-test-0123"
    llm = LLMBuilder().backend("openai").api_key(key).base_url(fake_server.url_for("openai")).build()
    with pytest.raises(ConfigError, match="header 'X-Proxy-Token' in the generation parameters has whitespace"):
        llm.chat([ChatMessage.user("hi")], GenerationParams(headers={"X-Proxy-Token": "tok-9a8b7c6d5e4f\n"}))
    assert fake_server.stats(key).requests == 0
