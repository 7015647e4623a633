"""A prompt chain run for one task.

The chain is built when the job is loaded (`job.chain`). Each task runs it
with callers of its own: a step goes to the backend being evaluated (or to the job backend or judge
it names) through that backend's limits, retries and the run's response cache, with the task's
parameter set under the step's own parameters. The last step's output is the answer that is scored;
the row's tokens and cost are those of every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evalpipe.chain import MultiPromptChain
from evalpipe.pipeline.running.model_calls import JobCalls, ScoringSpend, charging
from evalpipe.scoring.calls import answering
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, Usage


@dataclass(frozen=True, slots=True)
class _TaskCaller:
    """One task's way to call one backend from a chain step."""

    calls: JobCalls
    backend_id: str
    task_params: GenerationParams

    async def achat(self, messages: Sequence[ChatMessage], params: GenerationParams | None = None) -> ChatResponse:
        return await self.calls.chat(self.backend_id, messages, self.task_params.merged(params))

    async def acomplete(self, prompt: str, params: GenerationParams | None = None) -> ChatResponse:
        return await self.calls.complete(self.backend_id, prompt, self.task_params.merged(params))


async def run_chain(
    chain: MultiPromptChain, task_id: str, backend_id: str, item: dict[str, object], params: GenerationParams,
    calls: JobCalls, spend: ScoringSpend,
) -> tuple[ChatResponse, float]:
    """The chain's answer for one task (text of the last step, tokens of all) and the cost of all its steps.

    Every step's tokens and cost are added to `spend` as they are paid, so a chain that fails at a later
    step still shows what its earlier steps cost."""
    callers = {name: _TaskCaller(calls, name, params) for name in chain.providers}
    with charging(task_id, spend), answering(backend_id):
        result = await chain.with_providers(callers).arun_detailed(item)
    last = result.steps[-1].response
    response = ChatResponse(text=result.final_text, finish_reason=last.finish_reason, model=last.model,
                            usage=Usage(spend.input_tokens, spend.output_tokens), latency_s=result.latency_s)
    return response, spend.cost_usd
