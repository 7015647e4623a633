"""OpenAI's Batch API (`/files` + `/batches`), as OpenAI, Azure OpenAI and Groq offer it.

    upload    POST files (multipart: purpose=batch, file=<marker>.jsonl)    -> {"id": "file-..."}
    create    POST batches {input_file_id, endpoint, completion_window, metadata: {evalpipe_chunk}}
    poll      GET batches/{id}: status validating|in_progress|finalizing|cancelling (running),
              completed, failed (errors.data[]: {code, message, line}), expired, cancelled
    results   GET files/{output_file_id}/content and files/{error_file_id}/content: JSONL lines
              {custom_id, response: {status_code, body}, error: {code, message} | null}
    cancel    POST batches/{id}/cancel
    find      GET files?purpose=batch (by file name), GET batches (by metadata.evalpipe_chunk)

A line's `body` is the live request's body and a 200 line's `response.body` a live answer, read by
the provider's own parser.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import aiohttp

from evalpipe import errors
from evalpipe.backends.base import HttpRequest
from evalpipe.backends.batch.base import (
    BatchAdapter,
    BatchState,
    ItemResult,
    Rejection,
    RemoteBatch,
    jsonl,
    jsonl_lines,
)

_STATES: dict[str, BatchState] = {
    "completed": "ended", "failed": "failed", "expired": "expired", "cancelled": "cancelled",
}
_ITEM_ERRORS: dict[str, type[errors.ProviderError]] = {
    "batch_expired": errors.BatchExpiredError, "batch_cancelled": errors.BatchCancelledError,
}
MARKER_KEY = "evalpipe_chunk"
_LIST_PAGES = 20  # pages of 100 looked through when recognising an earlier upload or batch


class OpenAIBatches(BatchAdapter):
    """OpenAI's Batch API: 50,000 requests and 200 MB per input file, a 24-hour window, half price."""

    uploads = True
    endpoint: ClassVar[str] = "/v1/chat/completions"  # the `url` of every line and the batch's endpoint

    def route(self, operation: str) -> HttpRequest:
        """The request for `operation` (files, batches/{id}, ...) under the provider's base URL."""
        return HttpRequest(operation)

    def entry(self, custom_id: str, request: HttpRequest) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": request.body}

    async def upload(self, marker: str, entries: Sequence[Mapping[str, Any]]) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", jsonl(entries), filename=f"{marker}.jsonl", content_type="application/jsonl")
        route = self.route("files")
        content = await self.provider.send_bytes(HttpRequest(route.path, None, route.query), data=form)
        answer = _object(content, self.name)
        file_id = answer.get("id")
        if not isinstance(file_id, str):
            raise errors.ProtocolError("file upload answer has no id", provider=self.name)
        return file_id

    async def find_upload(self, marker: str) -> str | None:
        async for item in self._pages("files", {"purpose": "batch"}):
            if item.get("filename") == f"{marker}.jsonl" and isinstance(item.get("id"), str):
                return str(item["id"])
        return None

    async def create(self, marker: str, file_id: str | None, entries: Sequence[Mapping[str, Any]]) -> RemoteBatch:
        route = self.route("batches")
        body = {"input_file_id": file_id, "endpoint": self.endpoint, "completion_window": "24h",
                "metadata": {MARKER_KEY: marker}}
        return self.remote(await self.send(HttpRequest(route.path, body, route.query)))

    async def find_batch(self, marker: str, file_id: str | None, created_after: float,
                         total: int) -> RemoteBatch | None:
        async for item in self._pages("batches", {}):
            metadata = item.get("metadata")
            if (isinstance(metadata, dict) and metadata.get(MARKER_KEY) == marker) or \
                    (file_id is not None and item.get("input_file_id") == file_id):
                return self.remote(item)
            created = item.get("created_at")
            if isinstance(created, int | float) and created < created_after - 3600:
                break  # newest first: older batches cannot be this chunk's
        return None

    async def poll(self, batch_id: str) -> RemoteBatch:
        route = self.route(f"batches/{batch_id}")
        return self.remote(await self.send(HttpRequest(route.path, None, route.query, method="GET")))

    async def cancel(self, batch_id: str) -> None:
        route = self.route(f"batches/{batch_id}/cancel")
        await self.send(HttpRequest(route.path, None, route.query))

    async def results(self, batch: RemoteBatch) -> list[ItemResult]:
        found: list[ItemResult] = []
        for file_id in batch.result_refs:
            route = self.route(f"files/{file_id}/content")
            content = await self.provider.send_bytes(HttpRequest(route.path, None, route.query, method="GET"))
            found.extend(self.item(line) for line in jsonl_lines(content, self.name))
        return found

    def item(self, line: Mapping[str, Any]) -> ItemResult:
        """One line of an output or error file."""
        custom_id = str(line.get("custom_id"))
        response, error = line.get("response"), line.get("error")
        if isinstance(response, dict) and response.get("status_code") == 200:
            return self.parse_answer(custom_id, response.get("body"))
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            return self.failed(custom_id, response["status_code"], response.get("body"))
        code = str(error.get("code")) if isinstance(error, dict) else "unknown"
        message = str(error.get("message")) if isinstance(error, dict) else "no answer and no error"
        kind = _ITEM_ERRORS.get(code, errors.ServerError)
        return ItemResult(custom_id, error=kind(f"{code}: {errors.redact(message)}", provider=self.name))

    def remote(self, answer: Any) -> RemoteBatch:
        """A batch object as a `RemoteBatch`."""
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise errors.ProtocolError("batch answer has no id", provider=self.name)
        status = str(answer.get("status"))
        counts = answer.get("request_counts")
        counts = counts if isinstance(counts, dict) else {}
        refs = tuple(answer[key] for key in ("output_file_id", "error_file_id") if isinstance(answer.get(key), str))
        problems = (answer.get("errors") or {}).get("data") if isinstance(answer.get("errors"), dict) else None
        rejections = tuple(
            Rejection(p["line"] - 1 if isinstance(p.get("line"), int) else None, str(p.get("code")),
                      errors.redact(str(p.get("message"))))
            for p in problems or () if isinstance(p, dict))
        return RemoteBatch(answer["id"], _STATES.get(status, "running"), status,
                           {k: int(v) for k, v in counts.items() if isinstance(v, int)}, refs, rejections)

    async def _pages(self, operation: str, query: Mapping[str, str]) -> Any:
        """The items of a paged list, newest first."""
        after: str | None = None
        for _ in range(_LIST_PAGES):
            route = self.route(operation)
            page_query = {**(route.query or {}), **query, "limit": "100", **({"after": after} if after else {})}
            answer = await self.send(HttpRequest(route.path, None, page_query, method="GET"))
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list) or not items:
                return
            for item in items:
                if isinstance(item, dict):
                    yield item
            last = items[-1].get("id") if isinstance(items[-1], dict) else None
            if not answer.get("has_more") or not isinstance(last, str):
                return
            after = last


