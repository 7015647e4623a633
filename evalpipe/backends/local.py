"""The embedded local backend: OpenAI's protocol against a llama-server that evalpipe runs itself.

With no base URL the provider serves the bundled Gemma 3 270M (or `.model("/path/to/x.gguf")`) through
the process-wide server of `evalpipe.backends.llama_server`, started on first use and restarted on
the next call after a crash. With `.base_url("http://host:port")` it talks to a llama-server that is
already running and manages nothing. `attach(source)` keeps the managed settings (and what the bundled
model needs) but uses the server another process runs for them, e.g. the one of a cluster node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from pydantic import SecretStr

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider, ProviderConfig, StreamState
from evalpipe.backends.image_rules import GEMMA_IMAGES
from evalpipe.backends.llama_server import (
    BUNDLED_MODEL,
    LlamaServer,
    ServerSettings,
    ashared_server,
    shared_server,
)
from evalpipe.backends.openai import OpenAIProvider
from evalpipe.errors import register_secret
from evalpipe.types import ChatMessage, GenerationParams, StreamChunk

# The bundled model is a *base* model: it never learned Gemma's turn tokens, so after its answer it
# writes a newline and then drifts into noise or the next turn. Chat answers therefore end at the
# first newline unless the caller sets its own stop sequences; the turn markers always stop.
TURN_STOPS = ("<end_of_turn>", "<start_of_turn>")
BASE_MODEL_CHAT_STOPS = ("\n", *TURN_STOPS)


class ServerSource(Protocol):
    """A managed server that another process runs (and restarts) for a provider's settings."""

    async def address(self, broken: bool) -> tuple[str, str]:
        """The running server's root URL and API key, started now if needed; `broken`: a call to the
        address given before lost its connection (the server may be dying: restart it if so)."""
        ...


