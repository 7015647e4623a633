"""OpenAI Files and Batch APIs as the fake speaks them, under every OpenAI-style protocol whose
`batch_roots` name where they live (OpenAI `/v1`, Groq `/openai/v1`, Azure `/openai/v1` and
`/openai`).

- `POST {root}/files` (multipart: `file`, `purpose`), `GET {root}/files[/{id}[/content]]`,
  `DELETE {root}/files/{id}`. A `batch` file must be named `*.jsonl`; its lines are checked when a
  batch is created from it, as the vendor does.
- `POST {root}/batches` (`input_file_id`, `endpoint` `/v1/chat/completions`, `/v1/embeddings` or
  `/v1/completions`, `completion_window` `24h`, optional `metadata`), `GET {root}/batches/{id}`,
  `POST {root}/batches/{id}/cancel`, `GET {root}/batches?after=&limit=` (most recent first).
- Status: validating -> in_progress -> finalizing -> completed, or failed (the input file did not
  validate: `errors.data[]` items `{code, message, param, line}`, 1-based lines), expired,
  cancelling -> cancelled. `request_counts` {total, completed, failed} move while in progress.
- Once ended, `output_file_id` holds one line per request answered 200 and `error_file_id` one per
  request answered with an error (`{id, custom_id, response: {status_code, request_id, body},
  error: null}`) or expired (`response: null, error: {code: "batch_expired", message}`); requests
  a cancellation stopped get no line. Either id is null when its file would be empty.
"""

from __future__ import annotations

import json
import time
from email.parser import BytesParser
from email.policy import default as email_policy
from typing import Any

from evalpipe.testing._batch_lines import BatchApi, BatchCall, Handler, synthetic_request
from evalpipe.testing._batch_store import (
    CANCELLED,
    COMPLETED,
    ERRORED,
    EXPIRED,
    FAILED,
    SUCCEEDED,
    VALIDATING,
    BatchItem,
    BatchJob,
    StoredFile,
)
from evalpipe.testing._openai import OpenAIProtocol
from evalpipe.testing._wire import ErrorKind, HttpRequest, Reply, json_reply, new_id

ENDPOINTS = ("/chat/completions", "/embeddings", "/completions")
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_DAY_S = 24 * 3600
_CREDENTIALS = ("authorization", "api-key")
_EXPIRED_LINE = {"code": "batch_expired",
                 "message": "This request could not be executed before the completion window expired."}


def _bare(url: str) -> str:
    """An endpoint or line URL without its `/v1` (Azure's batch lines leave it out)."""
    return url[len("/v1"):] if url.startswith("/v1/") else url


