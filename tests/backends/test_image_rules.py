"""Images measured from their headers and priced by each vendor's documented rule: the examples of the
vendors' own guides, every header format read without decoding, and the limits that refuse an image."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as Picture

from evalpipe.backends.image_rules import (
    ANTHROPIC_IMAGES,
    ASSUMED_SIZE,
    GEMINI_IMAGES,
    GROQ_IMAGES,
    OPENAI_IMAGES,
    XAI_IMAGES,
    anthropic_image_tokens,
    gemini_image_tokens,
    mistral_image_tokens,
    openai_image_tokens,
)
from evalpipe.backends.images import header_dimensions, image_bytes, image_dimensions
from evalpipe.backends.registry import LLMBackend, provider_class
from evalpipe.types import Image


def encoded(size: tuple[int, int], kind: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Picture.new("RGB", size, (30, 120, 200)).save(buffer, kind, **options)
    return buffer.getvalue()


class CountingReader(io.BytesIO):
    """A stream that remembers how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


@pytest.mark.parametrize(("kind", "options"), [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}),
                                               ("GIF", {}), ("WEBP", {}), ("WEBP", {"lossless": True})])
@pytest.mark.parametrize("size", [(1, 1), (1025, 3), (3000, 2001)])
def test_every_format_gives_its_size_from_the_header(kind: str, options: dict[str, Any], size: tuple[int, int]) -> None:
    assert header_dimensions(io.BytesIO(encoded(size, kind, **options))) == size


def test_a_jpeg_with_a_large_exif_block_is_measured_without_reading_its_pixels() -> None:
    exif = Picture.Exif()
    exif[0x010E] = "x" * 30_000  # an image description: 30 kB of metadata before the frame header
    buffer = io.BytesIO()
    Picture.effect_noise((800, 600), 90).convert("RGB").save(buffer, "JPEG", exif=exif, quality=95)
    data = buffer.getvalue()
    reader = CountingReader(data)

    assert header_dimensions(reader) == (800, 600)
    assert reader.taken < 200 < len(data) - 30_000  # segments are skipped by seeking, not read


def test_extended_webp_and_data_urls_and_unknown_sources() -> None:
    buffer = io.BytesIO()
    Picture.new("RGBA", (321, 123)).save(buffer, "WEBP", exif=b"Exif\x00\x00" + b"x" * 64)
    assert buffer.getvalue()[12:16] == b"VP8X"
    assert header_dimensions(io.BytesIO(buffer.getvalue())) == (321, 123)
    png = encoded((40, 30), "PNG")
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert image_dimensions(Image.from_url(url)) == (40, 30)
    assert image_bytes(Image.from_url(url)) == len(png)
    assert image_dimensions(Image.from_url("https://example.com/a.png")) is None
    assert image_dimensions(Image.from_bytes(b"not an image at all")) is None
    assert header_dimensions(io.BytesIO(png[:20])) is None  # a header cut short


def test_openai_tiles_and_patches_match_the_guides_examples() -> None:
    # OpenAI's vision guide: 1024x1024 high detail is 765 tokens, 2048x4096 is 1105 (gpt-4o); the patch
    # models' example 1800x2400 is 1452 patches, times gpt-4.1-mini's 1.62.
    assert openai_image_tokens(1024, 1024, "gpt-4o") == 765
    assert openai_image_tokens(2048, 4096, "gpt-4o-2024-08-06") == 1105
    assert openai_image_tokens(1800, 2400, "gpt-4.1-mini") == 2353
    assert openai_image_tokens(1024, 1024, "gpt-4.1-nano") == 2520  # 1024 patches x 2.46
    assert openai_image_tokens(64, 64, "gpt-4o-mini") == 2833 + 5667  # the mini's inflated image price
    assert openai_image_tokens(64, 64, "openai/gpt-4o") == 85 + 170  # an OpenRouter model name


def test_anthropic_gemini_and_mistral_match_their_documented_rules() -> None:
    # Anthropic's table: 200x200 ≈ 54 tokens, 1092x1092 ≈ 1590; bigger images are scaled to about 1,600.
    assert anthropic_image_tokens(200, 200, "") == 54
    assert anthropic_image_tokens(1092, 1092, "") == 1590
    assert 1590 <= anthropic_image_tokens(6000, 4000, "") <= 1600
    # Gemini: 258 within 384x384, else 258 per started 768x768 tile.
    assert gemini_image_tokens(384, 384, "") == 258
    assert gemini_image_tokens(385, 100, "") == 258
    assert gemini_image_tokens(1000, 1600, "") == 258 * 2 * 3
    # Pixtral: a 1024x1024 image is 64 rows of 64 patches plus a break token each.
    assert mistral_image_tokens(1024, 1024, "") == 64 * 65
    assert mistral_image_tokens(2048, 1024, "") == 32 * 65


def test_an_image_of_unknown_size_is_counted_at_the_assumed_size() -> None:
    url = Image.from_url("https://example.com/photo.jpg")
    assert OPENAI_IMAGES.image_tokens(url, "gpt-4o") == openai_image_tokens(*ASSUMED_SIZE, "gpt-4o")


def test_each_backend_names_its_vendors_rules() -> None:
    rules = {backend: provider_class(backend).image_rules for backend in LLMBackend}
    assert rules[LLMBackend.ANTHROPIC] is ANTHROPIC_IMAGES and rules[LLMBackend.GOOGLE] is GEMINI_IMAGES
    assert rules[LLMBackend.XAI] is XAI_IMAGES and rules[LLMBackend.GROQ] is GROQ_IMAGES
    assert rules[LLMBackend.OPENAI] is OPENAI_IMAGES
    assert provider_class(LLMBackend.ANTHROPIC).tool_prompt_tokens == 346


def padded_png(width: int, height: int, size: int) -> bytes:
    """A PNG of `width` x `height` (its header says so) padded to `size` bytes after its end."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    return png + b"\0" * (size - len(png))


def test_the_limits_are_each_vendors(tmp_path: Path) -> None:
    six_mb = tmp_path / "six.png"
    six_mb.write_bytes(padded_png(100, 100, 6 * 1024 * 1024))
    wide = tmp_path / "wide.png"
    wide.write_bytes(padded_png(9000, 20, 1000))
    gif = tmp_path / "still.gif"
    gif.write_bytes(encoded((10, 10), "GIF"))
    huge = tmp_path / "huge.png"
    huge.write_bytes(padded_png(7000, 5000, 1000))

    six, far, still, many = (Image.from_path(p) for p in (six_mb, wide, gif, huge))
    assert ANTHROPIC_IMAGES.problem(six) == "is 6.0 MB, over the 5 MB Anthropic accepts per image"
    assert OPENAI_IMAGES.problem(six) is None and GEMINI_IMAGES.problem(six) is None
    assert GROQ_IMAGES.problem(six) == "is 6.0 MB, over the 3 MB Groq accepts per image"
    assert ANTHROPIC_IMAGES.problem(far) == "is 9000x20 px; Anthropic refuses a side over 8000 px"
    assert OPENAI_IMAGES.problem(far) is None
    assert XAI_IMAGES.problem(still) == "is GIF; xAI accepts JPEG, PNG only"
    assert OPENAI_IMAGES.problem(still) is None
    assert GROQ_IMAGES.problem(many) == "is 7000x5000 px (35.0 megapixels); Groq refuses over 33 megapixels"
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    assert OPENAI_IMAGES.problem(Image.from_path(text)) == "is not PNG, JPEG, GIF or WebP (by its first bytes)"
