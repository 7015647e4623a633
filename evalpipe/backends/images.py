"""Images for requests: read from files, typed by their bytes, encoded as the vendors want them,
and measured (bytes, pixels) from their headers without decoding them.

The core types only name an image (a path, a URL, bytes); reading a file is I/O and happens here,
when a request is built, so that a missing file fails before anything is sent."""

from __future__ import annotations

import base64
import binascii
import io
import struct
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

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


def image_bytes(image: Image) -> int | None:
    """How many bytes `image` sends: a file's size, the bytes given, a data URL's decoded payload;
    None for an http(s) URL (the vendor fetches it) or a file that cannot be read."""
    if image.data is not None:
        return len(image.data)
    if image.path is not None:
        try:
            return Path(image.path).stat().st_size
        except OSError:
            return None
    payload = _data_url_payload(image.url or "")
    return None if payload is None else len(payload) * 3 // 4 - payload[-2:].count("=")


def image_dimensions(image: Image) -> tuple[int, int] | None:
    """(width, height) in pixels read from the image's header (PNG, JPEG, GIF, WebP), without decoding
    the pixels and reading no more of a file than the header needs; None when unknown (an http(s) URL,
    an unreadable file, another format)."""
    if image.path is not None:
        try:
            with Path(image.path).open("rb") as file:
                return header_dimensions(file)
        except OSError:
            return None
    if image.data is not None:
        return header_dimensions(io.BytesIO(image.data))
    payload = _data_url_payload(image.url or "")
    if payload is None:
        return None
    try:
        return header_dimensions(io.BytesIO(base64.b64decode(payload)))
    except (binascii.Error, ValueError):
        return None


def _data_url_payload(url: str) -> str | None:
    head, sep, payload = url.partition(",")
    return payload if url.startswith("data:") and sep and head.endswith(";base64") else None


def header_dimensions(stream: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header at the start of `stream`; None for other formats or a cut header."""
    head = stream.read(30)
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return width, height
        if head[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", head[6:10])
            return width, height
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_dimensions(head)
        if head.startswith(b"\xff\xd8"):
            stream.seek(2)
            return _jpeg_dimensions(stream)
    except struct.error:  # a header cut short
        return None
    return None


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    # From the WebP container spec (RFC 9649): lossy "VP8 ", lossless "VP8L", extended "VP8X".
    kind = head[12:16]
    if kind == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


# Start-of-frame markers carry the size; C4 (Huffman tables), C8 (reserved) and CC (arithmetic
# coding conditioning) share the range but do not.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_dimensions(stream: BinaryIO) -> tuple[int, int] | None:
    """Walk the JPEG's segments (seeking past each, so EXIF thumbnails are skipped, not read) to its frame header."""
    while True:
        marker = stream.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte before a marker
            stream.seek(-1, io.SEEK_CUR)
            continue
        if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:  # markers without a length
            continue
        length = struct.unpack(">H", stream.read(2))[0]
        if kind in _JPEG_FRAMES:
            height, width = struct.unpack(">xHH", stream.read(5))
            return width, height
        if kind == 0xD9 or length < 2:
            return None
        stream.seek(length - 2, io.SEEK_CUR)
