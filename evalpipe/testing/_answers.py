"""Deterministic answers: what the fake says is a pure function of the request.

- A chat or completion is answered `"Echo: " + <last user message>` with any `[[...]]` markers
  removed (a system prompt does not change the answer), cut to `max_tokens` words.
- `[[reply:TEXT]]` in the last user message makes the answer TEXT instead (it cannot contain `]`):
  a test scripts exactly what a judge model says, whatever else the prompt holds.
- A token is a whitespace-separated word. Input tokens are the words of every text sent
  (system prompt included); output tokens are the words of the answer.
- When JSON is requested the answer is a small JSON instance valid for the schema, or
  `{"echo": "<last user message>"}` in plain JSON mode.
- Embeddings are L2-normalised hashed bags of words, so texts sharing words are close.
- Tools: `[[tool:NAME]]` calls tool NAME with a small instance of its schema, `[[tool:NAME:{json}]]`
  with those arguments (the JSON cannot contain `]`), `[[tool:NAME:malformed]]` with arguments that
  are not valid JSON; several markers are parallel calls. With tools offered, no marker and
  `tool_choice` other than "none", the fake calls the chosen (else the first) tool with an instance
  of its schema. A conversation that ends with tool results is answered `Result: <results>` and
  never calls a tool again, so that a tool loop ends.
- Images in the last user turn are acknowledged in the echo: ` [image: image/png]` each.
- `[[shape:NAME]]` asks for one of a vendor's answer shapes (see `SHAPES`); protocols that have no
  such shape answer normally. A refusal's text is `REFUSAL`; a reasoning model's reasoning is
  `thinking_for(call)`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from typing import Any

from evalpipe.testing._wire import Answer, Call, ErrorKind, Finish, Operation, PlannedToolCall, RequestRejected

MARKER = re.compile(r"\[\[(?P<name>[a-z_]+)(?::(?P<arg>[^\]]*))?\]\]")
DEFAULT_DIMENSIONS = 64
REFUSAL = "I'm sorry, but I can't help with that."

# Answer shapes a `[[shape:NAME]]` marker selects.
SHAPES = {
    "refusal": "the model declines in words (OpenAI `message.refusal`, `delta.refusal`)",
    "tool_call": "a tool call instead of text (`message.tool_calls`, finish reason tool_calls)",
    "content_filter": "the answer is cut by the content filter (finish reason content_filter)",
    "content_filter_error": "the prompt is refused with 400 `content_filter` (Azure's innererror)",
    "encrypted_reasoning": "reasoning arrives encrypted only (OpenRouter `reasoning.encrypted`)",
    "invalid_request": "the `error_event` fault sends a 400 invalid_request_error event instead",
}


def count_tokens(*texts: str) -> int:
    """Tokens as the fake counts them: whitespace-separated words."""
    return sum(len(text.split()) for text in texts)


def markers(text: str) -> dict[str, str]:
    """The `[[name]]` / `[[name:arg]]` markers in a text (the last one of a name wins)."""
    return {m.group("name"): m.group("arg") or "" for m in MARKER.finditer(text)}


def strip_markers(text: str) -> str:
    """The text without its markers."""
    return re.sub(r"[ \t]*" + MARKER.pattern, "", text).strip()


def shape_of(call: Call) -> str | None:
    """The answer shape the last user message asks for, if any."""
    return markers(call.prompt).get("shape")


def thinking_for(call: Call) -> str:
    """The deterministic reasoning of a reasoning model."""
    return f"Thinking: {strip_markers(call.prompt)}".strip()


def split_pieces(text: str) -> list[str]:
    """Word-sized pieces that join back to exactly `text`."""
    pieces = re.findall(r"\S+\s*", text)
    if not pieces:
        return [text] if text else []
    lead = text[: len(text) - len("".join(pieces))]
    pieces[0] = lead + pieces[0]
    return pieces


def answer_for(call: Call) -> Answer:
    """The answer the fake gives to a call."""
    input_tokens = count_tokens(*call.texts)
    if call.operation is Operation.EMBED:
        dimensions = call.dimensions or DEFAULT_DIMENSIONS
        vectors = [embed_text(text, dimensions) for text in call.inputs]
        return Answer(input_tokens=count_tokens(*call.inputs), embeddings=vectors)
    scripted = markers(call.prompt).get("reply")
    if shape_of(call) == "refusal":
        text = REFUSAL
    elif scripted is not None:
        text = scripted.strip()
    elif call.json_schema is not None:
        text = json.dumps(instance_for(call.json_schema))
    elif call.json_mode:
        text = json.dumps({"echo": strip_markers(call.prompt)})
    elif call.tool_results:
        text = "Result: " + " | ".join(call.tool_results)
    else:
        text = f"Echo: {strip_markers(call.prompt)}".strip()
        text += "".join(f" [image: {kind}]" for kind in call.images)
    tool_calls = planned_tool_calls(call)
    finish = Finish.TOOL_CALLS if tool_calls else Finish.STOP
    words = text.split()
    if call.max_tokens is not None and len(words) > call.max_tokens:
        text, finish = " ".join(words[: max(call.max_tokens, 0)]), Finish.LENGTH
    return Answer(
        text=text,
        pieces=split_pieces(text),
        finish=finish,
        input_tokens=input_tokens,
        output_tokens=count_tokens(text, *(planned.arguments for planned in tool_calls)),
        tool_calls=tool_calls,
    )


# The fixed call of `[[shape:tool_call]]`, kept for the tests written before the tool markers.
WEATHER_CALL = PlannedToolCall("get_weather", '{"city": "Paris"}', "01FakeToolCall")
MALFORMED_ARGUMENTS = '{"city": "Par'


def planned_tool_calls(call: Call) -> list[PlannedToolCall]:
    """The tool calls the fake makes for a call (see the module docstring), with stable ids."""
    if call.operation is not Operation.CHAT or call.tool_results:
        return []
    planned: list[PlannedToolCall] = []
    for found in MARKER.finditer(call.prompt):
        if found.group("name") != "tool":
            continue
        name, _, arguments = (found.group("arg") or "").partition(":")
        if not name:
            raise RequestRejected(ErrorKind.BAD_REQUEST, "bad fake-server marker: tool needs a name")
        if arguments == "malformed":
            arguments = MALFORMED_ARGUMENTS
        elif not arguments:
            arguments = json.dumps(instance_for(call.tools.get(name) or {"type": "object"}))
        planned.append(PlannedToolCall(name, arguments, f"{len(planned)}_{name}"))
    if planned:
        return planned
    if shape_of(call) == "tool_call":
        return [WEATHER_CALL]
    if not call.tools or call.tool_choice == "none":
        return []
    name = call.tool_choice if call.tool_choice in call.tools else next(iter(call.tools))
    return [PlannedToolCall(name, json.dumps(instance_for(call.tools[name])), f"0_{name}")]


def image_kind(media_type: str, data: str) -> str:
    """The MIME type of a base64 image part, or `RequestRejected` when the data is not base64."""
    try:
        # Standard or URL-safe alphabet: the google-genai SDK sends the latter, and Gemini takes both.
        raw = base64.b64decode(data.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        raise RequestRejected(ErrorKind.BAD_REQUEST, "Invalid image: the data is not valid base64.") from None
    if media_type:
        return media_type
    signatures = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}
    sniffed = next((kind for head, kind in signatures.items() if raw.startswith(head)), None)
    return sniffed or ("image/webp" if raw[8:12] == b"WEBP" else "image")


def data_url_kind(url: str) -> str:
    """The MIME type of an `image_url` (checked when it is a data URL), or "url"."""
    if not url.startswith("data:"):
        return "url"
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise RequestRejected(ErrorKind.BAD_REQUEST, "Invalid image URL: expected data:<type>;base64,<data>.")
    return image_kind(head[len("data:"):-len(";base64")], payload)


def embed_text(text: str, dimensions: int) -> list[float]:
    """A unit vector: each word adds ±1 at a position chosen by a stable hash of the word."""
    vector = [0.0] * max(dimensions, 1)
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        position = int.from_bytes(digest[:4], "little") % len(vector)
        vector[position] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


def instance_for(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A small JSON value valid for a JSON schema (OpenAPI-style upper-case types included).

    Covers what structured-output schemas use: object, array, string, number, integer,
    boolean, null, enum, const, required, $ref into $defs/definitions, anyOf/oneOf/allOf.
    """
    root = schema if root is None else root
    if depth > 20:
        return None
    if "$ref" in schema:
        return instance_for(_resolve(root, str(schema["$ref"])), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if _type_of(o) != "null"] or schema[key]
            return instance_for(options[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(root, part["$ref"]) if "$ref" in part else part
            for name, value in part.items():
                if name in ("properties", "$defs") and isinstance(value, dict):
                    merged.setdefault(name, {}).update(value)
                elif name == "required":
                    merged.setdefault("required", []).extend(value)
                else:
                    merged.setdefault(name, value)
        return instance_for(merged, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: instance_for(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 0)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items")
        return [instance_for(items if isinstance(items, dict) else {}, root, depth + 1)] * count
    if kind == "string":
        return _string_for(schema)
    if kind in ("number", "integer"):
        return _number_for(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), kind[0] if kind else None)
    return str(kind).lower() if kind is not None else None


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string_for(schema: dict[str, Any]) -> str:
    value = _FORMATS.get(str(schema.get("format", "")), "text")
    minimum, maximum = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(value) < minimum:
        value = value + "x" * (minimum - len(value))
    if maximum is not None:
        value = value[: int(maximum)]
    return value


def _number_for(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 0
    if "minimum" in schema:
        value = max(value, float(schema["minimum"]))
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        value = max(value, float(schema["exclusiveMinimum"]) + 1)
    if "maximum" in schema:
        value = min(value, float(schema["maximum"]))
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        value = min(value, float(schema["exclusiveMaximum"]) - 1)
    return math.ceil(value) if integer else value
