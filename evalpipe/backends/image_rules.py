"""Each vendor's documented rules for an image in a request: what it costs in input tokens, and what it refuses.

A provider class names its rules (`Provider.image_rules`); a plan, the budget guard and the token
limiter count an image with them, and `validate` checks every item's images against them before any
call. Sizes come from the image's header (`images.image_dimensions`), never from decoding it.

    vendor     tokens per image (w x h, after the vendor's own downscaling)        refused
    OpenAI     fit 2048x2048, shortest side to 768, 512-px tiles: base + per tile   > 20 MB
               (gpt-4o, 4.1, 4.5: 85 + 170; gpt-4o-mini: 2833 + 5667; o1, o3: 75 + 150);
               gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano: 32-px patches (at most
               1536) times 1.62 / 2.46 / 1.72 / 1.62 / 2.46
    Anthropic  w*h/750, after scaling to a long edge of 1568 and ~1,600 tokens      > 5 MB, a side > 8000 px
    Gemini     258 when both sides <= 384 px, else 258 per 768x768 tile            > 15 MB (20 MB base64 request)
    Mistral    Pixtral: fit 1024x1024, a token per 16x16 patch plus one per row     > 10 MB
    Groq       not documented: counted as gpt-4o                                    > 3 MB (4 MB base64 request),
                                                                                      > 33 megapixels
    xAI        not documented: counted as gpt-4o                                    > 10 MiB, not PNG or JPEG
    Ollama     by model family (gemma3 256, llava 576, llama3.2-vision 6404),      none documented
               else as gpt-4o
    local      Gemma 3's encoder: 256                                               none

An image whose size is unknown (an http(s) URL the vendor fetches) is counted as `ASSUMED_SIZE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evalpipe.backends.images import image_bytes, image_dimensions, media_type_of
from evalpipe.errors import ConfigError
from evalpipe.types import Image

ImageTokens = Callable[[int, int, str], int]  # (width, height, model) -> input tokens
ASSUMED_SIZE = (2048, 2048)  # an image whose size cannot be read without fetching it: a large photo
MB = 1024 * 1024
ALL_FORMATS = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def _model_name(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()  # OpenRouter's "openai/gpt-4o" is gpt-4o


def _fitted(width: int, height: int, scale: float) -> tuple[int, int]:
    return (max(1, int(width * scale)), max(1, int(height * scale))) if scale < 1 else (width, height)


# OpenAI's vision guide ("Calculating costs"): tile-based models by base and per-tile tokens, the
# patch-based ones by their multiplier. Matched by prefix, first match wins; anything else is gpt-4o's.
OPENAI_TILES: Sequence[tuple[str, int, int]] = (
    ("gpt-4o-mini", 2833, 5667), ("o1", 75, 150), ("o3", 75, 150), ("computer-use", 65, 129))
OPENAI_PATCHES: Sequence[tuple[str, float]] = (
    ("gpt-4.1-mini", 1.62), ("gpt-4.1-nano", 2.46), ("o4-mini", 1.72), ("gpt-5-mini", 1.62), ("gpt-5-nano", 2.46))
PATCH_BUDGET = 1536


def openai_tiles(width: int, height: int, base: int = 85, per_tile: int = 170) -> int:
    """OpenAI's high-detail tile rule: fit in 2048x2048, shortest side down to 768, 512-px tiles."""
    width, height = _fitted(width, height, min(2048 / width, 2048 / height))
    width, height = _fitted(width, height, 768 / min(width, height))
    return base + per_tile * math.ceil(width / 512) * math.ceil(height / 512)


def openai_patches(width: int, height: int, multiplier: float) -> int:
    """OpenAI's patch rule: 32-px patches, the image shrunk to at most 1536 of them, times the model's multiplier."""
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > PATCH_BUDGET:
        shrink = math.sqrt(PATCH_BUDGET * 32 * 32 / (width * height))
        # Shrunk a little more so that a whole number of patches covers the width or the height.
        shrink *= min(math.floor(width * shrink / 32) / (width * shrink / 32),
                      math.floor(height * shrink / 32) / (height * shrink / 32))
        patches = min(PATCH_BUDGET, math.ceil(int(width * shrink) / 32) * math.ceil(int(height * shrink) / 32))
    return math.ceil(patches * multiplier)