class LocalProvider(OpenAIProvider):
    """`LLMBackend.LOCAL`: llama-server's OpenAI routes; `complete()` uses `/v1/completions`."""

    name = "local"
    default_base_url = ""  # none: evalpipe starts and owns the server
    default_model = BUNDLED_MODEL
    default_embedding_model = BUNDLED_MODEL
    # llama-server's own variable for its key: used only with `.base_url(...)`; a managed server has its own.
    api_key_env = "LLAMA_API_KEY"
    requires_api_key = False
    # llama-server takes no per-request reasoning controls (its reasoning budget is a server flag).
    ignored_options = frozenset({"reasoning_effort", "reasoning_budget_tokens"})
    max_tokens_field = "max_tokens"
    top_k_field = "top_k"
    reasoning_effort_field = None
    image_rules = GEMMA_IMAGES

    # Gemma's tokenizer splits numbers into digits. Its turn format: <bos>, then <start_of_turn>role\n
    # ... <end_of_turn>\n per message and <start_of_turn>model\n to answer; the system prompt joins the
    # first user turn after a blank line. Checked against the bundled model's own tokenizer on the
    # shipped jobs' prompts: scripts/plan_error.py --tokenizer.
    digits_per_token = 1
    tokens_per_message = 5
    tokens_per_request = 4
    tokens_per_system_message = 1

    @classmethod
    def missing_model_file(cls, model: str, base_url: str | None) -> str | None:
        if base_url or not _names_file(model) or Path(model).expanduser().is_file():
            return None
        return model

    def __init__(self, config: ProviderConfig) -> None:
        managed = config.base_url.strip("/") == ""
        if not managed and not config.base_url.rstrip("/").endswith("/v1"):
            # llama-server also answers `/embeddings` without the prefix, in its own non-OpenAI shape.
            config = replace(config, base_url=config.base_url.rstrip("/") + "/v1/")
        super().__init__(config)
        self.managed = managed
        self.settings = _settings(config) if self.managed else None
        # Only the bundled base model needs help ending a chat turn; other models bring a template.
        self.base_model_stops = self.settings is not None and self.settings.model_path is None
        self._source: ServerSource | None = None
        self._broken = False  # the attached server's address must be asked for (again)
        self._addressed = False  # the attached server's address was given once

    def __repr__(self) -> str:
        where = ("attached llama-server" if self._source is not None else "managed llama-server") if self.managed \
            else self.config.base_url
        return f"{type(self).__name__}(model={self.config.model!r}, {where})"

    # ---- the managed server ----------------------------------------------------------------------

    def attach(self, source: ServerSource) -> None:
        """Use the server `source` runs for this provider's settings instead of starting one here."""
        if self.settings is None:
            raise errors.ConfigError("only a managed local backend (no base_url) can use another process's server")
        self._source = source
        self._broken = True  # no address yet

    async def server(self) -> LlamaServer | None:
        """The running managed server (started or restarted now if needed); None for `.base_url(...)`
        and for an attached server (this process does not own it)."""
        if self.settings is None:
            return None
        if self._source is not None:
            await self._ask_address(self._source)
            return None
        server = await ashared_server(self.settings)
        self._point_at(server)
        return server

    async def _ask_address(self, source: ServerSource) -> None:
        if not self._broken:
            return
        url, key = await source.address(self._addressed)  # an address given before: it broke
        register_secret(key)
        self._broken, self._addressed = False, True
        self._point_to(url, key)

    async def aopen(self) -> Provider:
        """Start (or find) the managed server, then get the connections ready."""
        await self.server()
        return await super().aopen()

    def _point_at(self, server: LlamaServer) -> None:
        self._point_to(server.base_url, server.api_key)

    def _point_to(self, root: str, api_key: str) -> None:
        url = f"{root}/v1/"
        if self.config.base_url != url:
            # A restart normally keeps the port. If it could not, the pool keeps its idle connections
            # to the old one apart (they are pooled by host and port) until they expire or it closes;
            # URL and key are read per request.
            self.config = replace(self.config, base_url=url, api_key=SecretStr(api_key))

    async def _send_json(self, request: HttpRequest) -> Any:
        server = await self.server()
        try:
            return await super()._send_json(request)
        except errors.ConnectionError:
            self._broken = self._source is not None
            await _settle(server)
            raise

    async def _stream_events(self, request: HttpRequest, state: StreamState) -> AsyncIterator[StreamChunk]:
        server = await self.server()
        try:
            async for chunk in super()._stream_events(request, state):
                yield chunk
        except errors.ConnectionError:
            self._broken = self._source is not None
            await _settle(server)
            raise

    # ---- protocol differences ------------------------------------------------------------------

    def chat_request(
        self, messages: Sequence[ChatMessage], params: GenerationParams, *, stream: bool
    ) -> HttpRequest:
        return super().chat_request(messages, replace(params, stop=self.chat_stops(params)), stream=stream)

    def check_parts(self, messages: Sequence[ChatMessage], params: GenerationParams) -> None:
        # The bundled Gemma 3 270M is a text-only base model: it has no vision tower and never learned
        # a tool-call format. A model of the caller's own (a GGUF path, a running server) may have both.
        if self.base_model_stops and any(m.images for m in messages):
            raise errors.UnsupportedFeatureError(f"{self.name} (bundled base model)", "image input")
        if self.base_model_stops and (params.tools or any(m.tool_calls or m.role == "tool" for m in messages)):
            raise errors.UnsupportedFeatureError(f"{self.name} (bundled base model)", "tool calling")
        super().check_parts(messages, params)

    def chat_stops(self, params: GenerationParams) -> tuple[str, ...] | None:
        """Stop sequences for a chat turn: the caller's, plus what the bundled base model needs."""
        if not self.base_model_stops:
            return params.stop
        if params.stop is None:
            # JSON output is grammar-constrained and may contain newlines; only the turn markers stop it.
            return TURN_STOPS if params.json_schema is not None else BASE_MODEL_CHAT_STOPS
        return tuple(params.stop) + tuple(turn for turn in TURN_STOPS if turn not in params.stop)

    def complete_request(self, prompt: str, params: GenerationParams, *, stream: bool = False) -> HttpRequest:
        body: dict[str, Any] = {"model": self.config.model, "prompt": prompt, **self.sampling(params)}
        if params.json_schema is not None:
            body["response_format"] = self.response_format(params.json_schema)
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return HttpRequest("completions", body)

    def embed_request(self, texts: Sequence[str]) -> HttpRequest:
        model = self.config.options.get("embedding_model") or self.config.model
        return HttpRequest("embeddings", {"model": model, "input": list(texts), "encoding_format": "float"})

    # ---- the Anthropic route of the same server --------------------------------------------------

    def anthropic(self) -> Provider:
        """evalpipe's Anthropic provider on the same server (llama-server also speaks `/v1/messages`).

        It talks to the server as it is now: unlike this provider it does not restart a crashed one."""
        from evalpipe.backends.anthropic import AnthropicProvider

        if self.settings is not None and self._source is None:  # attached: the address last given
            self._point_at(shared_server(self.settings))
        root = self.config.base_url.rstrip("/").removesuffix("/v1") + "/"  # its paths start with v1/
        params = replace(self.config.params, stop=self.chat_stops(self.config.params))
        return AnthropicProvider(replace(self.config, backend="anthropic", base_url=root, params=params))


async def _settle(server: LlamaServer | None) -> None:
    """After a broken connection, give a crashing server the moment it needs to be seen as dead.

    The kernel closes a dying process's sockets before the process can be waited for, so a call made
    right after the error could still find the server "running" and skip the restart."""
    if server is not None:
        await anyio.to_thread.run_sync(server.wait_exit, 1.0)


def _names_file(model: str) -> bool:
    """Whether `model` names a GGUF file to serve rather than the bundled model."""
    return model.endswith(".gguf") or Path(model).is_file()


def _settings(config: ProviderConfig) -> ServerSettings:
    """Server settings from the builder: `.model(path)`; options `parallel`, `threads`, `ctx_per_slot`,
    `chat_template` (a Jinja file) and `server_args` (more llama-server flags)."""
    options = config.options
    model_path: str | None = None
    if _names_file(config.model):
        if not Path(config.model).expanduser().is_file():
            raise errors.ConfigError(f"GGUF model file not found: {config.model}")
        model_path = config.model
    return ServerSettings(
        model_path=model_path,
        parallel=int(options["parallel"]) if options.get("parallel") else None,
        threads=int(options["threads"]) if options.get("threads") else None,
        ctx_per_slot=int(options.get("ctx_per_slot", 4096)),
        chat_template=options.get("chat_template"),
        extra_args=tuple(options.get("server_args", ())),
    )
