"""``Idempotency-Key`` on every POST: a retried request gets the first one's response, not a second
effect (a second turn, a second LLM call, a second agent).

A pure ASGI middleware (it must see the raw body and the complete response), innermost of the
stack: the body it reads is already bounded (``BodySizeLimitMiddleware``) and checked for text that
is not Unicode (``RequestTextMiddleware``). For a POST carrying the header:

- The tenant comes from the bearer token, as for the route. Without a valid token the request
  passes through untouched (it gets its 401; nothing is stored). An invalid key (not 1..255
  printable ASCII characters) is a 422 ``invalid_idempotency_key`` and runs nothing.
- Keys are per tenant and per route (method and path, UUIDs in any case): the same key on another
  route is another key. The request's *fingerprint* is a SHA-256 of its query string and its body
  (JSON bodies in canonical form: key order and whitespace do not matter).
- First use: the key is reserved *in flight* (``FOCAL_IDEMPOTENCY__IN_FLIGHT_SECONDS``) and the
  request runs. Its response is stored (before its last byte is sent, so a client that retries as
  soon as it has the response gets the replay) for ``FOCAL_IDEMPOTENCY__TTL_SECONDS`` (24 h) when it is a
  final answer: 2xx, and 4xx except 408, 409, 425 and 429 (those say "try again later": a retry
  must run again). A 5xx, a 409 conflict, an unhandled error or a cancelled request stores nothing
  and releases the key, so the client's retry runs the request again. A response over
  ``FOCAL_IDEMPOTENCY__MAX_RESPONSE_BYTES`` is not stored either (logged).
- Same key, same fingerprint, completed: the stored status, body and headers (``content-type``,
  ``etag``, ``location``) are returned with ``Idempotent-Replayed: true``; nothing runs.
- Same key, same fingerprint, still in flight: ``409 idempotency_in_progress`` with
  ``Retry-After: 1`` at once (no waiting: a client retrying a slow request learns it is running,
  and a server holding connections open for duplicates would tie up workers). If the process
  handling it died, the key frees itself after the in-flight time.
- Same key, another fingerprint (in flight or completed): ``422 idempotency_key_reused``.
- The key store unreachable: 503, and the request does not run (running it could not be undone
  if it then ran twice).

Routes that answer with a stream (SSE chat) set the response to keep themselves:
``request.state.idempotency.keep(status, body, media_type)`` (the final JSON body of the turn,
say); a replay then answers that body with that status, whatever was streamed the first time.
An event stream that ended without ``keep`` (the client went away, so the turn was cancelled)
is not stored: the key is released and a retry runs again.
The store is ``FocalServices.idempotency_store``: Redis (same server and durability checks as the
sessions) on real backends, so every process shares the keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from focal.api.auth import decode_tenant_id
from focal.api.errors import error_body
from focal.errors import FocalError, InvalidDataError
from focal.idempotency.store import IdempotencyStore, ReservationOutcome, StoredResponse, check_key
from focal.logging import get_logger
from focal.settings import IdempotencySettings

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "REPLAYED_HEADER",
    "IdempotencyHandle",
    "IdempotencyMiddleware",
    "document_idempotency",
    "is_replayable",
    "request_fingerprint",
]

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_HEADER = b"idempotency-key"
_EVENT_STREAM = "text/event-stream"
_KEPT_HEADERS = frozenset({"content-type", "etag", "location"})
# 4xx answers that mean "not now" rather than "no": a retry must run again.
_RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 425, 429})

_log = get_logger("focal.api.idempotency")


def document_idempotency(operation: dict[str, Any]) -> None:
    """Declare the optional ``Idempotency-Key`` header of a POST operation in the OpenAPI document,
    its 409 (in progress) and the ``Idempotent-Replayed`` header of replayed answers."""
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    if any(p.get("in") == "header" and p.get("name", "").lower() == "idempotency-key" for p in parameters):
        return
    parameters.append(
        {
            "name": IDEMPOTENCY_KEY_HEADER,
            "in": "header",
            "required": False,
            "description": "Retries with the same key and body within 24 h get the first response "
            f"(with {REPLAYED_HEADER}: true) and run nothing; the same key with another body is a 422",
            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
        }
    )
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.setdefault("409", {"description": "A request with the same Idempotency-Key is still running"})
    replayed = {
        "description": "true when the response is the stored one of an earlier request",
        "schema": {"type": "string"},
    }
    for status, response in responses.items():
        if status.startswith("2"):
            response.setdefault("headers", {})[REPLAYED_HEADER] = replayed


def is_replayable(status: int) -> bool:
    """A final answer, kept for retries: 2xx, and 4xx other than 408/409/425/429. Never a 5xx."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS)


