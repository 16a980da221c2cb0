"""Vendor-neutral pieces of the provider error mapping.

Each provider maps its SDK's exceptions in one context manager of its own module
(``anthropic_errors`` in ``llm/anthropic.py``, ``openai_errors`` in ``llm/openai.py``); both
delegate here for what HTTP status codes mean, so the taxonomy of ``focal.errors`` is applied the
same way to every vendor:

    401 / 403                 -> AuthenticationError
    404                       -> ModelError
    413, "prompt too long"    -> ContextWindowExceededError
    400 content policy        -> ContentFilterError
    429                       -> RateLimitError(retry_after from retry-after-ms / retry-after)
    408, 5xx, 529 overloaded  -> ProviderUnavailableError   (also timeouts, connection errors)
    anything else             -> ProviderError
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from focal.errors import (
    AuthenticationError,
    ContentFilterError,
    ContextWindowExceededError,
    ModelError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the vendor asked us to wait, from ``retry-after-ms`` or ``retry-after``.

    ``retry-after-ms`` (OpenAI, Anthropic) is more precise, so it wins. ``retry-after`` may be
    seconds (integer or, non-standard, float) or an HTTP date. Unparseable or negative -> None.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    header = headers.get("retry-after")
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        parsed = email.utils.parsedate_tz(header)
        if parsed is None:
            return None
        seconds = float(email.utils.mktime_tz(parsed)) - time.time()
    return seconds if seconds >= 0 else None


def error_for_status(
    *,
    provider: str,
    status_code: int,
    message: str,
    headers: Mapping[str, str],
    context_window_exceeded: bool = False,
    content_filtered: bool = False,
) -> ProviderError:
    """The Focal error for a vendor HTTP error response.

    The two flags carry what only the vendor-specific mapper can read from the body (error codes
    and messages differ per vendor); the status code decides everything else.
    """
    text = f"{provider}: {message} (HTTP {status_code})"
    if status_code in (401, 403):
        return AuthenticationError(text, provider=provider, status_code=status_code)
    if status_code == 404:
        return ModelError(text, provider=provider, status_code=status_code)
    if status_code == 429:
        return RateLimitError(
            text, provider=provider, status_code=status_code, retry_after=parse_retry_after(headers)
        )
    if status_code == 408 or status_code >= 500:
        return ProviderUnavailableError(text, provider=provider, status_code=status_code)
    if status_code == 413 or context_window_exceeded:
        return ContextWindowExceededError(text, provider=provider, status_code=status_code)
    if content_filtered:
        return ContentFilterError(text, provider=provider, status_code=status_code)
    return ProviderError(text, provider=provider, status_code=status_code)
