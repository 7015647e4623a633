"""Pure readers of the OpenAI answer shape and of every variant the compatible vendors put in it.

Where each part of an answer arrives, by vendor (message = `choices[0].message`, delta =
`choices[0].delta` in streams):

    answer text   message.content: a string, null (tool calls, refusals), or (Mistral's reasoning
                  models) a list of typed chunks {"type":"text","text"} / {"type":"thinking",...}
    reasoning     message.reasoning_content (DeepSeek, xAI, llama-server, vLLM),
                  message.reasoning (Groq, OpenRouter, vLLM), message.reasoning_details (OpenRouter:
                  reasoning.text / reasoning.summary / reasoning.encrypted entries), Mistral's
                  "thinking" chunks; vendors that send two of these send the same text twice
    refusal       message.refusal (OpenAI); deltas carry it piece by piece
    safety        choice.content_filter_results, body.prompt_filter_results (Azure)
    usage         prompt_tokens (+ prompt_tokens_details.cached_tokens, DeepSeek's
                  prompt_cache_hit_tokens, cache_write_tokens), completion_tokens
                  (+ completion_tokens_details.reasoning_tokens: inside completion_tokens everywhere
                  but on xAI, which bills them on top)

Nothing here does I/O; `OpenAIProvider` calls these for plain answers and stream events alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalpipe.types import Usage

# reasoning_details entry types whose text may be shown; encrypted entries are only counted.
_SHOWN_DETAILS = {"reasoning.text": "text", "reasoning.summary": "summary"}


@dataclass(slots=True)
class Parts:
    """What one message or one stream delta carries, already sorted into evalpipe's fields."""

    text: str = ""
    reasoning: str = ""
    refusal: str = ""
    hidden_reasoning: int = 0  # reasoning entries that arrived encrypted or redacted
    tool_calls: int = 0
    safety: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.text or self.reasoning or self.refusal or self.hidden_reasoning or self.tool_calls)


def as_int(value: Any) -> int:
    """An integer count, or 0 for anything else (null, a string, a bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def content_parts(content: Any) -> tuple[str, str]:
    """(answer text, reasoning) of a `content` field: a string, null, or a list of typed chunks."""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return "", ""
    text: list[str] = []
    reasoning: list[str] = []
    for chunk in content:
        if isinstance(chunk, str):
            text.append(chunk)
        elif isinstance(chunk, dict) and chunk.get("type") == "thinking":
            thinking = chunk.get("thinking")
            reasoning.append(content_parts(thinking)[0] if isinstance(thinking, list) else _text(thinking))
        elif isinstance(chunk, dict) and chunk.get("type", "text") == "text":
            text.append(_text(chunk.get("text")))
        # other chunk types (references, images, tool results) are not answer text
    return "".join(text), "".join(reasoning)


def detail_parts(details: Any) -> tuple[str, int]:
    """(shown reasoning, count of hidden entries) of OpenRouter's `reasoning_details` list."""
    if not isinstance(details, list):
        return "", 0
    shown: list[str] = []
    hidden = 0
    for entry in details:
        if not isinstance(entry, dict):
            continue
        key = _SHOWN_DETAILS.get(str(entry.get("type")))
        if key is not None:
            shown.append(_text(entry.get(key)))
        elif entry.get("type") == "reasoning.encrypted" or entry.get("data"):
            hidden += 1
    return "".join(shown), hidden


def message_parts(message: Any) -> Parts:
    """The parts of a chat `message`, or of a stream `delta` (same fields, arriving in pieces)."""
    if not isinstance(message, dict):
        return Parts()
    text, thinking = content_parts(message.get("content"))
    details, hidden = detail_parts(message.get("reasoning_details"))
    # The same reasoning may come under two names (OpenRouter: reasoning + reasoning_details;
    # vLLM: reasoning_content + reasoning): take the first that is there, never add them up.
    reasoning = _text(message.get("reasoning_content")) or _text(message.get("reasoning")) or details
    tool_calls = message.get("tool_calls")
    return Parts(
        text=text,
        reasoning=reasoning + thinking,
        refusal=_text(message.get("refusal")),
        hidden_reasoning=hidden,
        tool_calls=len(tool_calls) if isinstance(tool_calls, list) else 0,
    )


def choice_parts(choice: dict[str, Any], key: str) -> Parts:
    """The parts of a choice (`key` is "message" or "delta"); legacy completions carry `text`."""
    parts = message_parts(choice.get(key))
    if not parts.text:
        parts.text = _text(choice.get("text"))
    filters = choice.get("content_filter_results")
    if isinstance(filters, dict) and filters:
        parts.safety["content_filter_results"] = filters
    return parts


def prompt_safety(body: dict[str, Any]) -> dict[str, Any]:
    """Azure's verdict on the prompt (`prompt_filter_results`, or `prompt_annotations` in old versions)."""
    for name in ("prompt_filter_results", "prompt_annotations"):
        value = body.get(name)
        if value:
            return {"prompt_filter_results": value}
    return {}


def usage_of(usage: Any, *, reasoning_in_completion: bool = True) -> Usage | None:
    """evalpipe's Usage from an OpenAI-style `usage` object; None when there is none.

    `reasoning_in_completion` is False for vendors whose `completion_tokens` leave out the reasoning
    tokens they bill on top (xAI), so that `output_tokens` is always all billed output."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    reasoning = as_int(completion_details.get("reasoning_tokens"))
    output = as_int(usage.get("completion_tokens"))
    if not reasoning_in_completion:
        output += reasoning
    return Usage(
        input_tokens=as_int(usage.get("prompt_tokens")),
        output_tokens=output,
        reasoning_tokens=reasoning,
        # DeepSeek reports cache hits at the top level, OpenAI and most others in the details.
        cached_input_tokens=as_int(prompt_details.get("cached_tokens")) or as_int(usage.get("prompt_cache_hit_tokens")),
        cache_write_input_tokens=as_int(prompt_details.get("cache_write_tokens")),
    )
