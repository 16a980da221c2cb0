"""``HttpToolExecutor``: makes the outbound HTTP call of one tool, safely and within bounds.

- **Arguments** fill the URL template's ``{placeholders}`` (percent-encoded, path and query only);
  the rest go to the query string (GET, DELETE: after the template's own query) or to a JSON body
  (POST, PUT, PATCH). A call whose arguments would make a path segment empty, ``.`` or ``..``, or
  name a query key the template fixes, is refused (status ``invalid``), not sent.
- **Hosts**: only hosts on the allow-list are called (``*`` allows any; ``*.example.com`` a domain
  and its subdomains). Redirects are followed only within the tool's own origin (scheme, host and
  port), at most ``max_redirects`` times; a redirect elsewhere is an error, so a tool server cannot
  bounce the tenant's secret to another host.
- **Secret**: the definition's secret header is added to this tool's requests only, and any echo
  of the secret in a response or error, as sent or JSON-escaped (``\\"``, ``\\\\``, ``\\/``),
  is replaced by ``[redacted]``. Log lines carry the tool name, host, status and latency, never
  headers, arguments or bodies.
- **Results**: a JSON body is decoded into ``result`` made storable (``focal.tools.record``:
  no NaN, NUL or lone surrogates, nesting bounded); ``content`` keeps the text the model reads.
- **Bounds**: the whole call (redirects included) must finish within the tool's
  ``timeout_seconds`` (status ``timeout``); the response body is read up to ``max_response_bytes``
  (over it: status ``error``). A 2xx answer is ``ok``; anything else ``error``. The executor never
  raises for what the remote side does: a failed call is an outcome the model is told about.

The ``httpx.AsyncClient`` is given (dependency injection); ``aclose`` closes it only when the
executor was given it to own (``owns_client=True``, as ``focal.bootstrap`` does).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx
from pydantic import JsonValue

from focal.logging import get_logger
from focal.tools.executor import ToolExecutor
from focal.tools.models import HttpToolSpec, ToolOutcome, url_placeholders
from focal.tools.record import storable

_log = get_logger("focal.tools")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class HttpToolOptions:
    """Deployment-wide limits of outbound tool calls (``FOCAL_TOOLS__*``)."""

    allowed_hosts: Sequence[str] = ("*",)
    max_response_bytes: int = 65_536
    max_redirects: int = 3


def host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether ``host`` is on the allow-list (see the module docstring)."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        entry = entry.lower().rstrip(".")
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
    return False


class HttpToolExecutor(ToolExecutor):
    """Runs ``http`` tools; one instance (and one client) serves every tenant."""

    def __init__(
        self, client: httpx.AsyncClient, options: HttpToolOptions | None = None, *, owns_client: bool = False
    ) -> None:
        self._client = client
        self._options = options or HttpToolOptions()
        self._owns_client = owns_client

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def execute(
        self, name: str, spec: HttpToolSpec, arguments: Mapping[str, Any], *, secret: str | None = None
    ) -> ToolOutcome:
        """Call the tool; ``arguments`` were validated against its schema by the caller."""
        started = time.perf_counter()
        outcome = await self._call(spec, dict(arguments), secret, started)
        if secret:
            outcome = _redact(outcome, secret)
        _log.info(
            "tool_call",
            tool=name,
            host=spec.host,
            method=spec.method,
            status=outcome.status,
            http_status=outcome.http_status,
            latency_ms=outcome.latency_ms,
        )
        return outcome

    async def _call(
        self, spec: HttpToolSpec, arguments: dict[str, Any], secret: str | None, started: float
    ) -> ToolOutcome:
        def done(**fields: Any) -> ToolOutcome:
            return ToolOutcome(latency_ms=round((time.perf_counter() - started) * 1000.0, 3), **fields)

        if not host_allowed(spec.host, self._options.allowed_hosts):
            message = f"host {spec.host} is not on the allowed list (FOCAL_TOOLS__ALLOWED_HOSTS)"
            return done(status="error", content=message, error=message)
        try:
            url, rest = expand_url(spec.url_template, arguments)
        except UnsendableCall as exc:  # refused before anything is sent, like a schema error
            return done(status="invalid", content=str(exc), error=str(exc))
        headers = dict(spec.headers)
        if spec.secret_header and secret:
            headers[spec.secret_header] = secret
        request_args: dict[str, Any] = {"headers": headers}
        if spec.method in _BODY_METHODS:
            request_args["json"] = rest
        else:
            try:
                url = with_query(url, _query_params(rest))
            except UnsendableCall as exc:
                return done(status="invalid", content=str(exc), error=str(exc))
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                status, body, content_type = await self._send(spec, url, request_args)
        except TimeoutError:
            message = f"no answer within {spec.timeout_seconds:g} s"
            return done(status="timeout", content=message, error=message)
        except _CallRefused as exc:
            return done(status="error", content=str(exc), error=str(exc), http_status=exc.http_status)
        except httpx.HTTPError as exc:
            message = f"request failed: {type(exc).__name__}"
            return done(status="error", content=message, error=message)
        try:
            # storable: no NaN, NUL or lone surrogate, nesting bounded (focal.tools.record)
            result = storable(_decode(body, content_type))
        except RecursionError:  # JSON nested deeper than the parser's stack: keep it as text
            result = storable(body.decode("utf-8", errors="replace"))
        text = body.decode("utf-8", errors="replace")
        if 200 <= status < 300:
            return done(status="ok", content=text, result=result, http_status=status)
        message = f"HTTP {status}"
        return done(
            status="error", content=f"{message}: {text}", result=result, http_status=status, error=message
        )

    async def _send(
        self, spec: HttpToolSpec, url: str, request_args: dict[str, Any]
    ) -> tuple[int, bytes, str]:
        """Send, following same-origin redirects; the body read up to the cap."""
        origin = _origin(url)
        method = spec.method
        for _ in range(self._options.max_redirects + 1):
            request = self._client.build_request(method, url, **request_args)
            response = await self._client.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    target = urljoin(url, location)
                    if _origin(target) != origin:
                        raise _CallRefused(
                            f"redirect to another host refused ({urlsplit(target).hostname})",
                            http_status=response.status_code,
                        )
                    url = target
                    if response.status_code == 303:  # See Other: the follow-up is a GET without body
                        method = "GET"
                        request_args = {"headers": request_args["headers"]}
                    continue
                body = await _read_capped(response, self._options.max_response_bytes)
                return response.status_code, body, response.headers.get("content-type", "")
            finally:
                await response.aclose()
        raise _CallRefused(f"more than {self._options.max_redirects} redirects")


class UnsendableCall(ValueError):
    """Arguments that would change where the call goes (a dot segment, a query key the URL
    fixes): refused, never sent."""


class _CallRefused(Exception):
    """A call stopped by Focal's own rules (redirect elsewhere, body too large): an error outcome."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


