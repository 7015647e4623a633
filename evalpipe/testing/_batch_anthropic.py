"""Anthropic Message Batches as the fake speaks them, under `/anthropic/v1/messages/batches`.

- `POST` (`requests: [{custom_id, params}]`; a custom_id is 1-64 of `[A-Za-z0-9_-]` and unique in
  the batch, else the create call itself fails 400), `GET` (list, most recent first; `limit`,
  `after_id`, `before_id`), `GET /{id}`, `POST /{id}/cancel`, `DELETE /{id}` (ended batches only),
  `GET /{id}/results` (ended batches only).
- `processing_status`: in_progress -> ended, or canceling -> ended. `request_counts` {processing,
  succeeded, errored, canceled, expired}: every request is `processing` until the batch ends, as
  the vendor reports them. `results_url` (absolute, on the address the client used) once ended.
- Results are JSONL, one line per request in request order: `{custom_id, result: {type:
  "succeeded", message}}`, `{type: "errored", error: {type: "error", error: {type, message},
  request_id}}` (invalid params, fault markers, the fail fraction), `{type: "canceled"}`,
  `{type: "expired"}`.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from evalpipe.testing._batch_lines import BatchApi, BatchCall, Handler, synthetic_request
from evalpipe.testing._batch_store import CANCELLED, CANCELLING, ERRORED, EXPIRED, SUCCEEDED, BatchItem, BatchJob
from evalpipe.testing._wire import ErrorKind, Reply, json_reply

_ROOT = "/v1/messages/batches"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DAY_S = 24 * 3600
_HEADERS = ("x-api-key", "authorization", "anthropic-version", "anthropic-beta")
_RESULT_TYPES = {SUCCEEDED: "succeeded", ERRORED: "errored", CANCELLED: "canceled", EXPIRED: "expired"}


def rfc3339(seconds: float | None) -> str | None:
    """A wall-clock time as the vendor writes it: `2024-08-20T18:37:24.100435Z`."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class AnthropicBatches(BatchApi):
    """The Message Batches endpoints."""

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        if not (path.rstrip("/") == _ROOT or path.startswith(_ROOT + "/")):
            return None
        parts = [part for part in path[len(_ROOT):].split("/") if part]
        table: dict[tuple[str, int, str], Handler] = {
            ("POST", 0, ""): self.create, ("GET", 0, ""): self.list_batches, ("GET", 1, ""): self.retrieve,
            ("DELETE", 1, ""): self.delete, ("POST", 2, "cancel"): self.cancel, ("GET", 2, "results"): self.results,
        }
        handler = table.get((method, len(parts), parts[1] if len(parts) == 2 else ""))
        return (handler, {"id": parts[0]} if parts else {}) if handler is not None else None

    def _error(self, kind: ErrorKind, message: str, status: int | None = None) -> Reply:
        reply = self.protocol.error(kind, message, "", None)
        reply.status = status or reply.status
        return reply

    def create(self, call: BatchCall) -> Reply:
        try:
            body = call.request.json()
        except ValueError as exc:
            return self._error(ErrorKind.BAD_REQUEST, str(exc))
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return self._error(ErrorKind.BAD_REQUEST, "requests: List should have at least 1 item")
        headers = {name: call.request.headers[name] for name in _HEADERS if name in call.request.headers}
        items: list[BatchItem] = []
        seen: set[str] = set()
        for index, entry in enumerate(requests):
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            params = entry.get("params") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                return self._error(ErrorKind.BAD_REQUEST, f"requests.{index}.custom_id: String should match "
                                   "pattern '^[a-zA-Z0-9_-]{1,64}$'")
            if custom_id in seen:
                return self._error(ErrorKind.BAD_REQUEST, f"requests.{index}.custom_id: Duplicate custom_id "
                                   f"'{custom_id}': each request in a Message Batch needs a unique custom_id.")
            if not isinstance(params, dict):
                return self._error(ErrorKind.BAD_REQUEST, f"requests.{index}.params: Field required")
            seen.add(custom_id)
            items.append(BatchItem(custom_id, synthetic_request(self.protocol, "/v1/messages", params, headers)))
        job = call.store.add_job(call.account, self.protocol.vendor, items, "msgbatch_")
        call.store.count(call.account, "batches_created")
        return json_reply(200, self._batch_json(job, call))

    def _missing_batch(self, batch_id: str) -> Reply:
        return self._error(ErrorKind.NOT_FOUND, f"Message Batch {batch_id} not found.")

    def retrieve(self, call: BatchCall) -> Reply:
        job = self._job(call)
        return job if isinstance(job, Reply) else json_reply(200, self._batch_json(job, call))

    def cancel(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        if job.ended is not None:
            return self._error(ErrorKind.BAD_REQUEST, f"Message Batch {job.id} has already ended and cannot be "
                               "canceled.")
        with call.store.lock:
            job.extras.setdefault("cancel_initiated_at", rfc3339(time.time()))
            job.cancel(call.now, call.answer)
        return json_reply(200, self._batch_json(job, call))

    def delete(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        if job.ended is None:
            return self._error(ErrorKind.BAD_REQUEST, f"Message Batch {job.id} is still processing: cancel it "
                               "and wait until it has ended before deleting it.")
        with call.store.lock:
            call.store.jobs.pop(job.id, None)
        return json_reply(200, {"id": job.id, "type": "message_batch_deleted"})

    def results(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        if job.ended is None:
            return self._error(ErrorKind.NOT_FOUND, f"Message Batch {job.id} has not ended: its results are not "
                               "available yet.")
        lines = []
        with call.store.lock:
            for item in job.items:
                result: dict[str, Any] = {"type": _RESULT_TYPES[item.outcome]}
                if item.answer is not None:
                    result["message" if item.outcome == SUCCEEDED else "error"] = item.answer.body
                lines.append(json.dumps({"custom_id": item.custom_id, "result": result}, separators=(",", ":")))
        call.store.count(call.account, "result_downloads")
        return Reply(200, "".join(text + "\n" for text in lines).encode(), "application/binary")

    def list_batches(self, call: BatchCall) -> Reply:
        query = call.request.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            return self._error(ErrorKind.BAD_REQUEST, "limit: Input should be a valid integer")
        if not 1 <= limit <= 1000:
            return self._error(ErrorKind.BAD_REQUEST, "limit: Input should be between 1 and 1000")
        jobs = call.store.jobs_of(call.account, self.protocol.vendor)
        ids = [job.id for job in jobs]
        after, before = query.get("after_id"), query.get("before_id")
        if after:
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
            page, has_more = jobs[:limit], len(jobs) > limit
        elif before:
            jobs = jobs[:ids.index(before)] if before in ids else []
            page, has_more = jobs[-limit:], len(jobs) > limit
        else:
            page, has_more = jobs[:limit], len(jobs) > limit
        with call.store.lock:
            for job in page:
                job.advance(call.now, call.answer)
        data = [self._batch_json(job, call) for job in page]
        return json_reply(200, {"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
                                "last_id": data[-1]["id"] if data else None})

    def _batch_json(self, job: BatchJob, call: BatchCall) -> dict[str, Any]:
        with call.store.lock:
            state = job.phase(call.now)
            counts = job.counts()
            ended = job.ended is not None
            status = "ended" if ended else "canceling" if state == CANCELLING else "in_progress"
            return {
                "id": job.id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": {
                    "processing": 0 if ended else len(job.items),
                    "succeeded": counts[SUCCEEDED] if ended else 0,
                    "errored": counts[ERRORED] if ended else 0,
                    "canceled": counts[CANCELLED] if ended else 0,
                    "expired": counts[EXPIRED] if ended else 0,
                },
                "ended_at": rfc3339(job.ended_at),
                "created_at": rfc3339(job.created_at),
                "expires_at": rfc3339(job.created_at + _DAY_S),
                "archived_at": None,
                "cancel_initiated_at": job.extras.get("cancel_initiated_at"),
                "results_url": f"{call.origin}{self.protocol.prefix}{_ROOT}/{job.id}/results" if ended else None,
            }
