"""Gemini batch mode (`models/{model}:batchGenerateContent`), with inline requests.

    create    POST models/{model}:batchGenerateContent {batch: {displayName: <marker>, inputConfig:
              {requests: {requests: [{request: <the live generateContent body>, metadata: {key}}]}}}}
              -> an Operation named batches/{id}
    poll      GET batches/{id}: metadata.state BATCH_STATE_PENDING | RUNNING (running), SUCCEEDED,
              FAILED (operation.error), CANCELLED, EXPIRED; metadata.batchStats (counts as strings)
    results   the SUCCEEDED operation's response.inlinedResponses.inlinedResponses[]: {response |
              error (a google.rpc.Status), metadata: {key}}
    cancel    POST batches/{id}:cancel
    find      GET batches (newest first): by metadata.displayName

Inline requests are capped at 20 MB a batch (larger input would go through the Files API, not mapped
here: the runner splits into more batches instead). Half price.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalpipe import errors
from evalpipe.backends.base import HttpRequest
from evalpipe.backends.batch.base import BatchAdapter, BatchState, ItemResult, Rejection, RemoteBatch

_STATES: dict[str, BatchState] = {
    "BATCH_STATE_SUCCEEDED": "ended", "BATCH_STATE_FAILED": "failed", "BATCH_STATE_CANCELLED": "cancelled",
    "BATCH_STATE_EXPIRED": "expired",
    # The google-genai SDK's names for the same states.
    "JOB_STATE_SUCCEEDED": "ended", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
# A failed request's google.rpc.Status as the HTTP status its live call would have had.
_HTTP = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
         "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500,
         "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
_LIST_PAGES = 20


class GeminiBatches(BatchAdapter):
    """Gemini's batch mode with inline requests."""

    max_bytes = 20_000_000
    max_requests = 50_000

    def _prefix(self) -> str:
        """The API version segment the provider's base URL leaves out ("v1beta/"), or ""."""
        path = self.provider._model_path(self.provider.config.model, "generateContent")  # type: ignore[attr-defined]
        return str(path).partition("models/")[0]

    def entry(self, custom_id: str, request: HttpRequest) -> dict[str, Any]:
        return {"request": request.body, "metadata": {"key": custom_id}}

    async def create(self, marker: str, file_id: str | None, entries: Sequence[Mapping[str, Any]]) -> RemoteBatch:
        path = self.provider._model_path(self.provider.config.model, "batchGenerateContent")  # type: ignore[attr-defined]
        body = {"batch": {"displayName": marker, "inputConfig": {"requests": {"requests": list(entries)}}}}
        return self.remote(await self.send(HttpRequest(str(path), body)))

    async def find_batch(self, marker: str, file_id: str | None, created_after: float,
                         total: int) -> RemoteBatch | None:
        token: str | None = None
        for _ in range(_LIST_PAGES):
            query = {"pageSize": "100", **({"pageToken": token} if token else {})}
            page = await self.send(HttpRequest(f"{self._prefix()}batches", None, query, method="GET"))
            operations = page.get("operations") if isinstance(page, dict) else None
            for operation in operations if isinstance(operations, list) else ():
                metadata = operation.get("metadata") if isinstance(operation, dict) else None
                if isinstance(metadata, dict) and metadata.get("displayName") == marker:
                    return self.remote(operation)
            token = page.get("nextPageToken") if isinstance(page, dict) else None
            if not isinstance(token, str) or not token:
                break
        return None

    async def poll(self, batch_id: str) -> RemoteBatch:
        return self.remote(await self._operation(batch_id))

    async def _operation(self, batch_id: str) -> Any:
        return await self.send(HttpRequest(f"{self._prefix()}{batch_id}", None, method="GET"))

    async def cancel(self, batch_id: str) -> None:
        await self.send(HttpRequest(f"{self._prefix()}{batch_id}:cancel", {}))

    async def results(self, batch: RemoteBatch) -> list[ItemResult]:
        operation = await self._operation(batch.id)
        output = operation.get("response") if isinstance(operation, dict) else None
        if not isinstance(output, dict):
            metadata = operation.get("metadata") if isinstance(operation, dict) else None
            output = metadata.get("output") if isinstance(metadata, dict) else None
        inlined = output.get("inlinedResponses") if isinstance(output, dict) else None
        lines = inlined.get("inlinedResponses") if isinstance(inlined, dict) else None
        return [self.item(line) for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []

    def item(self, line: Mapping[str, Any]) -> ItemResult:
        metadata = line.get("metadata")
        custom_id = str(metadata.get("key")) if isinstance(metadata, dict) else "?"
        if isinstance(line.get("response"), dict):
            return self.parse_answer(custom_id, line["response"])
        status = line.get("error") if isinstance(line.get("error"), dict) else {}
        assert isinstance(status, dict)
        http = _HTTP.get(str(status.get("status")), 500)
        return self.failed(custom_id, http, {"error": {**status, "code": http}})

    def remote(self, answer: Any) -> RemoteBatch:
        metadata = answer.get("metadata") if isinstance(answer, dict) else None
        if not isinstance(metadata, dict) or not isinstance(answer.get("name"), str):
            raise errors.ProtocolError("batch answer has no name", provider=self.name)
        state = str(metadata.get("state"))
        stats = metadata.get("batchStats") if isinstance(metadata.get("batchStats"), dict) else {}
        assert isinstance(stats, dict)
        counts = {name.removesuffix("RequestCount"): int(value) for name, value in stats.items()
                  if isinstance(value, str | int) and str(value).isdigit()}
        error = answer.get("error")
        rejections = (Rejection(None, str(error.get("code")), errors.redact(str(error.get("message")))),) \
            if isinstance(error, dict) else ()
        return RemoteBatch(answer["name"], _STATES.get(state, "running"), state, counts, (), rejections)
