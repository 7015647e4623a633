"""One request of a batch job, answered by the same machinery as a live call.

A job's request is turned back into the live request it stands for (`HttpRequest` with the job's
credentials) and goes through the vendor protocol's parser, the deterministic answers, marker and
server-wide faults (`[[fault:NAME]]`, `[[fault:NAME:N]]` counted with live attempts of the identical
request) and the protocol's reply or error. Faults that misbehave on the wire (hang, reset,
truncated or malformed bodies, HTML pages) have no wire here: they become a 500 server error, which
is what a batch worker records for a live call that broke. Rate limits do not apply to batch work.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evalpipe.testing._answers import answer_for, markers
from evalpipe.testing._batch_store import BatchItem, BatchJob, BatchStore, LineAnswer
from evalpipe.testing._state import ERROR_FAULTS, Fault, ServerState, marked_fault
from evalpipe.testing._wire import ErrorKind, HttpRequest, Protocol, Reply, RequestRejected, dumps


def synthetic_request(protocol: Protocol, path: str, body: Any, headers: dict[str, str],
                      query: dict[str, str] | None = None) -> HttpRequest:
    """The live request a batch line stands for: POST `path` (under the protocol's prefix)."""
    return HttpRequest("POST", protocol.prefix + path, dict(query or {}), dict(headers), dumps(body))


def answer_line(protocol: Protocol, state: ServerState, account: str, request: HttpRequest,
                *, forced_failure: bool = False) -> LineAnswer:
    """The status and JSON body a live call of `request` would get (`forced_failure`: a 500)."""
    found = protocol.route(request.method, request.path[len(protocol.prefix):], request.query)
    if found is None:
        return _json(protocol.error(ErrorKind.NOT_FOUND, f"No route for {request.method} {request.path}", "", None))
    operation, params = found
    try:
        call = protocol.parse(operation, params, request)
        fault, times = marked_fault(markers(call.prompt))
    except RequestRejected as rejected:
        reply = protocol.error(rejected.kind, rejected.message, "", None)
        reply.status = rejected.status or reply.status
        return _json(reply)
    answer = answer_for(call)
    chosen = state.pick_fault(account + "\0" + call.identity, fault, times)
    if chosen is None and forced_failure:
        chosen = Fault.SERVER_ERROR
    if chosen is None:
        return _json(protocol.reply(call, answer), answer.input_tokens, answer.output_tokens)
    kind = ErrorKind.RATE_LIMIT if chosen.value.startswith("rate_limit") else \
        ERROR_FAULTS.get(chosen, ErrorKind.SERVER_ERROR)
    return _json(protocol.error(kind, None, call.model, None))


def _json(reply: Reply, input_tokens: int = 0, output_tokens: int = 0) -> LineAnswer:
    try:
        body = json.loads(reply.body)
    except ValueError:
        body = reply.body.decode("utf-8", "replace")
    return LineAnswer(reply.status, body, input_tokens, output_tokens)


class LineAnswerer:
    """Answers the due requests of jobs (see `BatchJob.advance`) and counts them."""

    def __init__(self, store: BatchStore, state: ServerState, protocol: Protocol) -> None:
        self.store, self.state, self.protocol = store, state, protocol

    def __call__(self, job: BatchJob, item: BatchItem) -> None:
        answer = answer_line(self.protocol, self.state, job.account, item.request,
                             forced_failure=item.custom_id in job.fail_ids)
        item.answer = answer
        item.outcome = "succeeded" if answer.status == 200 else "errored"
        self.store.count_answer(job.account, item.custom_id, answer)


@dataclass
class BatchCall:
    """One request to a batch API, with what its handler needs."""

    request: HttpRequest
    path: str  # the request's path without the protocol's prefix
    params: dict[str, str]  # path parameters the route took out (ids)
    account: str  # the API key
    store: BatchStore
    answer: LineAnswerer

    @property
    def now(self) -> float:
        """Monotonic seconds, the jobs' clock."""
        return time.monotonic()

    @property
    def origin(self) -> str:
        """`http://host:port` as the client addressed the server, for URLs in responses."""
        return "http://" + self.request.headers.get("host", "127.0.0.1")


Handler = Callable[[BatchCall], Reply]


class BatchApi(ABC):
    """One vendor's batch endpoints, mounted under its protocol's prefix."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    @abstractmethod
    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler of a path (the protocol's prefix removed) and its path parameters, or None."""

    def keyless(self, request: HttpRequest) -> bool:
        """Whether a request is served without an API key (its handler then gets the account "")."""
        return False

    @abstractmethod
    def _missing_batch(self, batch_id: str) -> Reply:
        """The vendor's answer for a batch id it does not know."""

    def _job(self, call: BatchCall) -> BatchJob | Reply:
        """The batch the path names, moved on to the present; the vendor's not-found answer otherwise."""
        job = call.store.job(call.account, self.protocol.vendor, call.params["id"])
        if job is None:
            return self._missing_batch(call.params["id"])
        with call.store.lock:
            job.advance(call.now, call.answer)
        return job
