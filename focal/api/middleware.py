"""Pure ASGI middleware: request ids, access log, metrics and the last-resort 500; the request body
size limit; the refusal of text that is not Unicode.

Pure ASGI (not ``BaseHTTPMiddleware``) so the scope the router writes ``route`` into is the one
we read back, and bodies are never buffered twice (the size limit reads the body once and hands
the same bytes on).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from focal.api.errors import error_body, internal_error_body, log_unhandled_error, validation_error_body
from focal.api.validation import lone_surrogate_error, path_surrogate_error
from focal.logging import bind_request_context, get_logger

__all__ = [
    "METHODS_WITHOUT_BODY",
    "UNMATCHED_ROUTE",
    "BodySizeLimitMiddleware",
    "HttpMetrics",
    "RequestContextMiddleware",
    "RequestTextMiddleware",
]

_log = get_logger("focal.api.access")
_REQUEST_ID_HEADER = b"x-request-id"
# A caller's request id is echoed only when it is short and plain, so it cannot forge log lines.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ROUTE = "<unmatched>"
# No route of the API reads a body for these; their bodies are neither limited nor read.
METHODS_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class HttpMetrics:
    """Request count and latency by route template and status, in the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "focal_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "focal_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = {"method": method, "route": route, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.latency.labels(**labels).observe(seconds)


def _route_template(scope: Scope, fixed_paths: frozenset[str]) -> str:
    """The path template of the route that handled the request, so metric labels stay bounded
    and hold no ids.

    API routes put themselves in ``scope["route"]``; FastAPI's own documentation routes
    (``/openapi.json``, ``/docs``) do not, and are labelled with their fixed path. Anything else
    (no route matched, or the request was answered before routing: a 413 from the size limit, a
    422 from the text check) is ``UNMATCHED_ROUTE``, never the raw path: any client could otherwise
    create a label per URL it invents, and paths carry tenants' ids.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    return scope["path"] if scope["path"] in fixed_paths else UNMATCHED_ROUTE


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class RequestContextMiddleware:
    """Gives every request an id (``X-Request-ID``, echoed), binds it (and later the tenant) to the
    log context, writes one access-log line and records the request in ``HttpMetrics``.

    It is also where an unhandled exception becomes the 500 envelope: here the request id and the
    tenant are still bound, so the error's log line carries them and the response gets its
    ``X-Request-ID`` (Starlette's own last-resort handler runs outside every middleware).
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, fixed_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.fixed_paths = fixed_paths  # routes without a template, labelled with their path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = _header(scope, _REQUEST_ID_HEADER)
        request_id = offered if offered and _SAFE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        bind_request_context(request_id=request_id)
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((_REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log_unhandled_error(exc)
            if response_started:  # too late for a 500: let the server drop the connection
                raise
            await send_json(send_with_id, 500, internal_error_body())
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope, self.fixed_paths)
            self.metrics.observe(scope["method"], route, status, elapsed)
            tenant_id = scope.get("state", {}).get("tenant_id")
            _log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                tenant_id=str(tenant_id) if tenant_id is not None else None,
            )
            structlog.contextvars.clear_contextvars()


async def send_json(send: Send, status: int, body: dict[str, Any], *, close: bool = False) -> None:
    """Answer with a JSON body from middleware (before or instead of the app)."""
    encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_body_bytes`` with 413, before the app parses anything.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is read
    (at most ``max_body_bytes + 1`` bytes are held) and replayed to the app, so a chunked body
    without a length cannot get around the limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in METHODS_WITHOUT_BODY:
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send) -> None:
        # Connection: close, since the rest of an unread body would otherwise be taken for the
        # next request on this connection.
        body = error_body(
            "payload_too_large",
            f"the request body exceeds {self.max_body_bytes} bytes",
            {"max_body_bytes": self.max_body_bytes},
        )
        await send_json(send, 413, body, close=True)


def _is_json(scope: Scope) -> bool:
    """FastAPI parses a body as JSON exactly when its type is ``application/json`` or ``*+json``."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return False
    maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def _json_may_hold_surrogates(body: bytes) -> bool:
    """Cheap pre-check: plain UTF-8 without a ``\\u`` escape decodes to valid text.

    ``json.loads`` decodes bytes with ``surrogatepass``, so raw surrogate bytes (invalid UTF-8)
    and other encodings (UTF-16/32) go to the full check too.
    """
    if json.detect_encoding(body) != "utf-8" or b"\\u" in body:
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class RequestTextMiddleware:
    """Refuses with 422 a request whose URL path or JSON body holds a lone UTF-16 surrogate
    (``"\\ud800"`` is valid JSON, but not Unicode text): once stored, such a string breaks every
    response that contains it, and PostgreSQL refuses it. Nothing reaches the app, so nothing is
    stored, on any route. Runs inside ``BodySizeLimitMiddleware``, so the body it holds is bounded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = path_surrogate_error(scope["path"])
        if error is not None:
            await send_json(send, 422, validation_error_body([error]))
            return
        if scope["method"] in METHODS_WITHOUT_BODY or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _json_may_hold_surrogates(body):
            try:
                document = json.loads(body)  # as Starlette's Request.json() does
            except (ValueError, RecursionError):
                document = None  # malformed: the app reports it (422/400) as it always does
            error = lone_surrogate_error(document, ("body",))
            if error is not None:
                await send_json(send, 422, validation_error_body([error]))
                return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read ``body`` once, then the real stream."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