def openai_image_tokens(width: int, height: int, model: str) -> int:
    """An image's input tokens on an OpenAI model (detail "auto", which these models price as "high")."""
    name = _model_name(model)
    for prefix, multiplier in OPENAI_PATCHES:
        if name.startswith(prefix):
            return openai_patches(width, height, multiplier)
    for prefix, base, per_tile in OPENAI_TILES:
        if name.startswith(prefix):
            return openai_tiles(width, height, base, per_tile)
    return openai_tiles(width, height)


def anthropic_image_tokens(width: int, height: int, model: str) -> int:
    """Anthropic's rule (vision guide): w*h/750, after scaling down to a long edge of 1568 px and ~1,600 tokens."""
    width, height = _fitted(width, height, min(1568 / max(width, height), math.sqrt(1600 * 750 / (width * height))))
    return math.ceil(width * height / 750)


def gemini_image_tokens(width: int, height: int, model: str) -> int:
    """Gemini's rule (token guide): 258 for an image within 384x384, else 258 per 768x768 tile."""
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def mistral_image_tokens(width: int, height: int, model: str) -> int:
    """Pixtral's encoding (mistral-common): fit 1024x1024, a token per 16x16 patch, one break token per row."""
    width, height = _fitted(width, height, 1024 / max(width, height))
    rows, columns = math.ceil(height / 16), math.ceil(width / 16)
    return rows * (columns + 1)


# Ollama runs many open models, each with its own vision encoder and no vendor formula.
OLLAMA_FAMILIES: Sequence[tuple[str, int]] = (("gemma3", 256), ("llava", 576), ("llama3.2-vision", 6404))


def ollama_image_tokens(width: int, height: int, model: str) -> int:
    """By model family where its encoder's count is known (Gemma 3: 256, LLaVA 1.5: 576, Llama 3.2
    Vision: 4 tiles of 1601), else OpenAI's gpt-4o rule as an estimate."""
    name = _model_name(model)
    return next((tokens for prefix, tokens in OLLAMA_FAMILIES if name.startswith(prefix)),
                openai_tiles(width, height))


def gemma_image_tokens(width: int, height: int, model: str) -> int:
    """Gemma 3's vision encoder: every image becomes 256 tokens (896x896, pooled)."""
    return 256


def gpt4o_estimate(width: int, height: int, model: str) -> int:
    """For vendors that document no formula: OpenAI's gpt-4o rule, stated as an estimate."""
    return openai_tiles(width, height)


@dataclass(frozen=True, slots=True)
class ImageRules:
    """One vendor's rules for an image in a request (`None`: no documented limit)."""

    vendor: str
    tokens: ImageTokens
    max_bytes: int | None = None
    max_side: int | None = None  # pixels, either side
    max_pixels: int | None = None
    media_types: frozenset[str] = ALL_FORMATS
    source: str = ""  # where the numbers come from, for the reader of a refusal

    def image_tokens(self, image: Image, model: str) -> int:
        """The input tokens `image` costs on `model`; an image of unknown size counts as `ASSUMED_SIZE`."""
        width, height = image_dimensions(image) or ASSUMED_SIZE
        return self.tokens(max(width, 1), max(height, 1), model)

    def problem(self, image: Image) -> str | None:
        """Why this vendor would refuse `image` (format, bytes, pixels), or None; http(s) URLs are not fetched."""
        size = image_bytes(image)
        if self.max_bytes is not None and size is not None and size > self.max_bytes:
            return f"is {size / MB:.1f} MB, over the {_megabytes(self.max_bytes)} MB {self.vendor} accepts per image"
        if image.path is not None or image.data is not None:
            try:
                media_type = image.media_type or media_type_of(_head(image))
            except ConfigError as error:
                return error.message.removeprefix("image ")
            if media_type not in self.media_types:
                accepted = ", ".join(sorted(t.removeprefix("image/").upper() for t in self.media_types))
                return f"is {media_type.removeprefix('image/').upper()}; {self.vendor} accepts {accepted} only"
        dimensions = image_dimensions(image)
        if dimensions is None:
            return None
        width, height = dimensions
        if self.max_side is not None and max(width, height) > self.max_side:
            return f"is {width}x{height} px; {self.vendor} refuses a side over {self.max_side} px"
        if self.max_pixels is not None and width * height > self.max_pixels:
            return (f"is {width}x{height} px ({width * height / 1e6:.1f} megapixels); {self.vendor} refuses "
                    f"over {self.max_pixels / 1e6:.0f} megapixels")
        return None


