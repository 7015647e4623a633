"""The interface every vendor's batch API is spoken through, and the shapes it hands back.

    BatchAdapter(provider)
      entry(custom_id, request)      one request as the batch carries it (the live call's own body)
      upload / find_upload           the requests as a file, for vendors that take one (OpenAI)
      create / find_batch            the batch; `find_*` recognise a step a killed process already did
      poll                           -> RemoteBatch (state, counts)
      results                        -> ItemResult per custom_id, parsed by the live call's own parser
      cancel

An adapter does I/O through its provider (key, base URL, headers, error classification) and never
retries or waits: the orchestration above it records each step and decides what to do next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from evalpipe import errors
from evalpipe.backends.base import HttpRequest, Provider
from evalpipe.backends.transport import json_bytes
from evalpipe.types import ChatResponse

# "running" until the vendor is done with the batch; then why it ended. Every terminal state may still
# have results to collect (an expired or cancelled batch keeps the answers it finished).
BatchState = Literal["running", "ended", "failed", "expired", "cancelled"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A reason the vendor refused a batch at validation: a line (0-based entry), a code, a message."""

    line: int | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RemoteBatch:
    """A batch as the vendor reports it."""

    id: str
    state: BatchState
    vendor_status: str
    counts: Mapping[str, int] = field(default_factory=dict)
    result_refs: tuple[str, ...] = ()  # where the results are (OpenAI: output and error file ids)
    rejections: tuple[Rejection, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state != "running"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One request's outcome: an answer or a classified error."""

    custom_id: str
    response: ChatResponse | None = None
    error: errors.ProviderError | None = None


class BatchAdapter:
    """One vendor's batch API, spoken through `provider`. Class attributes are the vendor's defaults."""

    price_factor: ClassVar[float] = 0.5  # the vendor's batch discount: half the live price
    max_requests: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 200_000_000
    poll_interval_s: ClassVar[float] = 60.0
    max_wait_h: ClassVar[float] = 24.0
    uploads: ClassVar[bool] = False  # whether the requests go up as a file before the batch is created

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @property
    def name(self) -> str:
        return self.provider.name

    def entry(self, custom_id: str, request: HttpRequest) -> dict[str, Any]:
        """`request` (what the live call would send) as one entry of a batch."""
        raise NotImplementedError

    def entry_bytes(self, entry: Mapping[str, Any]) -> int:
        """What an entry adds to the batch's size (a JSONL line and its newline)."""
        return len(json_bytes(entry)) + 1

    async def upload(self, marker: str, entries: Sequence[Mapping[str, Any]]) -> str:
        """Upload the entries as the batch's input file named after `marker`; its file id."""
        raise errors.UnsupportedFeatureError(self.name, "batch input files")

    async def find_upload(self, marker: str) -> str | None:
        """The id of an input file named after `marker` already uploaded (by a process that died)."""
        return None

    async def create(self, marker: str, file_id: str | None, entries: Sequence[Mapping[str, Any]]) -> RemoteBatch:
        """Create the batch, labelled with `marker` where the vendor keeps a label."""
        raise NotImplementedError

    async def find_batch(self, marker: str, file_id: str | None, created_after: float,
                         total: int) -> RemoteBatch | None:
        """A batch this marker's chunk already created (by a process that died before recording its id)."""
        raise NotImplementedError

    async def poll(self, batch_id: str) -> RemoteBatch:
        raise NotImplementedError

    async def results(self, batch: RemoteBatch) -> list[ItemResult]:
        """Every result the ended batch has, answers parsed as the live call parses them."""
        raise NotImplementedError

    async def cancel(self, batch_id: str) -> None:
        raise NotImplementedError

    # -- shared helpers -------------------------------------------------------------------------------

    async def send(self, request: HttpRequest) -> Any:
        """Send a JSON request through the provider; the parsed JSON answer."""
        content = await self.provider.send_bytes(request)
        try:
            return json.loads(content)
        except ValueError:
            raise errors.ProtocolError(f"batch answer is not JSON: {content[:80]!r}", provider=self.name) from None

    def parse_answer(self, custom_id: str, body: Any) -> ItemResult:
        """A live-shaped answer body parsed by the provider's own parser; a parsing failure is the item's error."""
        try:
            return ItemResult(custom_id, response=self.provider.parse_chat(body))
        except errors.ProviderError as error:
            return ItemResult(custom_id, error=error)

    def failed(self, custom_id: str, status: int, body: Any) -> ItemResult:
        """A per-request failure with the vendor's HTTP status and error body, classified as a live one is."""
        return ItemResult(custom_id, error=self.provider.classify_error(status, body, {}))


def jsonl(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """Entries as JSONL, one compact line each."""
    return b"".join(json_bytes(entry) + b"\n" for entry in entries)


def jsonl_lines(content: bytes, provider: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL answer; a line that is not one is a ProtocolError."""
    lines = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise errors.ProtocolError("batch result line is not JSON", provider=provider) from None
        if not isinstance(line, dict):
            raise errors.ProtocolError("batch result line is not a JSON object", provider=provider)
        lines.append(line)
    return lines
