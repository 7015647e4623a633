"""A job's prompt chain, built and checked when the job is loaded.

Every step's template and backend is checked here, before any call; `running.chains` runs the chain
for each task with callers of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from evalpipe.chain import ChainTemplateError, MultiPromptChain
from evalpipe.pipeline.job.spec import ChainStepSpec
from evalpipe.scoring.calls import ANSWERING
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams


class _NotYetCallable:
    """A chain's backends while the job is checked: named, not callable."""

    async def achat(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None) -> ChatResponse:
        raise RuntimeError("a job's chain was run before the job started")

    async def acomplete(self, prompt: str, params: GenerationParams | None = None) -> ChatResponse:
        raise RuntimeError("a job's chain was run before the job started")


def build_chain(steps: Sequence[ChainStepSpec], backend_ids: Collection[str]) -> MultiPromptChain:
    """The job's chain; a `ChainTemplateError` or `ConfigError` names the step that is wrong."""
    names = {ANSWERING, *backend_ids}
    chain = MultiPromptChain(dict.fromkeys(names, _NotYetCallable()), default=ANSWERING)
    for step in steps:
        if step.backend is not None and step.backend not in backend_ids:
            raise ChainTemplateError(step.name, f"backend {step.backend!r} is not a backend or judge of the job")
        params = GenerationParams(temperature=step.temperature, top_p=step.top_p, max_tokens=step.max_tokens,
                                  stop=tuple(step.stop) if step.stop is not None else None)
        chain.step(step.name, step.user, system=step.system, provider=step.backend, mode=step.mode, params=params,
                   transform=list(step.transform))
    return chain
