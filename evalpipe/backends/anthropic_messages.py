"""Pure writers of Anthropic Messages requests with parts: images, tools, tool uses and tool results.

From the Messages reference and the tool-use guide: an image is a content block
`{"type": "image", "source": {"type": "base64", "media_type", "data"}}` or `{"source": {"type": "url",
"url"}}`; an assistant turn that called tools holds `{"type": "tool_use", "id", "name", "input"}`
blocks; results go back in the next *user* turn as `{"type": "tool_result", "tool_use_id", "content"}`
blocks, all results of one turn in one message; tools are `{name, description, input_schema}`;
`tool_choice` is `{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalpipe.backends.images import base64_of
from evalpipe.types import ChatMessage, Image, Tool

_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def image_block(image: Image) -> dict[str, Any]:
    """An image content block: a URL as a URL source, bytes as base64."""
    if image.url is not None and not image.url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    if image.url is not None:
        head, _, payload = image.url.partition(",")
        media_type = head[len("data:"):].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": payload}}
    return {"type": "image", "source": {"type": "base64", "media_type": image.media_type,
                                        "data": base64_of(image)}}


def _blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content}]
    blocks: list[dict[str, Any]] = [image_block(image) for image in message.images]
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks += [{"type": "tool_use", "id": call.id, "name": call.name,
                "input": call.arguments if isinstance(call.arguments, dict) else {}}
               for call in message.tool_calls]
    return blocks


def messages_json(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The `messages` array (system messages excluded); text-only turns keep string content, and
    tool results join the user turn they belong to."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "user" if message.role == "tool" else message.role
        plain = not (message.images or message.tool_calls or message.role == "tool")
        if plain:
            out.append({"role": role, "content": message.content})
            continue
        blocks = _blocks(message)
        previous = out[-1] if out else None
        # Results of parallel calls must all be in the one user turn that follows the calls.
        if message.role == "tool" and previous is not None and previous["role"] == "user" \
                and isinstance(previous["content"], list) \
                and all(b.get("type") == "tool_result" for b in previous["content"]):
            previous["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def tool_fields(tools: Sequence[Tool] | None, choice: str | None) -> dict[str, Any]:
    """The `tools` and `tool_choice` fields of a request."""
    fields: dict[str, Any] = {}
    if tools:
        fields["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                           for t in tools]
    if choice is not None:
        fields["tool_choice"] = _CHOICES.get(choice) or {"type": "tool", "name": choice}
    return fields
