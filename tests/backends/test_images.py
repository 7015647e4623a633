"""Image input end to end: paths, bytes and URLs reach every vendor in its own shape, or are refused
before anything is sent."""

from __future__ import annotations

import base64
from itertools import count
from pathlib import Path

import pytest

from evalpipe import ChatMessage, Image, LLMBuilder, Provider, errors
from evalpipe.backends.images import media_type_of
from evalpipe.testing import FakeServer, tiny_png

_keys = count()
BACKENDS = [
    ("openai", "openai", "gpt-4o-mini"), ("azure_openai", "azure", "gpt-4o-mini"), ("mistral", "mistral", "m"),
    ("groq", "groq", "m"), ("xai", "xai", "m"), ("openrouter", "openrouter", "m"),
    ("anthropic", "anthropic", "claude-3-5-haiku-latest"), ("google", "gemini", "gemini-2.0-flash"),
    ("ollama", "ollama", "llava"),
]
IDS = [b[0] for b in BACKENDS]




def build(srv: FakeServer, backend: str, vendor: str, model: str) -> Provider:
    builder = LLMBuilder().backend(backend).model(model).base_url(srv.url_for(vendor)).max_retries(0).timeout(5)
    return builder.build() if backend == "ollama" else builder.api_key(f"sk-img-{next(_keys):06d}").build()


@pytest.mark.parametrize(("backend", "vendor", "model"), BACKENDS, ids=IDS)
def test_an_image_from_a_path_or_bytes_reaches_the_vendor(fake_server: FakeServer, tmp_path: Path, backend: str,
                                                          vendor: str, model: str) -> None:
    path = tmp_path / "dot.png"
    path.write_bytes(tiny_png())
    llm = build(fake_server, backend, vendor, model)
    for message in (ChatMessage.user("what is this?", [str(path)]),
                    ChatMessage.user("what is this?", [Image.from_bytes(tiny_png())])):
        assert llm.chat([message]).text == "Echo: what is this? [image: image/png]"
        assert llm.stream([message]).collect().text == "Echo: what is this? [image: image/png]"


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_an_image_url_is_passed_for_the_vendor_to_fetch(fake_server: FakeServer, backend: str) -> None:
    llm = build(fake_server, backend, backend, "gpt-4o-mini" if backend == "openai" else "claude-sonnet-4-5")
    response = llm.chat([ChatMessage.user("see", ["https://example.com/cat.jpg"])])
    assert response.text == "Echo: see [image: url]"


@pytest.mark.parametrize(("backend", "feature"), [("google", "image URLs"), ("ollama", "image URLs")])
def test_vendors_that_take_only_inline_images_refuse_urls_before_sending(fake_server: FakeServer, backend: str,
                                                                          feature: str) -> None:
    vendor = "gemini" if backend == "google" else backend
    llm = build(fake_server, backend, vendor, "m")
    before = fake_server.stats().requests
    with pytest.raises(errors.UnsupportedFeatureError, match=feature):
        llm.chat([ChatMessage.user("see", ["https://example.com/cat.jpg"])])
    assert fake_server.stats().requests == before


def test_a_data_url_is_unpacked_for_inline_only_vendors(fake_server: FakeServer) -> None:
    url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    for backend, vendor in (("google", "gemini"), ("ollama", "ollama")):
        assert build(fake_server, backend, vendor, "m").chat([ChatMessage.user("x", [url])]).text.endswith(
            "[image: image/png]")


def test_a_missing_or_unknown_image_fails_before_sending(fake_server: FakeServer, tmp_path: Path) -> None:
    llm = build(fake_server, "openai", "openai", "gpt-4o-mini")
    before = fake_server.stats().requests
    with pytest.raises(errors.ConfigError, match="nowhere.png"):
        llm.chat([ChatMessage.user("x", [str(tmp_path / "nowhere.png")])])
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(errors.ConfigError, match="notes.png.*not PNG, JPEG, GIF or WebP"):
        llm.chat([ChatMessage.user("x", [str(tmp_path / "notes.png")])])
    assert fake_server.stats().requests == before


@pytest.mark.parametrize("backend", ["phind", "deepseek"])
def test_text_only_backends_refuse_images_before_sending(fake_server: FakeServer, backend: str) -> None:
    llm = build(fake_server, backend, backend, "m")
    with pytest.raises(errors.UnsupportedFeatureError, match=f"{backend} does not support image input"):
        llm.chat([ChatMessage.user("x", [Image.from_bytes(tiny_png())])])


def test_the_bundled_local_model_refuses_images_and_tools_without_starting() -> None:
    llm = LLMBuilder().backend("local").build()
    with pytest.raises(errors.UnsupportedFeatureError, match="bundled base model.*image input"):
        llm.chat([ChatMessage.user("x", [Image.from_bytes(tiny_png())])])
    with pytest.raises(errors.UnsupportedFeatureError, match="bundled base model.*tool calling"):
        LLMBuilder().backend("local").tool("get_time").build().chat([ChatMessage.user("x")])


def test_media_types_come_from_the_bytes() -> None:
    assert media_type_of(tiny_png()) == "image/png"
    assert media_type_of(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert media_type_of(b"GIF89a...") == "image/gif"
    assert media_type_of(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    with pytest.raises(errors.ConfigError):
        media_type_of(b"%PDF-1.7")
    with pytest.raises(errors.ConfigError, match="exactly one"):
        Image()


def test_text_messages_keep_their_old_shape_on_the_wire() -> None:
    llm = LLMBuilder().backend("openai").api_key("sk-img-0000000000").build()
    body = llm.chat_request([ChatMessage.user("hi")], llm.config.params, stream=False).body
    assert body is not None and body["messages"] == [{"role": "user", "content": "hi"}]
    assert ChatMessage("user", "hi") == ChatMessage.user("hi") and ChatMessage.user("hi").content == "hi"
