"""Gemini batch mode as the fake speaks it, under `/gemini` (what the google-genai SDK calls).

- `POST /v1beta/models/{model}:batchGenerateContent` with `{batch: {displayName, inputConfig}}`:
  inline requests (`inputConfig.requests.requests: [{request, metadata}]`) or a JSONL file
  uploaded through the Files API (`inputConfig.fileName: "files/{id}"`, lines `{key, request}`).
  Answers an Operation named `batches/{id}`.
- `GET /v1beta/batches/{id}`, `POST /v1beta/batches/{id}:cancel` (answers `{}`),
  `DELETE /v1beta/batches/{id}` (`{}`), `GET /v1beta/batches?pageSize=&pageToken=` (`operations`,
  most recent first, `nextPageToken`).
- The Operation: `{name, metadata: {@type, name, model, displayName, createTime, updateTime,
  endTime, state, batchStats, output}, done, response, error}`. `metadata.state` is
  BATCH_STATE_PENDING -> RUNNING -> SUCCEEDED, or FAILED (a file line that is not a JSON object
  with a `request`: `error` {code 3, message naming the line}), CANCELLED, EXPIRED; the SDK reads
  these as JOB_STATE_*. `batchStats` counts are strings, as in the API.
- Output once SUCCEEDED: inline jobs `output.inlinedResponses.inlinedResponses[]` in request order,
  each `{response: GenerateContentResponse, metadata}` or `{error: {code, message, status}, metadata}`
  (a google.rpc.Status: gRPC code); file jobs `output.responsesFile: "files/{id}"`, lines
  `{key, response}` or `{key, error}`. Cancelled and expired jobs have no output.
- Request ids in the counters: `metadata.key` (inline) or `key` (file) when given, else the
  request's position ("0", "1", ...).
- Files: `POST /upload/v1beta/files` starts a resumable upload (`x-goog-upload-url`), a POST to that
  URL with `X-Goog-Upload-Command: upload, finalize` stores it; `GET /v1beta/files/{id}`;
  `GET /v1beta/files/{id}:download?alt=media` (also under `/download`) gives a file's bytes.
"""

from __future__ import annotations

import json
from typing import Any

from evalpipe.testing._batch_anthropic import rfc3339
from evalpipe.testing._batch_lines import BatchApi, BatchCall, Handler, synthetic_request
from evalpipe.testing._batch_store import (
    CANCELLED,
    COMPLETED,
    ERRORED,
    EXPIRED,
    FAILED,
    PENDING,
    SUCCEEDED,
    VALIDATING,
    BatchItem,
    BatchJob,
    StoredFile,
)
from evalpipe.testing._wire import ErrorKind, HttpRequest, Reply, json_reply

_API = "/v1beta"
_VERSIONS = ("/v1beta", "/v1alpha", "/v1")
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."
_STATES = {VALIDATING: "BATCH_STATE_PENDING", COMPLETED: "BATCH_STATE_SUCCEEDED", FAILED: "BATCH_STATE_FAILED",
           CANCELLED: "BATCH_STATE_CANCELLED", EXPIRED: "BATCH_STATE_EXPIRED"}
_GRPC_CODES = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
               "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16}
_CREDENTIALS = ("x-goog-api-key",)


