"""A loopback fake of the Anthropic and OpenAI HTTP APIs, for driving the real SDKs in tests.

It speaks ``POST /v1/messages``, ``POST /v1/chat/completions`` and ``POST /v1/embeddings``,
records every request it receives (path, headers, JSON body, arrival time on the server's own
monotonic clock) and answers either from a per-test script of ``Reply`` objects (first in, first
out) or, when the script is empty, with a plausible default answer.

A ``Reply`` with ``stream`` answers with Server-Sent Events, one event per element, sent
``chunk_delay`` seconds apart (``anthropic_stream`` / ``openai_stream`` build vendor-shaped
events). ``abort_after`` cuts the connection after that many events. Every streamed reply is
recorded in ``FakeVendor.streams``: when each event left the server and whether the stream
completed, so tests can check that a client read the first delta before the last one was sent, or
that a client that went away stopped the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from focal.net import tcp_listener
from focal.providers.retry import RetryPolicy

DEFAULT_EMBEDDING_DIMENSIONS = 8

# Three attempts with millisecond backoff, so retry paths stay fast.
FAST_RETRIES = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005, deadline=10.0)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float  # time.monotonic() in the server thread when the request arrived


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` is JSON-encoded unless it is already a ``str``; ``stream``
    (SSE event texts) replaces the body with an event stream (see the module docstring)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream: list[str] | None = None
    chunk_delay: float = 0.0
    abort_after: int | None = None


@dataclass
class StreamRecord:
    """One streamed reply as the server sent it."""

    path: str
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() per event sent
    completed: bool = False
    aborted: bool = False  # cut by ``abort_after``
    cancelled: bool = False  # the client went away before the last event


# --- vendor-shaped bodies --------------------------------------------------------------------


def anthropic_message(
    text: str = "Hello from the fake Claude.",
    *,
    stop_reason: str = "end_turn",
    input_tokens: int = 11,
    output_tokens: int = 7,
    cache_read_input_tokens: int = 0,
    model: str = "claude-fake",
) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
        },
    }


def anthropic_tool_use(name: str, tool_input: Any, *, model: str = "claude-fake") -> dict[str, Any]:
    body = anthropic_message(stop_reason="tool_use", input_tokens=20, output_tokens=10, model=model)
    body["content"] = [{"type": "tool_use", "id": "toolu_fake", "name": name, "input": tool_input}]
    return body


def anthropic_error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return Reply(status=status, body=body, headers=headers or {})


def openai_completion(
    content: str | None = "Hello from the fake GPT.",
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
    prompt_tokens: int = 13,
    completion_tokens: int = 5,
    model: str = "gpt-fake",
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_tool_calls(
    calls: list[tuple[str, str, Any]], *, text: str = "", model: str = "claude-fake"
) -> dict[str, Any]:
    """A message asking for several tool calls: ``calls`` are (id, name, input)."""
    body = anthropic_message(text, stop_reason="tool_use", input_tokens=20, output_tokens=10, model=model)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "id": cid, "name": name, "input": args} for cid, name, args in calls]
    body["content"] = blocks
    return body


def openai_tool_calls(
    calls: list[tuple[str, str, Any]], *, content: str | None = None, model: str = "gpt-fake"
) -> dict[str, Any]:
    """A completion asking for tool calls: ``calls`` are (id, name, arguments); arguments that are
    not a ``str`` are JSON-encoded (a ``str`` is sent as is, e.g. to send invalid JSON)."""
    body = openai_completion(content, finish_reason="tool_calls", model=model)
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": cid,
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for cid, name, args in calls
    ]
    return body


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def anthropic_stream(
    chunks: list[str],
    *,
    stop_reason: str = "end_turn",
    tool_calls: list[tuple[str, str, Any]] = (),  # type: ignore[assignment]
    input_tokens: int = 11,
    output_tokens: int = 7,
    model: str = "claude-fake",
    error: dict[str, Any] | None = None,
) -> list[str]:
    """Messages API stream events: text deltas, then tool_use blocks, then the stop. ``error``
    (e.g. ``{"type": "overloaded_error", "message": "Overloaded"}``) replaces the ending with an
    error event after the text."""
    start = anthropic_message("", input_tokens=input_tokens, output_tokens=1, model=model)
    start.update(content=[], stop_reason=None)
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    index = 0
    if chunks:
        events.append(
            _sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
        )
        for chunk in chunks:
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": chunk},
            }
            events.append(_sse(delta, "content_block_delta"))
        if error is not None:
            return [*events, _sse({"type": "error", "error": error}, "error")]
        events.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    for cid, name, args in tool_calls:
        block = {"type": "tool_use", "id": cid, "name": name, "input": {}}
        events.append(
            _sse(
                {"type": "content_block_start", "index": index, "content_block": block}, "content_block_start"
            )
        )
        delta = {"type": "input_json_delta", "partial_json": json.dumps(args)}
        events.append(
            _sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
        )
        events.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    reason = "tool_use" if tool_calls else stop_reason
    events.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            "message_delta",
        )
    )
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return events


def openai_stream(
    chunks: list[str],
    *,
    finish_reason: str = "stop",
    tool_calls: list[tuple[str, str, Any]] = (),  # type: ignore[assignment]
    prompt_tokens: int = 13,
    completion_tokens: int = 5,
    model: str = "gpt-fake",
    error: dict[str, Any] | None = None,
) -> list[str]:
    """Chat completion chunks: role, text deltas, tool call deltas, finish, usage, ``[DONE]``.
    ``error`` (``{"message": ..., "type": ...}``) replaces the ending with an error event."""

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        return _sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            }
        )

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text}) for text in chunks]
    if error is not None:
        return [*events, _sse({"error": error})]
    for position, (cid, name, args) in enumerate(tool_calls):
        opening = {
            "index": position,
            "id": cid,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [opening]}))
        arguments = args if isinstance(args, str) else json.dumps(args)
        events.append(chunk({"tool_calls": [{"index": position, "function": {"arguments": arguments}}]}))
    events.append(chunk({}, "tool_calls" if tool_calls else finish_reason))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    events.append(
        _sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    )
    events.append("data: [DONE]\n\n")
    return events


def openai_error(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return Reply(status=status, body=body, headers=headers or {})


def fake_embedding(text: str, dimensions: int) -> list[float]:
    """The vector the fake returns for ``text``: distinct per text, so tests can check order."""
    digest = hashlib.sha256(text.encode()).digest()
    return [digest[i % len(digest)] / 255.0 for i in range(dimensions)]


def _default_reply(path: str, body: Any) -> Reply:
    if path == "/v1/messages":
        return Reply(body=anthropic_message())
    if path == "/v1/chat/completions":
        return Reply(body=openai_completion())
    if path == "/v1/embeddings":
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(text, dimensions)}
            for i, text in enumerate(inputs)
        ]
        data.reverse()  # the API does not promise order; the client must sort by ``index``
        tokens = sum(len(text.split()) for text in inputs)
        return Reply(
            body={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
    return Reply(status=404, body={"error": {"message": f"no route {path}"}})


class FakeVendor:
    """The fake's state: what it received and what it will answer next."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamRecord] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.base_url = ""
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._handle, methods=["POST"]),
                Route("/v1/chat/completions", self._handle, methods=["POST"]),
                Route("/v1/embeddings", self._handle, methods=["POST"]),
            ]
        )

    @property
    def anthropic_url(self) -> str:
        return self.base_url

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.streams.clear()
            self._script.clear()

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def bodies(self) -> list[Any]:
        return [request.body for request in self.requests]

    async def _handle(self, request: Request) -> Response:
        arrived = time.monotonic()
        raw = await request.body()
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    path=request.url.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                    received_at=arrived,
                )
            )
            reply = self._script.popleft() if self._script else _default_reply(request.url.path, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.stream is not None:
            record = StreamRecord(path=request.url.path)
            with self._lock:
                self.streams.append(record)
            return StreamingResponse(
                self._events(reply, record),
                status_code=reply.status,
                headers=reply.headers,
                media_type="text/event-stream",
            )
        content = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        return Response(
            content, status_code=reply.status, headers=reply.headers, media_type="application/json"
        )

    @staticmethod
    async def _events(reply: Reply, record: StreamRecord) -> AsyncIterator[bytes]:
        assert reply.stream is not None
        try:
            for position, event in enumerate(reply.stream):
                if reply.abort_after is not None and position == reply.abort_after:
                    record.aborted = True
                    raise ConnectionAbortedError("the fake vendor cut the stream")  # uvicorn drops it
                if position and reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                yield event.encode()
                record.sent_at.append(time.monotonic())
            record.completed = True
        finally:
            # Not completed and not cut by the script: the client went away (uvicorn cancels or
            # closes the generator).
            record.cancelled = not record.completed and not record.aborted


class FakeVendorServer:
    """Runs a ``FakeVendor`` under uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, vendor: FakeVendor) -> None:
        self.vendor = vendor
        self._socket = tcp_listener("127.0.0.1", 0)
        port = self._socket.getsockname()[1]
        vendor.base_url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(vendor.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="fake-vendor", daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake vendor server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