def expand_url(template: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL with its placeholders filled (percent-encoded) and the arguments it did not use.

    A placeholder without an argument is left empty; the schema's ``required`` list is what makes
    an argument mandatory. ``UnsendableCall`` when a path segment with a placeholder comes out as
    ``.`` or ``..`` (percent-encoding leaves dots as they are, and the client resolves such a
    segment) or empty (``/orders/{n}`` would call ``/orders/``, often the list of every order): the
    call would go to another path of the host, with the tool's secret."""
    used = url_placeholders(template)
    values = {name: quote(_scalar_text(arguments.get(name, "")), safe="") for name in used}
    path = re.split(r"[?#]", template, maxsplit=1)[0]
    for segment in path.split("/")[3:]:  # after "scheme:", "" and the host
        if "{" in segment and segment.format(**values) in ("", ".", ".."):
            raise UnsendableCall(
                f"the arguments make the path segment {segment!r} "
                f"{repr(segment.format(**values)) if segment.format(**values) else 'empty'}, "
                "which would leave the tool's path"
            )
    url = template.format(**values)
    return url, {k: v for k, v in arguments.items() if k not in used}


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    """``url`` with ``params`` added after its own query, which is kept as written (httpx's
    ``params=`` would replace it). ``UnsendableCall`` when a parameter names a key the URL's own
    query already has: a fixed value of the template is the operator's, not the model's."""
    if not params:
        return url
    parts = urlsplit(url)
    fixed = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    clash = sorted(fixed.intersection(name for name, _ in params))
    if clash:
        raise UnsendableCall(f"argument(s) {', '.join(clash)} would override the tool URL's own query")
    extra = urlencode(params, quote_via=quote)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _query_params(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name, value in arguments.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        params.extend((name, _scalar_text(item)) for item in items)
    return params


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _CallRefused(
            f"response of {declared} bytes is over the {cap}-byte limit", http_status=response.status_code
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _CallRefused(f"response is over the {cap}-byte limit", http_status=response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, content_type: str) -> Any:
    """JSON when the server says so and it parses; else the text."""
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type.lower():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _redact(outcome: ToolOutcome, secret: str) -> ToolOutcome:
    """The outcome with every occurrence of the secret in what the server sent (``content``,
    ``error``, the strings and keys of ``result``) replaced. The outcome's own fields are left
    alone: a short secret ("ok", "1") must not garble its status or numbers."""
    escaped = json.dumps(secret)[1:-1]  # the secret inside a JSON string...
    # ...also as encoders that escape "/" write it (PHP's json_encode; base64 keys hold "/")
    forms = sorted({secret, escaped, escaped.replace("/", "\\/")}, key=len, reverse=True)

    def text(value: str) -> str:
        for form in forms:
            value = value.replace(form, _REDACTED)
        return value

    def scrubbed(value: JsonValue) -> JsonValue:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, list):
            return [scrubbed(item) for item in value]
        if isinstance(value, dict):
            return {text(key): scrubbed(item) for key, item in value.items()}
        return value

    return outcome.model_copy(
        update={
            "content": text(outcome.content),
            "error": None if outcome.error is None else text(outcome.error),
            "result": scrubbed(outcome.result),
        }
    )