class GeminiBatches(BatchApi):
    """Batch mode and the Files API of the Gemini protocol."""

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        path = path.rstrip("/")
        for area in ("/download", "/upload", ""):
            for version in _VERSIONS:  # served alike, as the live routes are
                if path.startswith(area + version + "/"):
                    path = (area if area == "/upload" else "") + _API + path[len(area + version):]
                    break
            else:
                continue
            break
        if method == "POST" and path == "/upload" + _API + "/files":
            return self.upload, {}
        if path.startswith(_API + "/models/") and path.endswith(":batchGenerateContent") and method == "POST":
            return self.create, {"model": path[len(_API + "/models/"):-len(":batchGenerateContent")]}
        if path == _API + "/batches" and method == "GET":
            return self.list_batches, {}
        if path.startswith(_API + "/batches/"):
            name, _, verb = path[len(_API + "/batches/"):].partition(":")
            table = {("GET", ""): self.retrieve, ("DELETE", ""): self.delete, ("POST", "cancel"): self.cancel}
            handler = table.get((method, verb))
            return (handler, {"id": name}) if handler is not None and name and "/" not in name else None
        if path.startswith(_API + "/files/") and method == "GET":
            name, _, verb = path[len(_API + "/files/"):].partition(":")
            handler = {"": self.get_file, "download": self.download}.get(verb)
            return (handler, {"id": name}) if handler is not None and name else None
        return None

    def keyless(self, request: HttpRequest) -> bool:
        # The data of a resumable upload goes to the session's URL without the key.
        return request.method == "POST" and "/upload/" in request.path and "upload_id" in request.query

    def _error(self, kind: ErrorKind, message: str) -> Reply:
        return self.protocol.error(kind, message, "", None)

    # -- files ----------------------------------------------------------------------------------
    def _file_json(self, stored: StoredFile, call: BatchCall) -> dict[str, Any]:
        name = stored.id
        return {"name": name, "displayName": stored.filename, "mimeType": stored.mime_type,
                "sizeBytes": str(len(stored.data)), "createTime": rfc3339(stored.created_at),
                "updateTime": rfc3339(stored.created_at), "expirationTime": rfc3339(stored.created_at + 48 * 3600),
                "uri": f"{call.origin}{self.protocol.prefix}{_API}/{name}", "state": "ACTIVE",
                "source": "GENERATED" if stored.purpose == "batch_output" else "UPLOADED",
                **({"downloadUri": f"{call.origin}{self.protocol.prefix}{_API}/{name}:download?alt=media"}
                   if stored.purpose == "batch_output" else {})}

    def upload(self, call: BatchCall) -> Reply:
        """The start of a resumable upload, or (with `upload_id`) its data and finalisation."""
        upload_id = call.request.query.get("upload_id")
        if upload_id is None:
            try:
                meta = call.request.json().get("file") or {}
            except ValueError as exc:
                return self._error(ErrorKind.BAD_REQUEST, str(exc))
            stored = call.store.add_file(call.account, self.protocol.vendor, str(meta.get("displayName") or ""),
                                         "pending", b"", prefix="files/",
                                         mime_type=str(meta.get("mimeType") or "application/jsonl"))
            url = f"{call.origin}{self.protocol.prefix}/upload{_API}/files?upload_id={stored.id[len('files/'):]}" \
                  "&upload_protocol=resumable"
            return json_reply(200, {}, [("x-goog-upload-url", url), ("x-goog-upload-status", "active")])
        # The session's id stands for the key that opened it, as on the vendor's upload URLs.
        with call.store.lock:
            found = call.store.files.get("files/" + upload_id)
            if found is None or found.vendor != self.protocol.vendor or found.purpose != "pending":
                return self._error(ErrorKind.NOT_FOUND, f"No upload session {upload_id}.")
            found.data += call.request.body
            if "finalize" not in call.request.headers.get("x-goog-upload-command", ""):
                return json_reply(200, {}, [("x-goog-upload-status", "active")])
            found.purpose = "batch"
        call.store.count(found.account, "files_uploaded")
        return json_reply(200, {"file": self._file_json(found, call)}, [("x-goog-upload-status", "final")])

    def _file(self, call: BatchCall) -> StoredFile | Reply:
        stored = call.store.file(call.account, self.protocol.vendor, "files/" + call.params["id"])
        if stored is None or stored.purpose == "pending":
            return self._error(ErrorKind.NOT_FOUND, f"File files/{call.params['id']} not found.")
        return stored

    def get_file(self, call: BatchCall) -> Reply:
        stored = self._file(call)
        return stored if isinstance(stored, Reply) else json_reply(200, self._file_json(stored, call))

    def download(self, call: BatchCall) -> Reply:
        stored = self._file(call)
        if isinstance(stored, Reply):
            return stored
        if stored.purpose == "batch_output":
            call.store.count(call.account, "result_downloads")
        return Reply(200, stored.data, stored.mime_type)

    # -- batches --------------------------------------------------------------------------------
    def create(self, call: BatchCall) -> Reply:
        try:
            body = call.request.json()
        except ValueError as exc:
            return self._error(ErrorKind.BAD_REQUEST, str(exc))
        batch: dict[str, Any] = body["batch"] if isinstance(body.get("batch"), dict) else body
        config: dict[str, Any] = batch["inputConfig"] if isinstance(batch.get("inputConfig"), dict) else {}
        model = call.params["model"]
        headers = {name: call.request.headers[name] for name in _CREDENTIALS if name in call.request.headers}
        query = {"key": call.request.query["key"]} if "key" in call.request.query else {}
        path = f"{_API}/models/{model}:generateContent"
        file_name = config.get("fileName")
        entries: list[tuple[str | None, Any, Any]] = []  # (key, request, metadata)
        errors: list[dict[str, Any]] = []
        if isinstance(file_name, str):
            stored = call.store.file(call.account, self.protocol.vendor, file_name)
            if stored is None or stored.purpose == "pending":
                return self._error(ErrorKind.NOT_FOUND, f"File {file_name} not found.")
            entries, errors = _file_entries(stored.data)
        else:
            inline = config.get("requests")
            requests = inline.get("requests") if isinstance(inline, dict) else None
            if not isinstance(requests, list) or not requests:
                return self._error(ErrorKind.BAD_REQUEST, "* BatchGenerateContentRequest.batch.input_config: "
                                   "either requests or file_name must be set")
            for entry in requests:
                entry = entry if isinstance(entry, dict) else {}
                metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else None
                entries.append(((metadata or {}).get("key"), entry.get("request"), metadata))
        items = []
        for index, (key, request, metadata) in enumerate(entries):
            request = {k: v for k, v in request.items() if k != "model"} if isinstance(request, dict) else {}
            item = BatchItem(str(key) if key is not None else str(index),
                             synthetic_request(self.protocol, path, request, headers, query))
            item.extras["metadata"] = metadata
            items.append(item)
        job = call.store.add_job(call.account, self.protocol.vendor, [] if errors else items, "", errors=errors,
                                 model=f"models/{model}", display_name=batch.get("displayName") or "",
                                 file_input=isinstance(file_name, str))
        call.store.count(call.account, "batches_created")
        return json_reply(200, self._operation(job, call))

    def _missing_batch(self, batch_id: str) -> Reply:
        return self._error(ErrorKind.NOT_FOUND, f"Batch batches/{batch_id} not found.")

    def retrieve(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        if job.ended == COMPLETED and not job.extras["file_input"]:
            call.store.count(call.account, "result_downloads")  # the inline answers travel with the job
        return json_reply(200, self._operation(job, call))

    def cancel(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        if job.ended is not None:
            return self.protocol.error(ErrorKind.BAD_REQUEST, f"Batch batches/{job.id} has already ended.", "", None)
        with call.store.lock:
            job.cancel(call.now, call.answer)
        return json_reply(200, {})

    def delete(self, call: BatchCall) -> Reply:
        job = self._job(call)
        if isinstance(job, Reply):
            return job
        with call.store.lock:
            call.store.jobs.pop(job.id, None)
        return json_reply(200, {})

    def list_batches(self, call: BatchCall) -> Reply:
        query = call.request.query
        try:
            size = int(query.get("pageSize", "50"))
            start = int(query.get("pageToken") or 0)
        except ValueError:
            return self._error(ErrorKind.BAD_REQUEST, "Invalid pageSize or pageToken.")
        jobs = call.store.jobs_of(call.account, self.protocol.vendor)
        page = jobs[start:start + max(size, 1)]
        with call.store.lock:
            for job in page:
                job.advance(call.now, call.answer)
        body: dict[str, Any] = {"operations": [self._operation(job, call) for job in page]}
        if start + len(page) < len(jobs):
            body["nextPageToken"] = str(start + len(page))
        return json_reply(200, body)

    def _operation(self, job: BatchJob, call: BatchCall) -> dict[str, Any]:
        with call.store.lock:
            state = _STATES.get(job.phase(call.now), "BATCH_STATE_RUNNING")
            counts = job.counts()
            name = f"batches/{job.id}"
            metadata: dict[str, Any] = {
                "@type": _TYPE + "GenerateContentBatch",
                "name": name,
                "model": job.extras["model"],
                "displayName": job.extras["display_name"],
                "createTime": rfc3339(job.created_at),
                "updateTime": rfc3339(job.changed_at),
                "batchStats": {"requestCount": str(len(job.items)), "pendingRequestCount": str(counts[PENDING]),
                               "successfulRequestCount": str(counts[SUCCEEDED]),
                               "failedRequestCount": str(counts[ERRORED])},
                "state": state,
            }
            operation: dict[str, Any] = {"name": name, "metadata": metadata, "done": job.ended is not None}
            if job.ended_at is not None:
                metadata["endTime"] = rfc3339(job.ended_at)
            if job.ended == FAILED:
                operation["error"] = {"code": 3, "message": "; ".join(e["message"] for e in job.errors)}
            elif job.ended == COMPLETED:
                output = self._output(job, call)
                metadata["output"] = output
                operation["response"] = {"@type": _TYPE + "GenerateContentBatchOutput", **output}
            return operation

    def _output(self, job: BatchJob, call: BatchCall) -> dict[str, Any]:
        """The results of a succeeded job: inline, or in a file written once."""
        results = []
        for item in job.items:
            answer = item.answer
            result: dict[str, Any] = {}
            if answer is not None and item.outcome == SUCCEEDED:
                result["response"] = answer.body
            elif answer is not None:
                result["error"] = _status(answer.status, answer.body)
            if job.extras["file_input"]:
                results.append({"key": item.custom_id, **result})
            else:
                results.append({**result, **({"metadata": item.extras["metadata"]}
                                             if item.extras.get("metadata") else {})})
        if not job.extras["file_input"]:
            return {"inlinedResponses": {"inlinedResponses": results}}
        if "responses_file" not in job.extras:
            data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in results).encode()
            stored = call.store.add_file(job.account, job.vendor, f"batch-{job.id}-responses", "batch_output", data,
                                         prefix="files/batch")
            job.extras["responses_file"] = stored.id
        return {"responsesFile": job.extras["responses_file"]}


def _file_entries(data: bytes) -> tuple[list[tuple[str | None, Any, Any]], list[dict[str, Any]]]:
    """The (key, request, metadata) of each line of an input file, or the lines that are invalid."""
    entries: list[tuple[str | None, Any, Any]] = []
    errors: list[dict[str, Any]] = []
    for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict) or not isinstance(line.get("request"), dict):
            errors.append({"line": number, "message": f"Line {number} of the input file is not a JSON object with "
                                                      "a `request`."})
            continue
        key = line.get("key")
        entries.append((str(key) if key is not None else None, line["request"], None))
    if not entries and not errors:
        errors.append({"line": None, "message": "The input file has no requests."})
    return entries, errors


def _status(http_status: int, body: Any) -> dict[str, Any]:
    """A live error body (`{error: {code, message, status}}`) as the google.rpc.Status of a batch line."""
    error: dict[str, Any] = body["error"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    status = str(error.get("status") or "INTERNAL")
    found: dict[str, Any] = {"code": _GRPC_CODES.get(status, 2), "message": str(error.get("message") or http_status),
                             "status": status}
    if error.get("details"):
        found["details"] = error["details"]
    return found

