"""Pure writers of Gemini requests with parts: images, function declarations, calls and responses.

From the Gemini API reference (`Content`, `Part`, `Tool`, `ToolConfig`) and the function-calling
guide: an image is an `inlineData {mimeType, data}` part (base64), or a `fileData {mimeType, fileUri}`
part for a file uploaded through the Files API; a model turn that called functions holds
`functionCall {id, name, args}` parts; results go back in a user turn as `functionResponse {id, name,
response}` parts, all results of one turn together; tools are `{"functionDeclarations": [{name,
description, parameters}]}` with `parameters` a Gemini `Schema`; `toolConfig.functionCallingConfig`
has `mode` AUTO | ANY | NONE and `allowedFunctionNames`.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalpipe.backends.images import inline_data
from evalpipe.errors import UnsupportedFeatureError
from evalpipe.types import ChatMessage, Image, Tool

# Files the Files API holds are the only URLs Gemini reads itself.
FILES_API = "https://generativelanguage.googleapis.com/"
_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def image_part(image: Image, backend: str) -> dict[str, Any]:
    """An image part: a Files API URI as `fileData`, anything else inline (other URLs are refused)."""
    if image.url is not None and image.url.startswith(FILES_API):
        media_type = image.media_type or mimetypes.guess_type(image.url)[0] or "image/jpeg"
        return {"fileData": {"mimeType": media_type, "fileUri": image.url}}
    if image.url is not None and not image.url.startswith("data:"):
        raise UnsupportedFeatureError(backend, "image URLs other than Files API URIs (give a path or bytes)")
    media_type, data = inline_data(image, backend)
    return {"inlineData": {"mimeType": media_type, "data": data}}


def contents_json(messages: Sequence[ChatMessage], backend: str) -> list[dict[str, Any]]:
    """The `contents` array (system messages excluded; they go to `systemInstruction`)."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            call_id = message.tool_call_id or ""
            response = {"name": message.name or names.get(call_id, ""), "response": {"result": message.content}}
            if call_id:
                response["id"] = call_id
            part = {"functionResponse": response}
            previous = contents[-1] if contents else None
            if previous is not None and previous["role"] == "user" \
                    and all("functionResponse" in p for p in previous["parts"]):
                previous["parts"].append(part)  # results of parallel calls travel together
            else:
                contents.append({"role": "user", "parts": [part]})
            continue
        parts: list[dict[str, Any]] = [{"text": message.content}] if message.content or not (
            message.images or message.tool_calls) else []
        parts += [image_part(image, backend) for image in message.images]
        for call in message.tool_calls:
            called: dict[str, Any] = {"functionCall": {
                "id": call.id, "name": call.name, "args": call.arguments if isinstance(call.arguments, dict) else {}}}
            if call.signature:  # Gemini 3 refuses a function call of the current turn without it
                called["thoughtSignature"] = call.signature
            parts.append(called)
        contents.append({"role": "model" if message.role == "assistant" else "user", "parts": parts})
    return contents


def tool_fields(tools: Sequence[Tool] | None, choice: str | None,
                schema: Callable[[Mapping[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The `tools` and `toolConfig` fields; `schema` turns a JSON Schema into a Gemini `Schema`."""
    fields: dict[str, Any] = {}
    if tools:
        declarations = []
        for tool in tools:
            declaration: dict[str, Any] = {"name": tool.name, "description": tool.description}
            if tool.parameters.get("properties"):  # an empty object schema is no parameters at all
                declaration["parameters"] = schema(tool.parameters)
            declarations.append(declaration)
        fields["tools"] = [{"functionDeclarations": declarations}]
    if choice is not None:
        config: dict[str, Any] = {"mode": _MODES.get(choice, "ANY")}
        if choice not in _MODES:
            config["allowedFunctionNames"] = [choice]
        fields["toolConfig"] = {"functionCallingConfig": config}
    return fields