def request_fingerprint(query_string: bytes, body: bytes) -> str:
    """SHA-256 of the query string and the body; a JSON body in canonical form."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):
        canonical = body  # not JSON: compared byte for byte
    digest = hashlib.sha256()
    for part in (query_string, b"\x00", canonical):
        digest.update(part)
    return digest.hexdigest()


@dataclass
class IdempotencyHandle:
    """``request.state.idempotency`` during a request with a key: lets a streaming route say what
    a replay should answer (``keep``) instead of the bytes it streamed."""

    key: str
    kept: StoredResponse | None = field(default=None, init=False)

    def keep(self, status: int, body: bytes, media_type: str = "application/json") -> None:
        self.kept = StoredResponse(status=status, headers=(("content-type", media_type),), body=body)


@dataclass
class _Captured:
    limit: int
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    too_large: bool = False

    def record(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in message.get("headers", [])
                if name.decode("latin-1").lower() in _KEPT_HEADERS
            ]
        elif message["type"] == "http.response.body" and not self.too_large:
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large, self.chunks = True, []
            else:
                self.chunks.append(chunk)

    @property
    def streamed(self) -> bool:
        """An event stream: kept only through ``IdempotencyHandle.keep`` (its route says what a
        replay gets); one that ended without it was cut off, and its turn did not complete."""
        return any(
            name == "content-type" and value.lower().startswith(_EVENT_STREAM) for name, value in self.headers
        )

    def response(self) -> StoredResponse:
        return StoredResponse(status=self.status, headers=tuple(self.headers), body=b"".join(self.chunks))


class IdempotencyMiddleware:
    """See the module docstring. Reads ``app.state.services`` per request (built by the lifespan)."""

    def __init__(self, app: ASGIApp, settings: IdempotencySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw_key = next((bytes(v) for k, v in scope.get("headers", []) if k == _KEY_HEADER), None)
        tenant_id = _tenant(scope) if raw_key is not None else None
        if raw_key is None or tenant_id is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        try:
            check_key(key)
        except InvalidDataError as exc:
            await _send_error(send, 422, "invalid_idempotency_key", str(exc))
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        await self._handle(scope, receive, send, tenant_id, key, body)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, tenant_id: UUID, key: str, body: bytes
    ) -> None:
        services = getattr(scope["app"].state, "services", None)
        if services is None:  # not initialised: the route reports it
            await self.app(scope, _replay_body(body, receive), send)
            return
        store: IdempotencyStore = services.idempotency_store
        route = f"POST {_uuids_lowercased(scope['path'])}"
        fingerprint = request_fingerprint(scope.get("query_string", b""), body)
        try:
            reservation = await store.reserve(
                tenant_id, route, key, fingerprint, in_flight_seconds=self.settings.in_flight_seconds
            )
        except FocalError as exc:
            _log.warning("idempotency store unavailable", error=str(exc))
            await _send_error(send, 503, "service_unavailable", "the idempotency key store is unavailable")
            return
        if reservation.outcome is ReservationOutcome.MISMATCH:
            await _send_error(
                send, 422, "idempotency_key_reused",
                f"the {IDEMPOTENCY_KEY_HEADER} {key!r} was used with another request body on this route",
            )  # fmt: skip
            return
        if reservation.outcome is ReservationOutcome.IN_PROGRESS:
            await _send_error(
                send, 409, "idempotency_in_progress",
                f"a request with the {IDEMPOTENCY_KEY_HEADER} {key!r} is still being processed; retry later",
                headers=[(b"retry-after", b"1")],
            )  # fmt: skip
            return
        if reservation.outcome is ReservationOutcome.REPLAY:
            assert reservation.response is not None
            await _replay(send, reservation.response)
            return
        assert reservation.token is not None
        await self._run(scope, send, store, tenant_id, route, key, reservation.token, body, receive)

    async def _run(
        self,
        scope: Scope,
        send: Send,
        store: IdempotencyStore,
        tenant_id: UUID,
        route: str,
        key: str,
        token: str,
        body: bytes,
        receive: Receive,
    ) -> None:
        handle = IdempotencyHandle(key)
        scope.setdefault("state", {})["idempotency"] = handle
        captured = _Captured(limit=self.settings.max_response_bytes)
        settled = False

        async def settle() -> None:
            nonlocal settled
            await self._settle(store, tenant_id, route, key, token, handle, captured)
            settled = True  # not before: an interrupted settle is released (or done) below

        async def capture(message: Message) -> None:
            captured.record(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # Kept (or released) before the client has the whole response: a retry it sends
                # as soon as it has it gets the replay, not a 409 for a request still "running".
                await settle()
            await send(message)

        try:
            await self.app(scope, _replay_body(body, receive), capture)
        except BaseException:
            if not settled:
                await asyncio.shield(_release(store, tenant_id, route, key, token))
            raise
        if not settled:  # a response that never sent its end (a stream cut off by its client)
            await settle()

    async def _settle(
        self,
        store: IdempotencyStore,
        tenant_id: UUID,
        route: str,
        key: str,
        token: str,
        handle: IdempotencyHandle,
        captured: _Captured,
    ) -> None:
        """Store the response for replays, or release the key (see the module docstring)."""
        response = handle.kept or captured.response()
        if not is_replayable(response.status) or (
            handle.kept is None and (captured.too_large or captured.streamed)
        ):
            if captured.too_large and handle.kept is None:
                _log.warning("response too large to keep for its idempotency key", size=captured.size)
            await _release(store, tenant_id, route, key, token)
            return
        try:
            stored = await store.complete(
                tenant_id, route, key, token, response, ttl_seconds=self.settings.ttl_seconds
            )
        except FocalError as exc:  # the response was sent; a retry may run the request again
            _log.error("idempotent response not stored", tenant_id=str(tenant_id), error=str(exc))
            return
        if not stored:  # the reservation expired while the request ran: a retry runs it again
            _log.warning(
                "idempotency reservation expired before the response was stored; raise "
                "FOCAL_IDEMPOTENCY__IN_FLIGHT_SECONDS above the longest request",
                tenant_id=str(tenant_id),
                route=route,
                in_flight_seconds=self.settings.in_flight_seconds,
            )


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _uuids_lowercased(path: str) -> str:
    """The path with its UUIDs in lower case: the routes read them in any case, so
    ``/v1/agents/ABC.../chat`` is the same route as ``/v1/agents/abc.../chat`` for a key too.
    Other segments keep their case (a channel's user id may differ by case alone)."""
    return _UUID.sub(lambda match: match.group(0).lower(), path)


def _tenant(scope: Scope) -> UUID | None:
    """The bearer token's tenant, or None (the route will answer 401 itself)."""
    authorization = next((bytes(v) for k, v in scope.get("headers", []) if k == b"authorization"), b"")
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    secret = scope["app"].state.settings.auth.jwt_secret
    if secret is None:
        return None
    try:
        return decode_tenant_id(token.strip(), secret)
    except HTTPException:
        return None


async def _release(store: IdempotencyStore, tenant_id: UUID, route: str, key: str, token: str) -> None:
    try:
        await store.release(tenant_id, route, key, token)
    except FocalError as exc:  # the reservation expires after the in-flight time
        _log.warning("idempotency key not released", tenant_id=str(tenant_id), error=str(exc))


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _replay(send: Send, response: StoredResponse) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    headers.append((REPLAYED_HEADER.lower().encode(), b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _send_error(
    send: Send, status: int, code: str, message: str, *, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    details: dict[str, Any] = {"header": IDEMPOTENCY_KEY_HEADER}
    encoded = json.dumps(error_body(code, message, details), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(encoded)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": encoded})