class OpenAIBatches(BatchApi):
    """The Files and Batch endpoints of one OpenAI-style protocol."""

    protocol: OpenAIProtocol

    def __init__(self, protocol: OpenAIProtocol) -> None:
        super().__init__(protocol)

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        for root in self.protocol.batch_roots:
            if not path.startswith(root + "/"):
                continue
            parts = path[len(root) + 1:].rstrip("/").split("/")
            table: dict[tuple[str, int], Handler] = {}
            if parts[0] == "files":
                table = {("POST", 1): self.upload, ("GET", 1): self.list_files, ("GET", 2): self.get_file,
                         ("DELETE", 2): self.delete_file}
                if len(parts) == 3 and parts[2] == "content":
                    table[("GET", 3)] = self.file_content
            elif parts[0] == "batches":
                table = {("POST", 1): self.create, ("GET", 1): self.list_batches, ("GET", 2): self.retrieve}
                if len(parts) == 3 and parts[2] == "cancel":
                    table[("POST", 3)] = self.cancel
            handler = table.get((method, len(parts)))
            if handler is not None:
                return handler, {"id": parts[1]} if len(parts) > 1 else {}
        return None

    # -- errors ---------------------------------------------------------------------------------
    def _error(self, status: int, message: str, code: str | None = None, param: str | None = None) -> Reply:
        kind = ErrorKind.NOT_FOUND if status == 404 else ErrorKind.BAD_REQUEST
        body = self.protocol.error_body(kind, status, message, "invalid_request_error", code)
        if isinstance(body.get("error"), dict) and "param" in body["error"]:
            body["error"]["param"] = param
        return json_reply(status, body)

    # -- files ----------------------------------------------------------------------------------
    def _file_json(self, stored: StoredFile) -> dict[str, Any]:
        return {"id": stored.id, "object": "file", "bytes": len(stored.data), "created_at": stored.created_at,
                "filename": stored.filename, "purpose": stored.purpose, "status": "processed",
                "status_details": None, "expires_at": None}

    def upload(self, call: BatchCall) -> Reply:
        try:
            fields = _multipart(call.request)
        except ValueError as exc:
            return self._error(400, str(exc))
        if "file" not in fields:
            return self._error(400, "Missing required parameter: 'file'.", param="file")
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose not in PURPOSES:
            return self._error(400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose")
        filename, data = fields["file"]
        filename = filename or "upload"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return self._error(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
        stored = call.store.add_file(call.account, self.protocol.vendor, filename, purpose, data)
        call.store.count(call.account, "files_uploaded")
        return json_reply(200, self._file_json(stored))

    def _file(self, call: BatchCall) -> StoredFile | Reply:
        stored = call.store.file(call.account, self.protocol.vendor, call.params["id"])
        return stored if stored is not None else self._error(404, f"No such File object: {call.params['id']}",
                                                             param="id")

    def get_file(self, call: BatchCall) -> Reply:
        stored = self._file(call)
        return stored if isinstance(stored, Reply) else json_reply(200, self._file_json(stored))

    def list_files(self, call: BatchCall) -> Reply:
        purpose = call.request.query.get("purpose")
        with call.store.lock:
            files = [f for f in call.store.files.values() if (f.account, f.vendor) == (call.account,
                     self.protocol.vendor) and purpose in (None, f.purpose)]
        data = [self._file_json(f) for f in sorted(files, key=lambda f: f.created_at, reverse=True)]
        return json_reply(200, {"object": "list", "data": data, "has_more": False,
                                "first_id": data[0]["id"] if data else None,
                                "last_id": data[-1]["id"] if data else None})

    def delete_file(self, call: BatchCall) -> Reply:
        stored = self._file(call)
        if isinstance(stored, Reply):
            return stored
        with call.store.lock:
            call.store.files.pop(stored.id, None)
        return json_reply(200, {"id": stored.id, "object": "file", "deleted": True})

    def file_content(self, call: BatchCall) -> Reply:
        stored = self._file(call)
        if isinstance(stored, Reply):
            return stored
        if stored.purpose == "batch_output":
            call.store.count(call.account, "result_downloads")
        return Reply(200, stored.data, "application/octet-stream")

    # -- batches --------------------------------------------------------------------------------
    def create(self, call: BatchCall) -> Reply:
        try:
            body = call.request.json()
        except ValueError as exc:
            return self._error(400, str(exc))
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str) or not body[name]:
                return self._error(400, f"Missing required parameter: '{name}'.", param=name)
        window, endpoint, file_id = str(body["completion_window"]), str(body["endpoint"]), str(body["input_file_id"])
        if window != "24h":
            return self._error(400, f"Invalid value for 'completion_window': '{window}'. Supported values are: "
                                    "'24h'.", param="completion_window")
        if _bare(endpoint) not in ENDPOINTS:
            return self._error(400, f"Invalid value for 'endpoint': '{endpoint}'. Supported values are: "
                                    f"{', '.join(repr('/v1' + e) for e in ENDPOINTS)}.", param="endpoint")
        stored = call.store.file(call.account, self.protocol.vendor, file_id)
        if stored is None:
            return self._error(400, f"Invalid 'input_file_id': '{file_id}'. No such file.", param="input_file_id")
        if stored.purpose != "batch":
            return self._error(400, f"The input file '{file_id}' must be uploaded with purpose 'batch'.",
                               param="input_file_id")
        items, errors, model = self._read_lines(stored.data, endpoint, call.request)
        job = call.store.add_job(call.account, self.protocol.vendor, items, "batch_", errors=errors,
                                 endpoint=endpoint, input_file_id=file_id, model=model,
                                 metadata=body.get("metadata"))
        call.store.count(call.account, "batches_created")
        return json_reply(200, self._batch_json(job, call))

    def _read_lines(self, data: bytes, endpoint: str, request: HttpRequest
                    ) -> tuple[list[BatchItem], list[dict[str, Any]], str | None]:
        """The requests of an input file, or the validation errors that fail the batch."""
        headers = {name: request.headers[name] for name in _CREDENTIALS if name in request.headers}
        items: list[BatchItem] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        model: str | None = None

        def error(line: int, code: str, message: str, param: str | None = None) -> None:
            errors.append({"code": code, "line": line, "message": message, "param": param})

        lines = data.decode("utf-8", "replace").splitlines()
        if not any(text.strip() for text in lines):
            errors.append({"code": "empty_file", "line": None, "message": "The batch input file is empty.",
                           "param": None})
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                line = None
            if not isinstance(line, dict):
                error(number, "invalid_json_line", "This line is not parseable as valid JSON.")
                continue
            missing = [name for name in ("custom_id", "method", "url", "body") if name not in line]
            if missing:
                error(number, "missing_required_parameter", f"Missing required parameter: '{missing[0]}'.",
                      missing[0])
                continue
            custom_id, body = line["custom_id"], line["body"]
            if not isinstance(custom_id, str) or not custom_id:
                error(number, "invalid_custom_id", "The custom_id must be a non-empty string.", "custom_id")
            elif custom_id in seen:
                error(number, "duplicate_custom_id", "The custom_id for this request is a duplicate of another "
                      "request. The custom_id parameter must be unique for each request in a batch.", "custom_id")
            elif line["method"] != "POST":
                error(number, "invalid_method", "The method for this request must be POST.", "method")
            elif not isinstance(line["url"], str) or _bare(line["url"]) != _bare(endpoint):
                error(number, "invalid_url", "The URL provided for this request does not match the batch "
                      f"endpoint {endpoint}.", "url")
            elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
                error(number, "missing_required_parameter", "Missing required parameter: 'body.model'.",
                      "body.model")
            elif model is not None and body["model"] != model:
                error(number, "mismatched_model", f"The provided model '{body['model']}' does not match the model "
                      f"'{model}' of the other requests: a batch uses one model.", "body.model")
            else:
                model = model or body["model"]
                seen.add(custom_id)
                path = self.protocol.batch_roots[0] + _bare(endpoint)
                items.append(BatchItem(custom_id, synthetic_request(self.protocol, path, body, headers)))
        return ([] if errors else items), errors, model

    def _missing_batch(self, batch_id: str) -> Reply:
        return self._error(404, f"No batch found with id '{batch_id}'.", param="batch_id")

    def retrieve(self, call: BatchCall) -> Reply:
        job = self._job(call)
        return job if isinstance(job, Reply) else json_reply(200, self._batch_json(job, call))

    def cancel(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        if job.ended is not None:
            return self._error(409, f"Cannot cancel a batch with status '{job.ended}'.")
        with call.store.lock:
            job.extras.setdefault("cancelling_at", int(time.time()))
            job.cancel(call.now, call.answer)
        return json_reply(200, self._batch_json(job, call))

    def list_batches(self, call: BatchCall) -> Reply:
        query = call.request.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            return self._error(400, "Invalid 'limit': expected an integer.", param="limit")
        if not 1 <= limit <= 100:
            return self._error(400, f"Invalid 'limit': {limit}. Expected a value from 1 to 100.", param="limit")
        jobs = call.store.jobs_of(call.account, self.protocol.vendor)
        after = query.get("after")
        if after:
            ids = [job.id for job in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:limit]
        with call.store.lock:
            for job in page:
                job.advance(call.now, call.answer)
        data = [self._batch_json(job, call) for job in page]
        return json_reply(200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                "last_id": data[-1]["id"] if data else None, "has_more": len(jobs) > limit})

    def _batch_json(self, job: BatchJob, call: BatchCall) -> dict[str, Any]:
        with call.store.lock:
            state = job.phase(call.now)
            self._write_results(job, call)
            counts = job.counts()
            elapsed, delay, created = call.now - job.started, job.options.delay_s, job.created_at
            reached = {name: job.ended != FAILED and elapsed >= share * delay
                       for name, share in (("in_progress", 0.1), ("finalizing", 0.9))}
            ended_at = int(job.ended_at) if job.ended_at is not None else None
            answered = [item.answer for item in job.items if item.outcome == SUCCEEDED and item.answer]
            input_tokens = sum(answer.input_tokens for answer in answered)
            output_tokens = sum(answer.output_tokens for answer in answered)
            return {
                "id": job.id,
                "object": "batch",
                "endpoint": job.extras["endpoint"],
                "model": job.extras["model"],
                "errors": {"object": "list", "data": job.errors} if job.errors else None,
                "input_file_id": job.extras["input_file_id"],
                "completion_window": "24h",
                "status": state,
                "output_file_id": job.extras.get("output_file_id"),
                "error_file_id": job.extras.get("error_file_id"),
                "created_at": int(created),
                "in_progress_at": int(created + 0.1 * delay) if reached["in_progress"] else None,
                "expires_at": int(created) + _DAY_S,
                "finalizing_at": int(created + 0.9 * delay) if reached["finalizing"] and job.ended in (
                    None, COMPLETED, EXPIRED) and job.cancel_at is None else None,
                "completed_at": ended_at if job.ended == COMPLETED else None,
                "failed_at": ended_at if job.ended == FAILED else None,
                "expired_at": ended_at if job.ended == EXPIRED else None,
                "cancelling_at": job.extras.get("cancelling_at"),
                "cancelled_at": ended_at if job.ended == CANCELLED else None,
                "request_counts": {
                    "total": 0 if state in (VALIDATING, FAILED) else len(job.items),
                    "completed": counts[SUCCEEDED],
                    "failed": counts[ERRORED] + (counts[EXPIRED] if job.ended == EXPIRED else 0),
                },
                "usage": {
                    "input_tokens": input_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": output_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": input_tokens + output_tokens,
                },
                "metadata": job.extras.get("metadata"),
            }

    def _write_results(self, job: BatchJob, call: BatchCall) -> None:
        """Once the job has ended, its output and error files (each only when it has lines)."""
        if job.ended is None or job.ended == FAILED or "results_written" in job.extras:
            return
        job.extras["results_written"] = True
        output: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for item in job.items:
            line: dict[str, Any] = {"id": new_id("batch_req_"), "custom_id": item.custom_id,
                                    "response": None, "error": None}
            if item.answer is not None:
                line["response"] = {"status_code": item.answer.status, "request_id": new_id("req_"),
                                    "body": item.answer.body}
                (output if item.outcome == SUCCEEDED else failures).append(line)
            elif item.outcome == EXPIRED:
                failures.append({**line, "error": dict(_EXPIRED_LINE)})
        for name, lines, suffix in (("output_file_id", output, "output"), ("error_file_id", failures, "error")):
            if lines:
                data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
                stored = call.store.add_file(job.account, job.vendor, f"{job.id}_{suffix}.jsonl", "batch_output",
                                             data)
                job.extras[name] = stored.id


def _multipart(request: HttpRequest) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("Expected a multipart/form-data body with a boundary.")
    message = BytesParser(policy=email_policy).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + request.body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields
