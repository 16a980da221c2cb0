"""Server-Sent Events for a streamed chat turn.

``stream_turn`` runs the turn in a task whose ``on_delta`` feeds a queue, and waits for the first
piece of the answer before it commits to a response:

- the turn fails before any text exists (unknown agent, closed session, a refused message, a
  provider failure without FALLBACK, ...): an ordinary JSON error response with its real status,
  exactly as without streaming;
- the turn ends without any text (a MANUAL session: the message is recorded for a person): the
  non-streaming response (202);
- otherwise a ``200 text/event-stream`` whose events are ``delta`` (``{"text": ...}``, in order),
  then exactly one of ``done`` (the body the non-streaming call returns) or ``error``
  (``{"status": <what the status would have been>, "error": {...envelope...}}``).

With an ``Idempotency-Key``, a retry of a streamed turn gets the ``done`` body as JSON (200) with
``Idempotent-Replayed: true``; a stream that ended in an ``error`` event is kept under that
error's status, which a 5xx or 409 is not (so a retry runs again), like any error response.

A client that disconnects while the answer is still coming (before its first piece too) cancels
the turn task: the provider stream is closed at once and nothing is written; the request ends with
an empty event stream, which no retry replays. Once the answer is complete the turn's writes are
shielded and finish even if the client is gone (``TurnEngine.run``): a turn is written whole or
not at all. So a client that leaves during the writes is not the end of the request: it waits for
the turn to end and keeps its outcome for a retry with the same ``Idempotency-Key``, which gets
the turn that was written rather than running it a second time. Events are JSON on one ``data:``
line each; a comment line is never sent, so every event a client sees is one of the three.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from focal.alignment.turn.models import TurnResult
from focal.alignment.turn.streaming import DeltaSink
from focal.api.errors import internal_error_body, log_unhandled_error
from focal.logging import get_logger

__all__ = ["EVENT_STREAM", "sse_event", "stream_turn", "wants_event_stream"]

EVENT_STREAM = "text/event-stream"
_log = get_logger("focal.api.sse")
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering either


def wants_event_stream(request: Request) -> bool:
    """True when the client accepts Server-Sent Events (``Accept: text/event-stream``)."""
    return EVENT_STREAM in request.headers.get("accept", "").lower()


def sse_event(event: str, data: Any) -> bytes:
    """One event: its name and its JSON data on a single line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def stream_turn(
    request: Request,
    run: Callable[[DeltaSink, Callable[[], None]], Awaitable[TurnResult]],
    body_of: Callable[[TurnResult], BaseModel],
    plain: Callable[[TurnResult], Response],
) -> Response:
    """Run ``run(on_delta, on_writing)`` and answer with its events (see the module docstring); a
    turn that ends without any text (a MANUAL session records the message for a person) gets
    ``plain``. ``on_writing`` is ``TurnEngine.run``'s: the turn's writes have begun."""
    pieces: asyncio.Queue[str] = asyncio.Queue()
    writing = asyncio.Event()
    turn = asyncio.ensure_future(run(pieces.put, writing.set))
    first_piece = asyncio.ensure_future(pieces.get())
    # Until a response exists nothing else notices the client leaving; a buffered answer (hard
    # constraints), a slow first token or an enqueued message can take long before any text.
    gone = asyncio.ensure_future(_disconnected(request))
    waiting: set[asyncio.Future[Any]] = {turn, first_piece, gone}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _cancel(turn, first_piece, gone)
        raise
    await _cancel(gone)  # from here on the StreamingResponse listens for the disconnect
    if not first_piece.done():
        first_piece.cancel()
        if not turn.done() and not writing.is_set():  # the client left while the answer was made
            _log.info("streaming client left before any text", turn="cancelled")
            await _cancel(turn)
            return StreamingResponse(_nothing(), media_type=EVENT_STREAM, headers=_HEADERS)
        if not turn.done():
            _log.info("streaming client left before any text", turn="being written")
        await asyncio.wait({turn})  # ended, or written whole: its outcome is kept for a retry
        return plain(turn.result())  # a failure before any text is raised, and answered like any error
    first = [first_piece.result()]
    return StreamingResponse(
        _events(request, first, pieces, turn, writing, body_of), media_type=EVENT_STREAM, headers=_HEADERS
    )


async def _events(
    request: Request,
    first: list[str],
    pieces: asyncio.Queue[str],
    turn: asyncio.Future[TurnResult],
    writing: asyncio.Event,
    body_of: Callable[[TurnResult], BaseModel],
) -> AsyncIterator[bytes]:
    next_piece: asyncio.Future[str] | None = None
    try:
        for text in first:
            yield sse_event("delta", {"text": text})
        while True:
            next_piece = asyncio.ensure_future(pieces.get())
            waiting: set[asyncio.Future[Any]] = {turn, next_piece}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_piece.done():
                yield sse_event("delta", {"text": next_piece.result()})
                continue
            next_piece.cancel()
            while not pieces.empty():  # pieces queued just before the turn ended
                yield sse_event("delta", {"text": pieces.get_nowait()})
            break
        yield sse_event(*await _outcome(request, turn, body_of))
    finally:
        if next_piece is not None:
            next_piece.cancel()
        if turn.done() or not writing.is_set():
            await _cancel(turn)  # the client went away mid-answer: stop the turn, nothing is written
        else:
            # The client went away while the turn is written: it will be written whole, so wait
            # for it (shielded from the cancellation of this response) and keep its outcome for
            # a retry with the same Idempotency-Key, which must not run the turn again.
            with anyio.CancelScope(shield=True):
                await asyncio.wait({turn})
                if not turn.cancelled():
                    await _outcome(request, turn, body_of)


async def _outcome(
    request: Request, turn: asyncio.Future[TurnResult], body_of: Callable[[TurnResult], BaseModel]
) -> tuple[str, dict[str, Any]]:
    """The last event of the ended ``turn`` (``done`` or ``error``), kept for replays."""
    if turn.exception() is None:
        done = body_of(turn.result()).model_dump(mode="json")
        _keep_for_replay(request, 200, done)
        return "done", done
    error = await _error_data(request, turn.exception())
    _keep_for_replay(request, error["status"], {"error": error["error"]})
    return "error", error


async def _nothing() -> AsyncIterator[bytes]:
    """The events of a stream whose client left before any: none."""
    return
    yield  # an async generator


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the request body was read: only a disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _keep_for_replay(request: Request, status: int, body: dict[str, Any]) -> None:
    """With an ``Idempotency-Key``: what a retry gets instead of the stream (``focal.api.idempotency``):
    the ``done`` body as JSON, or the error under its status (which the middleware keeps only when
    it is final, like any error response)."""
    handle = getattr(request.state, "idempotency", None)
    if handle is not None:
        handle.keep(status, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _error_data(request: Request, exc: BaseException | None) -> dict[str, Any]:
    """The status and envelope the app's own exception handlers give ``exc`` (a 500 for a bug)."""
    handlers = request.app.exception_handlers
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None and kind is not Exception:
            response = await handler(request, exc)
            return {"status": response.status_code, **json.loads(bytes(response.body))}
    if exc is not None:
        log_unhandled_error(exc)
    return {"status": 500, **internal_error_body()}
