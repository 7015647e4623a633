"""Anthropic's Message Batches (`/v1/messages/batches`).

    create    POST v1/messages/batches {requests: [{custom_id, params: <the live Messages body>}]}
    poll      GET v1/messages/batches/{id}: processing_status in_progress | canceling | ended;
              request_counts {processing, succeeded, errored, canceled, expired}
    results   GET v1/messages/batches/{id}/results: JSONL {custom_id, result: {type: succeeded, message}
              | {type: errored, error: {type: error, error: {type, message}}} | {type: canceled}
              | {type: expired}}
    cancel    POST v1/messages/batches/{id}/cancel
    find      GET v1/messages/batches (newest first): a batch keeps no label of ours, so one created
              after the chunk's "creating" record with the chunk's number of requests is taken for it

100,000 requests or 256 MB per batch, results within 24 hours, half price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from evalpipe import errors
from evalpipe.backends.base import HttpRequest
from evalpipe.backends.batch.base import BatchAdapter, ItemResult, RemoteBatch, jsonl_lines

_ROOT = "v1/messages/batches"
# An errored request's error type, as the HTTP status a live call would have had (classified the same way).
_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
           "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
           "overloaded_error": 529}
_CLOCK_SKEW_S = 300.0  # the vendor's clock against ours, when recognising a batch by its creation time
_LIST_PAGES = 20


class AnthropicBatches(BatchAdapter):
    """Anthropic's Message Batches."""

    max_requests = 100_000
    max_bytes = 256_000_000

    def entry(self, custom_id: str, request: HttpRequest) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": request.body}

    async def create(self, marker: str, file_id: str | None, entries: Sequence[Mapping[str, Any]]) -> RemoteBatch:
        return self.remote(await self.send(HttpRequest(_ROOT, {"requests": list(entries)})))

    async def find_batch(self, marker: str, file_id: str | None, created_after: float,
                         total: int) -> RemoteBatch | None:
        found: list[RemoteBatch] = []
        after: str | None = None
        for _ in range(_LIST_PAGES):
            query = {"limit": "100", **({"after_id": after} if after else {})}
            page = await self.send(HttpRequest(_ROOT, None, query, method="GET"))
            items = page.get("data") if isinstance(page, dict) else None
            if not isinstance(items, list) or not items:
                break
            for item in items:
                created = _epoch(item.get("created_at")) if isinstance(item, dict) else None
                if created is None or created < created_after - _CLOCK_SKEW_S:
                    continue
                batch = self.remote(item)
                if sum(batch.counts.values()) == total:
                    found.append(batch)
            if not page.get("has_more") or not isinstance(page.get("last_id"), str):
                break
            after = page["last_id"]
        if len(found) > 1:  # two candidates: taking either could pay twice or lose one; a person decides
            raise errors.ConfigError(f"{len(found)} Anthropic batches ({', '.join(b.id for b in found)}) could be "
                                     f"this run's chunk {marker}; cancel the one that is not and collect again")
        return found[0] if found else None

    async def poll(self, batch_id: str) -> RemoteBatch:
        return self.remote(await self.send(HttpRequest(f"{_ROOT}/{batch_id}", None, method="GET")))

    async def cancel(self, batch_id: str) -> None:
        await self.send(HttpRequest(f"{_ROOT}/{batch_id}/cancel", {}))

    async def results(self, batch: RemoteBatch) -> list[ItemResult]:
        content = await self.provider.send_bytes(HttpRequest(f"{_ROOT}/{batch.id}/results", None, method="GET"))
        return [self.item(line) for line in jsonl_lines(content, self.name)]

    def item(self, line: Mapping[str, Any]) -> ItemResult:
        custom_id = str(line.get("custom_id"))
        result = line.get("result") if isinstance(line.get("result"), dict) else {}
        assert isinstance(result, dict)
        kind = result.get("type")
        if kind == "succeeded":
            return self.parse_answer(custom_id, result.get("message"))
        if kind == "errored":
            body = result.get("error")
            inner = body.get("error") if isinstance(body, dict) else None
            error_type = inner.get("type") if isinstance(inner, dict) else None
            return self.failed(custom_id, _STATUS.get(str(error_type), 500), body)
        if kind == "expired":
            return ItemResult(custom_id, error=errors.BatchExpiredError(
                "the batch expired before this request was answered", provider=self.name))
        if kind == "canceled":
            return ItemResult(custom_id, error=errors.BatchCancelledError(
                "the batch was cancelled before this request was answered", provider=self.name))
        return ItemResult(custom_id, error=errors.ProtocolError(f"unknown batch result type {kind!r}",
                                                                provider=self.name))

    def remote(self, answer: Any) -> RemoteBatch:
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise errors.ProtocolError("batch answer has no id", provider=self.name)
        status = str(answer.get("processing_status"))
        counts = answer.get("request_counts")
        counts = {k: int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}
        # An ended batch is over however its requests went; each request's own result says how.
        return RemoteBatch(answer["id"], "ended" if status == "ended" else "running", status, counts)


def _epoch(value: Any) -> float | None:
    """Epoch seconds of an RFC 3339 time (`2024-08-20T18:37:24.100435Z`), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
