"""A fake LLM provider server for offline tests: every vendor protocol evalpipe speaks, on loopback.

    from evalpipe.testing import FakeServer

    with FakeServer() as srv:                       # background thread; `async with` works too
        client = openai.OpenAI(base_url=srv.url_for("openai"), api_key="sk-test")
        ...
        assert srv.stats("sk-test").succeeded == 1

From a shell (benchmarks, other processes): `python -m evalpipe.testing --port 0` prints the root
URL as its first line, then one `vendor base-url` line per vendor.

Base URLs (`srv.url_for(vendor)`), what each official SDK or a plain client is given:

    openai      {url}/openai/v1              OpenAI(base_url=...)
    deepseek    {url}/deepseek               OpenAI(base_url=...)  (`/v1/...` works too)
    xai         {url}/xai/v1                 OpenAI(base_url=...)
    groq        {url}/groq/openai/v1         OpenAI(base_url=...)
    mistral     {url}/mistral/v1             OpenAI(base_url=...)
    openrouter  {url}/openrouter/api/v1      OpenAI(base_url=...)
    azure       {url}/azure                  AzureOpenAI(azure_endpoint=..., api_version=...); the v1
                                             route is {url}/azure/openai/v1
    anthropic   {url}/anthropic              Anthropic(base_url=...)
    ollama      {url}/ollama                 ollama.Client(host=...)
    gemini      {url}/gemini                 genai.Client(http_options={"base_url": ...})
    phind       {url}/phind                  POST {url}/phind/agent/

Answers are deterministic: a chat answers `"Echo: " + <last user message>` (markers removed; a
system prompt does not change it), cut to `max_tokens` words with the vendor's "length" finish
reason. A token is a whitespace-separated word; input tokens count every text sent, system prompt
included. A JSON schema (OpenAI `response_format`, Anthropic `output_format`, Ollama `format`,
Gemini `responseSchema`/`responseJsonSchema`) gets a small valid instance; plain JSON mode gets
`{"echo": "<last user message>"}`. Embeddings are L2-normalised hashed bags of words (64
dimensions unless the request asks for others), so texts sharing words are closer. Streams send
one word per event.

Reasoning models think "Thinking: <last user message>" before answering, each where its vendor puts
it, and count those words as reasoning tokens (`completion_tokens_details.reasoning_tokens`, inside
`completion_tokens` except on xAI): DeepSeek `*reasoner*` (`reasoning_content`), xAI `grok-3-mini`
(`reasoning_content`) and `grok-4*` (counted only), Groq `*gpt-oss*`/`*qwen3*` (`reasoning`),
Mistral `*magistral*` (`content` as a list of "thinking" and "text" chunks), OpenRouter
`*deepseek-r1*`, `*:thinking`, `openai/o*` (`reasoning` plus `reasoning_details`), OpenAI
`o1*`/`o3*`/`o4*`/`gpt-5*` (counted only).

Answers beyond text on Anthropic, Gemini and Ollama (each protocol module's docstring has the
details): a request that turns thinking on gets thinking back ("Thinking: <last user message>";
Anthropic `thinking`, Gemini `thinkingConfig.includeThoughts`, Ollama `think`), and the markers
below add the other shapes: `[[shape:tool_call]]` a tool call (all three), `[[shape:refusal]]`,
`[[shape:redacted_thinking]]`, `[[shape:invalid_request]]` and `[[cache_write:N]]` (Anthropic),
`[[cached:N]]` cache reads (Anthropic, Gemini), `[[shape:content_filter]]` a filtered candidate and
`[[shape:blocked_prompt]]` a blocked prompt (Gemini).

Tools and images, on every protocol but Phind (each in its vendor's shape: OpenAI `tools` /
`tool_calls` / role `tool`; Anthropic `tool_use` / `tool_result` blocks; Gemini `functionDeclarations`
/ `functionCall` / `functionResponse`; Ollama `tools` / `tool_calls` with object arguments / role
`tool`). With tools offered the fake calls the first tool (or the one `tool_choice` names) with a
small valid instance of its schema; `tool_choice` "none" turns that off. Markers script calls:
`[[tool:NAME]]` (an instance of NAME's schema), `[[tool:NAME:{"city": "Oslo"}]]` (those arguments;
no `]` inside), `[[tool:NAME:malformed]]` (arguments that are not JSON: Gemini ends the turn with
MALFORMED_FUNCTION_CALL, Ollama leaves the call in the text); several markers are parallel calls, in
order. Gemini signs the first call of a turn (`thoughtSignature`) when thinking is on, and Gemini 3
models refuse a call sent back without it. A conversation ending with tool results is answered
`Result: <result> | <result>` and never calls again. A tool result that answers no earlier call is
refused with the vendor's 400. Images (OpenAI `image_url` parts, data URLs or plain URLs; Anthropic
`image` blocks; Gemini `inlineData` / `fileData`; Ollama `images`) are checked (base64 must decode)
and acknowledged in the echo: `Echo: <text> [image: image/png]`, `[image: url]` for a URL.
`tiny_png()` gives a valid image to send.

Auth is checked the way each vendor does (Bearer; `x-api-key`; `x-goog-api-key` or `?key=`;
Azure `api-key`). Any key is accepted except: none (the vendor's missing-key error), a key starting
with `invalid` (401, Gemini 400 API_KEY_INVALID) and one starting with `forbidden` (403). Like the
real APIs, OpenAI, DeepSeek and xAI quote a wrong key back masked in the 401 message
(`sk-WRQsP****xQBt`, `****xQBt`, `sk***Bt`). Ollama and Phind need no key; their calls are counted
under the key "".

Markers in the last user message steer one request (so any SDK and any dataset can use them):
`[[fault:NAME]]` always fails it; `[[fault:NAME:N]]` fails the first N attempts of this identical
request (same key, vendor, model and body, ignoring the stream flag), then answers normally;
`[[latency:SECONDS]]` and `[[stream_delay:SECONDS]]` override the server's timing; `[[reply:TEXT]]` answers
TEXT (no `]` inside) instead of the echo, even when JSON is requested; `[[cached:N]]` reports N
input tokens read from the prompt cache (OpenAI-style vendors). `[[shape:NAME]]` asks the
OpenAI-style vendors for one answer shape: `refusal` (`message.refusal`, `delta.refusal`),
`tool_call` (`message.tool_calls`, finish reason tool_calls), `content_filter` (finish reason
content_filter; Azure adds the filter results), `content_filter_error` (400 `content_filter`,
Azure's `innererror`), `encrypted_reasoning` (OpenRouter `reasoning.encrypted` entries only) and
`invalid_request` (with `[[fault:error_event]]`: the in-stream error is a 400 invalid_request_error). `FakeServer(
fault=NAME)` or `srv.set_fault(NAME, times=None)` fail every call instead. Fault names (`Fault`):

    rate_limit_retry_after     429 + `retry-after: <retry_after_s>`
    rate_limit_retry_after_ms  429 + `retry-after-ms: <retry_after_s * 1000>`
    rate_limit_http_date       429 + `retry-after: <HTTP date>`
    rate_limit_gemini          429 + RetryInfo.retryDelay in the body on Gemini; a hint-less 429 elsewhere
    server_error, unavailable  500, 503
    overloaded                 529 on Anthropic, 503 elsewhere
    hang                       no response until the client gives up
    hang_midstream             a stream stalls after its first delta (non-streamed calls: like hang)
    reset_midstream            TCP reset after the first delta (non-streamed calls: before any byte)
    truncated_stream           the stream ends cleanly half-way, without its finish/terminal events
                               (Phind, which has none: the connection closes inside the chunked body;
                               non-streamed calls: the body stops short of its content-length)
    malformed_json             200 whose JSON body, or one stream event, is broken
    html_error                 502 with an nginx-style HTML page (text/html)
    error_event                200 stream, a delta, then the vendor's in-stream error event
                               (non-streamed calls: like server_error)
    insufficient_quota         OpenAI 429 insufficient_quota; DeepSeek/OpenRouter 402; Anthropic 400
                               billing; Gemini 429 RESOURCE_EXHAUSTED with QuotaFailure
    context_length             400 with the vendor's context-length error
    not_found                  404 model not found

Rate limits per API key: `FakeServer(rpm=R, tpm=T, window_s=W)` answers a call over the limit with
the vendor's own 429 and an exact hint (`retry-after` rounded up, plus `retry-after-ms` on
OpenAI-style vendors; `RetryInfo` on Gemini). A call's tokens are its input plus output tokens.
While limits are set, OpenAI-style vendors send `x-ratelimit-*` headers and Anthropic
`anthropic-ratelimit-*` headers.

Counters: `srv.stats(api_key=None)` returns a `Stats` (requests, succeeded, input_tokens,
output_tokens, by_status) for inference calls; `succeeded` counts paid calls (answered 200 and
delivered to the end). Over HTTP: `GET /_fake/stats[?key=K]` returns the same as JSON,
`POST /_fake/reset` forgets counters, fault attempts and windows, `POST /_fake/fault` with
`{"fault": NAME|null, "times": N|null}` sets the server-wide fault, `GET /_fake/health` lists URLs.

Batch APIs (half-price offline jobs; each module's docstring has the wire details): OpenAI Files and
Batches (`_batch_openai`; also Groq's `/openai/v1` and Azure's `/openai[/v1]` paths), Anthropic
Message Batches (`_batch_anthropic`) and Gemini batch mode with inline or file requests
(`_batch_gemini`). Every request of a batch is answered by the same machinery as a live call when
its moment comes, so markers work per request and a fault that fails a live call makes that
request an error line. A job's state follows the clock: validating for the first tenth of the
processing delay, in progress (requests answered one by one) until nine tenths, finalizing, then
ended; jobs live in the server, so a new client (or process) polls what another one submitted, and
jobs belong to the API key that made them. Controls, from the test's thread:

    FakeServer(batch_delay_s=0.05)                  # `python -m evalpipe.testing --batch-delay 0.05`
    srv.set_batch_options(delay_s=0.05, fail_fraction=0.2, expire_after=3)   # jobs created from now on
    srv.expire_batches(api_key=None)                 # end unfinished jobs now as expired
    srv.batch_stats(api_key=None)                    # BatchStats, see below

`fail_fraction` fails the requests whose id hashes below it (the same ids every time) with a 500;
`expire_after=N` lets a job answer N requests, then expire at the end of its delay (None: never).
`BatchStats`: files_uploaded, batches_created, result_downloads, requests_answered, succeeded,
errored, input_tokens, output_tokens and answers_by_id (answers per custom_id; a value above 1 is a
duplicated submission). Batch work is not counted in `stats()`. Over HTTP: `GET
/_fake/batch_stats[?key=K]`, `GET|POST /_fake/batch_options` (a JSON object of the options to
change; answers them all), `POST /_fake/batch_expire` with `{"key": K|null}` (answers `{"expired":
N}`); `POST /_fake/reset` also forgets batch counters and restores the batch options (stored files
and jobs stay).
"""

from __future__ import annotations

from evalpipe.testing._batch_store import BatchOptions, BatchStats
from evalpipe.testing._images import tiny_png
from evalpipe.testing._server import VENDORS, FakeServer
from evalpipe.testing._state import Fault, Stats

__all__ = ["VENDORS", "BatchOptions", "BatchStats", "FakeServer", "Fault", "Stats", "tiny_png"]
