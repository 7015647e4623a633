"""Pure writers of OpenAI-style requests with parts: images, tools, tool calls and tool results.

From the Chat Completions reference: an image is a content part
`{"type": "image_url", "image_url": {"url": URL or data URL}}`; an assistant turn that called tools
carries `tool_calls[{id, type: "function", function: {name, arguments: JSON string}}]`; a result is a
`{"role": "tool", "tool_call_id", "content"}` message; tools are `{"type": "function", "function":
{name, description, parameters}}`; `tool_choice` is "auto" | "none" | "required" |
`{"type": "function", "function": {"name"}}`. Mistral, Groq, xAI, DeepSeek, OpenRouter, Azure and
llama-server take the same shapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from evalpipe.backends.base import StreamState
from evalpipe.backends.images import data_url
from evalpipe.types import TOOL_CHOICE_MODES, ChatMessage, Tool, ToolCall


def message_json(message: ChatMessage) -> dict[str, Any]:
    """One message as OpenAI takes it; a text-only message stays `{"role", "content": str}`."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    content: Any = message.content
    if message.images:
        content = [{"type": "text", "text": message.content}] if message.content else []
        content += [{"type": "image_url", "image_url": {"url": data_url(image)}} for image in message.images]
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [tool_call_json(call) for call in message.tool_calls]
    return out


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    """A tool call sent back in the conversation, with its arguments as the JSON string OpenAI uses."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}


def tool_json(tool: Tool) -> dict[str, Any]:
    """A tool definition."""
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def tool_fields(tools: Sequence[Tool] | None, choice: str | None, required: str = "required") -> dict[str, Any]:
    """The `tools` and `tool_choice` fields of a request (`required` is the vendor's word for "must
    call one": Mistral's older models spell it "any")."""
    fields: dict[str, Any] = {}
    if tools:
        fields["tools"] = [tool_json(tool) for tool in tools]
    if choice is not None:
        if choice == "required":
            fields["tool_choice"] = required
        elif choice in TOOL_CHOICE_MODES:
            fields["tool_choice"] = choice
        else:
            fields["tool_choice"] = {"type": "function", "function": {"name": choice}}
    return fields


def fold_tool_calls(tool_calls: Any, state: StreamState, *, whole: bool = False) -> None:
    """Add a message's `tool_calls` (`whole`: each call complete, in order) or a delta's (fragments
    keyed by `index`) to `state`."""
    if not isinstance(tool_calls, list):
        return
    for position, entry in enumerate(tool_calls):
        if not isinstance(entry, dict):
            continue
        index = position if whole else entry.get("index")
        if not isinstance(index, int):
            index = _index_without_one(entry.get("id"), state)
        function = entry.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):  # some compatible servers send an object
            arguments = json.dumps(arguments)
        state.tool_call(index, str(entry.get("id") or ""), str(function.get("name") or ""),
                        arguments if isinstance(arguments, str) else "")


def _index_without_one(call_id: Any, state: StreamState) -> int:
    """Where a streamed fragment without `index` belongs (some compatible servers leave it out): a new
    id opens a new call, a fragment without an id extends the latest one."""
    if not state.tool_calls:
        return 0
    if call_id and all(draft.id != call_id for draft in state.tool_calls.values()):
        return max(state.tool_calls) + 1
    matching = [i for i, draft in state.tool_calls.items() if call_id and draft.id == call_id]
    return matching[0] if matching else max(state.tool_calls)
