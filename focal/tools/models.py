"""The HTTP side of a tool definition, and the outcome of one call.

A definition's URL template may hold ``{parameter}`` placeholders in its path and query, never in
its scheme, host or port: the model chooses argument values, so letting them pick the host would
let a conversation send the tenant's secret header anywhere.
"""

from __future__ import annotations

import re
import string
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ToolStatus = Literal["ok", "error", "timeout", "invalid"]

# Headers the executor owns: a definition may not set them.
RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection"})
MAX_TOOL_TIMEOUT_SECONDS = 60.0
# RFC 9110: a field name is a token; a value visible ASCII with inner spaces or tabs. The client
# sends headers as ASCII, so anything else fails every call (or, with CR/LF, would split it).
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")


def header_value_error(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None."""
    if HEADER_VALUE.match(value) is None:
        return "must be printable ASCII (no line breaks or other control characters)"
    return None


def url_placeholders(template: str) -> list[str]:
    """The ``{name}`` placeholders of a URL template, in order."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


class HttpToolSpec(BaseModel):
    """How to call an ``http`` tool. ``secret_header`` names the header that carries the tenant's
    secret (stored with the definition, write-only over the API, added only to this tool's calls)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: HttpMethod = "GET"
    url_template: str = Field(min_length=1, max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=5.0, gt=0, le=MAX_TOOL_TIMEOUT_SECONDS)
    secret_header: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("url_template")
    @classmethod
    def _fixed_origin(cls, template: str) -> str:
        try:
            fields = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"url_template is not a valid template: {exc}") from exc
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if not name.isidentifier():
                raise ValueError(f"url_template placeholder {{{name}}} must be a parameter name")
            if spec or conversion:  # str.format would apply them to the model's argument
                raise ValueError(
                    f"url_template placeholder {{{name}}} may not have a format spec or conversion"
                )
        origin_part = template.split("/", 3)[:3]  # scheme:, "", host[:port]
        if any("{" in part for part in origin_part):
            raise ValueError("url_template may not have placeholders in its scheme, host or port")
        parts = urlsplit(template.replace("{", "").replace("}", ""))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url_template must be an absolute http:// or https:// URL")
        return template

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if HEADER_NAME.match(name) is None:
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Focal and may not be configured")
            problem = header_value_error(value)
            if problem is not None:  # the value is not echoed: it may be a credential
                raise ValueError(f"the value of header {name!r} {problem}")
        return headers

    @field_validator("secret_header")
    @classmethod
    def _valid_secret_header(cls, name: str | None) -> str | None:
        if name is not None and HEADER_NAME.match(name) is None:
            raise ValueError(f"secret_header {name!r} is not a valid HTTP header name")
        if name is not None and name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by Focal and may not carry the secret")
        return name

    @property
    def host(self) -> str:
        hostname = urlsplit(self.url_template).hostname
        assert hostname is not None  # checked by the validator
        return hostname.lower()


class ToolOutcome(BaseModel):
    """What one call did. ``content`` is what the model is told; ``result`` the (size-capped)
    decoded response for the turn record; ``error`` says why a call did not succeed."""

    model_config = ConfigDict(frozen=True)

    status: ToolStatus
    content: str
    result: JsonValue = None
    http_status: int | None = None
    error: str | None = None
    latency_ms: float = 0.0