class AzureOpenAIBatches(OpenAIBatches):
    """Azure OpenAI's global batch: the same API under `/openai` with `api-version` (or the v1 route); a
    line's `url` is `/chat/completions` and its `model` the deployment."""

    endpoint = "/chat/completions"

    def route(self, operation: str) -> HttpRequest:
        version = str(self.provider.config.options.get("api_version", "2024-10-21"))
        if version == "v1":
            return HttpRequest(f"openai/v1/{operation}")
        return HttpRequest(f"openai/{operation}", query={"api-version": version})

    def entry(self, custom_id: str, request: HttpRequest) -> dict[str, Any]:
        deployment = self.provider.config.options.get("deployment") or self.provider.config.model
        return {**super().entry(custom_id, request), "body": {**(request.body or {}), "model": deployment}}


class GroqBatches(OpenAIBatches):
    """Groq's batch API: OpenAI's, at `{base}/files` and `{base}/batches` (50,000 lines, 200 MB)."""


def _object(content: bytes, provider: str) -> dict[str, Any]:
    try:
        answer = json.loads(content)
    except ValueError:
        raise errors.ProtocolError("answer is not JSON", provider=provider) from None
    if not isinstance(answer, dict):
        raise errors.ProtocolError("answer is not a JSON object", provider=provider)
    return answer
