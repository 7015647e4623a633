"""Every code example in README.md runs: each ```python block, and each line of each ```bash block.

The examples run as written, with these substitutions only (so an example that breaks fails here):
- cloud clients talk to the fake provider server: `.backend(LLMBackend.OPENAI)` and `.backend("openai")`
  get `.base_url(<the fake server's OpenAI URL>)` appended, `OPENAI_API_KEY` is a fake key, and the job
  files' cloud backends get the fake server's base URL (the copies in a scratch directory, not the repo's);
- names an example assumes from the text around it (`openai_llm`, `claude`, `messages`, `doc`, ...) are
  bound by `PRELUDE`, to providers on the fake server;
- `photo.png` is a tiny PNG in the scratch directory; port 8000 is a free port;
- commands that serve until stopped (`fake-server`, `view`) are started, asked for their page, and stopped.
Examples that cannot run here are in `SKIPPED`, each with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evalpipe.testing import FakeServer, tiny_png

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# An example (a bash line, or a python block's first line) that starts with the key is not run, for the reason.
SKIPPED = {
    "make run": "sets up .venv and runs jobs/quickstart.yaml, which `evalpipe run jobs/quickstart.yaml` runs here",
    "make test": "runs the whole test suite, this test included",
}
SERVING = ("evalpipe fake-server", "python -m evalpipe.testing", "evalpipe view")  # serve until stopped
LOCAL = ("quickstart", "dialogue", "sweep.yaml", "LLMBackend.LOCAL")  # need the embedded model: marked `local`

PRELUDE = """\
import json
from evalpipe import ChatMessage, LLMBuilder

def _fake(vendor, model):
    return LLMBuilder().backend(vendor).base_url(FAKE_URLS[vendor]).api_key("sk-fake").model(model).build()

openai_llm = _fake("openai", "gpt-4o-mini")
anthropic_llm = claude = _fake("anthropic", "claude-3-5-haiku-latest")
local_llm = _fake("ollama", "gemma3:270m")   # a local server's stand-in
judge_llm = _fake("openai", "gpt-4.1-mini")
messages = [ChatMessage.user("Is Paris the capital of France? Answer yes or no.")]
dialogue = [ChatMessage.user("Hi"), ChatMessage.assistant("Hello"), ChatMessage.user("Name a colour.")]
doc = "Ada Lovelace wrote the first published program in 1843 in London."

def is_valid_json(text):
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
"""


def fenced(language: str) -> list[tuple[int, str]]:
    """(first line number, text) of each ```language block of the README."""
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == f"```{language}":
            start = number + 1
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start - 1:number - 1])))
            start = None
    return blocks


def commands() -> list[tuple[int, str]]:
    """(line number, command) of each line of each ```bash block, with `\\` continuations joined."""
    found = []
    for start, text in fenced("bash"):
        pending, first = "", start
        for offset, line in enumerate(text.splitlines()):
            if not pending:
                first = start + offset
            pending += line.rstrip().removesuffix("\\") + (" " if line.rstrip().endswith("\\") else "")
            if not line.rstrip().endswith("\\"):
                if pending.strip():
                    found.append((first, pending.strip()))
                pending = ""
    return found


def params(examples: list[tuple[int, str]]) -> list[object]:
    chosen = []
    for line, text in examples:
        head = text.strip().splitlines()[0]
        skip = next((reason for key, reason in SKIPPED.items() if head.startswith(key)), None)
        marks = [pytest.mark.skip(reason=skip)] if skip else []
        if any(word in text for word in LOCAL):
            marks.append(pytest.mark.local)
        chosen.append(pytest.param(text, id=f"README.md:{line}", marks=marks))
    return chosen


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, fake: FakeServer) -> Path:
    """A working directory with copies of jobs/ and data/ whose cloud backends use the fake server."""
    directory = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "data", directory / "data")
    shutil.copytree(REPO / "jobs", directory / "jobs")
    for job in (directory / "jobs").glob("*.yaml"):
        text = re.sub(r"^(\s*)base_url: https://\S+$", "", job.read_text(encoding="utf-8"), flags=re.MULTILINE)
        for backend, vendor in (("openai", "openai"), ("anthropic", "anthropic"), ("google", "gemini"),
                                ("mistral", "mistral"), ("groq", "groq")):
            text = re.sub(rf"^(\s*)backend: {backend}$", rf"\g<0>\n\g<1>base_url: {fake.url_for(vendor)}", text,
                          flags=re.MULTILINE)
        job.write_text(text, encoding="utf-8")
    (directory / "photo.png").write_bytes(tiny_png())
    return directory


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-fake-readme"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("code", params(fenced("python")))
def test_python_example_runs(code: str, fake: FakeServer, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-readme")
    url = fake.url_for("openai")
    for backend in ('.backend(LLMBackend.OPENAI)', '.backend("openai")'):
        code = code.replace(backend, f"{backend}.base_url({url!r})")
    namespace: dict[str, object] = {"FAKE_URLS": {v: fake.url_for(v) for v in ("openai", "anthropic", "ollama")}}
    if re.search(r"\b(openai_llm|anthropic_llm|local_llm|judge_llm|claude|messages|dialogue|doc)\b", code):
        exec(compile(PRELUDE, "prelude", "exec"), namespace)
    exec(compile(code, "README.md", "exec"), namespace)


@pytest.mark.parametrize("command", params(commands()))
def test_command_runs(command: str, scratch: Path) -> None:
    shell = f'evalpipe() {{ "{sys.executable}" -m evalpipe.cli "$@"; }}; python() {{ "{sys.executable}" "$@"; }}; '
    if command.startswith(SERVING):
        serve(shell, command.replace("--port 8000", f"--port {free_port()}"), scratch)
        return
    done = subprocess.run(["bash", "-c", shell + command], cwd=scratch, env=environment(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


def serve(shell: str, command: str, directory: Path) -> None:
    """Start a command that serves until stopped, fetch the first URL it prints, stop it with Ctrl-C."""
    if command.startswith("evalpipe view") and "--port" not in command:
        command = command.replace("evalpipe view results", f"evalpipe view results --port {free_port()}")
        (directory / "results").mkdir(exist_ok=True)
    process = subprocess.Popen(["bash", "-c", shell + command.split("#")[0]], cwd=directory,
                               env={**environment(), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"http://[\w.:\[\]]+/?", line)
        assert url, (command, line, process.stderr.read() if process.poll() is not None else "")
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(url.group(0), timeout=5).status_code < 500
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