def _megabytes(size: int) -> str:
    return f"{size / MB:g}"


def _head(image: Image) -> bytes:
    if image.data is not None:
        return image.data[:16]
    assert image.path is not None
    try:
        with open(image.path, "rb") as file:
            return file.read(16)
    except OSError:
        return b""


OPENAI_IMAGES = ImageRules("OpenAI", openai_image_tokens, max_bytes=20 * MB,
                           source="OpenAI vision guide: up to 20 MB per image")
ANTHROPIC_IMAGES = ImageRules("Anthropic", anthropic_image_tokens, max_bytes=5 * MB, max_side=8000,
                              source="Anthropic vision guide: 5 MB per image by API, 8000x8000 px")
# 20 MB for the whole inline request, and an inline image travels base64-encoded (4 bytes per 3).
GEMINI_IMAGES = ImageRules("Gemini", gemini_image_tokens, max_bytes=15 * MB,
                           source="Gemini: inline requests up to 20 MB, base64-encoded")
MISTRAL_IMAGES = ImageRules("Mistral", mistral_image_tokens, max_bytes=10 * MB,
                            source="Mistral vision guide: 10 MB per image")
# A base64 image request up to 4 MB (413 above), so at most 3 MB of image; 33 megapixels per image.
GROQ_IMAGES = ImageRules("Groq", gpt4o_estimate, max_bytes=3 * MB, max_pixels=33_177_600,
                         source="Groq vision guide: base64 requests up to 4 MB, 33 megapixels")
XAI_IMAGES = ImageRules("xAI", gpt4o_estimate, max_bytes=10 * MB, media_types=frozenset({"image/png", "image/jpeg"}),
                        source="xAI image understanding guide: 10 MiB, JPEG or PNG")
AZURE_IMAGES = ImageRules("Azure OpenAI", openai_image_tokens, max_bytes=20 * MB,
                          source="as OpenAI: up to 20 MB per image")
OPENROUTER_IMAGES = ImageRules("OpenRouter", openai_image_tokens, source="the routed model's vendor decides")
OLLAMA_IMAGES = ImageRules("Ollama", ollama_image_tokens, source="no documented limit")
UNDOCUMENTED_IMAGES = ImageRules("this backend", gpt4o_estimate, source="no documented limit")
GEMMA_IMAGES = ImageRules("the local model", gemma_image_tokens, source="no limit")


__all__ = [
    "ANTHROPIC_IMAGES",
    "ASSUMED_SIZE",
    "AZURE_IMAGES",
    "GEMINI_IMAGES",
    "GEMMA_IMAGES",
    "GROQ_IMAGES",
    "MISTRAL_IMAGES",
    "OLLAMA_IMAGES",
    "OPENAI_IMAGES",
    "OPENROUTER_IMAGES",
    "UNDOCUMENTED_IMAGES",
    "XAI_IMAGES",
    "ImageRules",
    "anthropic_image_tokens",
    "gemini_image_tokens",
    "mistral_image_tokens",
    "openai_image_tokens",
]
