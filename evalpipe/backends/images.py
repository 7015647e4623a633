"""Images for requests: read from files, typed by their bytes, encoded as the vendors want them.

The core types only name an image (a path, a URL, bytes); reading a file is I/O and happens here,
when a request is built, so that a missing file fails before anything is sent."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from evalpipe.errors import ConfigError, UnsupportedFeatureError
from evalpipe.types import ChatMessage, Image

# Leading bytes of the formats every vision API takes (PNG, JPEG, GIF, WebP).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def media_type_of(data: bytes) -> str:
    """The MIME type of image bytes, from their signature; ConfigError for anything else."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ConfigError("image is not PNG, JPEG, GIF or WebP (by its first bytes)")


def loaded(image: Image) -> Image:
    """`image` with its bytes read (for a path) and its MIME type set (for a path or bytes)."""
    if image.url is not None:
        return image
    if image.path is not None:
        try:
            data = Path(image.path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"image {image.path!r} cannot be read: {exc.strerror or exc}") from None
        try:
            return Image.from_bytes(data, image.media_type or media_type_of(data))
        except ConfigError as exc:
            raise ConfigError(f"image {image.path!r}: {exc}") from None
    assert image.data is not None
    return image if image.media_type else replace(image, media_type=media_type_of(image.data))


def load_images(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The messages with every image read and typed, ready for a pure request builder."""
    return [replace(m, images=tuple(loaded(i) for i in m.images)) if m.images else m for m in messages]


def base64_of(image: Image) -> str:
    """The bytes of a loaded image, base64-encoded (Anthropic, Gemini, Ollama)."""
    assert image.data is not None, "image not loaded"
    return base64.b64encode(image.data).decode("ascii")


def data_url(image: Image) -> str:
    """The URL of an image for OpenAI-style `image_url` parts: its own, or a base64 data URL."""
    if image.url is not None:
        return image.url
    return f"data:{image.media_type};base64,{base64_of(image)}"


def inline_data(image: Image, backend: str) -> tuple[str, str]:
    """(MIME type, base64) of an image a vendor only takes inline; a URL is refused (it would have to be
    fetched, which evalpipe does not do behind the caller's back), a data URL is unpacked."""
    if image.url is not None:
        head, sep, payload = image.url.partition(",")
        if image.url.startswith("data:") and sep and head.endswith(";base64"):
            return head[len("data:"):-len(";base64")], payload
        raise UnsupportedFeatureError(backend, "image URLs (give a file path or bytes)")
    return image.media_type, base64_of(image)
