"""Response transforms: pure `str -> str` functions that clean an answer before it is used.

A chain step names them (`transform=["strip_think", "extract_json"]`) or passes its own callables;
several run in the order given. Built in:

    trim           surrounding whitespace removed
    strip_think    `<think>...</think>` reasoning blocks removed (nested, unclosed and orphan-closed)
    extract_json   the JSON in an answer: a ```json fence's content, or the first JSON value in prose
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from evalpipe.errors import ConfigError
from evalpipe.scoring.structured import extract_json_text

Transform = Callable[[str], str]
TransformSpec = str | Transform  # a built-in's name or a callable

_THINK_TAG = re.compile(r"(<think\s*>|</think\s*>)", re.IGNORECASE)
_JSON_START = re.compile(r"[{\[]")


def trim(text: str) -> str:
    """The text without surrounding whitespace."""
    return text.strip()


def strip_think(text: str) -> str:
    """The answer without its `<think>` blocks, trimmed.

    Nested blocks count as one. An unclosed `<think>` (the answer was cut off while thinking) drops
    everything after it. A `</think>` with no opening tag drops everything before it: reasoning models
    such as DeepSeek-R1 and Qwen3 often have `<think>` put into the prompt by their chat template, so
    the answer starts inside the block. Reasoning a provider returns apart from the text
    (`ChatResponse.reasoning`) is never part of the text in the first place.
    """
    kept: list[str] = []
    depth = 0
    # With one capturing group, split() alternates text (even indexes) and tags (odd indexes).
    for index, piece in enumerate(_THINK_TAG.split(text)):
        if index % 2 == 0:
            if depth == 0:
                kept.append(piece)
        elif not piece.startswith("</"):
            depth += 1
        elif depth > 0:
            depth -= 1
        else:
            kept.clear()
    return "".join(kept).strip()


def extract_json(text: str) -> str:
    """The JSON text in an answer: the whole answer or its ```json fence, else the first JSON object or
    array inside prose ("Here it is: {...}"); the trimmed answer when nothing parses."""
    candidate = extract_json_text(text)
    if _parses(candidate):
        return candidate
    decoder = json.JSONDecoder()
    for start in _JSON_START.finditer(candidate):
        try:
            _, end = decoder.raw_decode(candidate, start.start())
        except ValueError:
            continue
        except RecursionError:  # nesting too deep to parse: every later start would be as deep
            break
        return candidate[start.start() : end]
    return candidate


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


BUILT_IN: dict[str, Transform] = {"trim": trim, "strip_think": strip_think, "extract_json": extract_json}


def resolve_transforms(spec: TransformSpec | Sequence[TransformSpec] | None) -> tuple[Transform, ...]:
    """The transforms a spec names, in order; an unknown name or a non-callable is a `ConfigError`."""
    if spec is None:
        return ()
    items = [spec] if isinstance(spec, str) or callable(spec) else list(spec)
    resolved: list[Transform] = []
    for item in items:
        if isinstance(item, str):
            if item not in BUILT_IN:
                raise ConfigError(f"unknown transform {item!r}; built in: {', '.join(sorted(BUILT_IN))}")
            resolved.append(BUILT_IN[item])
        elif callable(item):
            resolved.append(item)
        else:
            raise ConfigError(f"a transform is a built-in's name or a callable, not {type(item).__name__}")
    return tuple(resolved)


def apply_transforms(transforms: Sequence[Transform], text: str) -> str:
    """`text` passed through each transform in order."""
    for transform in transforms:
        text = transform(text)
    return text


__all__ = [
    "BUILT_IN",
    "Transform",
    "TransformSpec",
    "apply_transforms",
    "extract_json",
    "resolve_transforms",
    "strip_think",
    "trim",
]
