"""One exception tree for all of Focal.

    FocalError
    ├── ConfigurationError          settings that cannot work (unknown provider, missing key, ...)
    ├── StoreError                  anything a store raises
    │   ├── StoreConnectionError    backend unreachable, timed out, pool exhausted
    │   ├── NotFoundError           the thing to update does not exist (for this tenant)
    │   ├── ConflictError           unique violation, stale version, cross-tenant id clash
    │   │   ├── StaleRevisionError  an optimistic write whose expected revision is no longer stored
    │   │   ├── ConcurrentTurnError another writer saved the session while a turn was running
    │   │   └── ConversationBusyError  an earlier turn held the conversation past the wait bound
    │   ├── InvalidDataError        bad input: wrong vector length, limit out of range, ...
    │   └── SchemaVersionError      the database schema is behind or ahead of the code
    └── ProviderError               anything an LLM or embedding provider raises
        ├── AuthenticationError     401 / 403: bad or missing key
        ├── RateLimitError          429; carries ``retry_after`` (seconds) when the vendor said
        ├── ModelError              404 / unknown model
        ├── ContentFilterError      the vendor refused the content
        ├── ContextWindowExceededError  the prompt does not fit the model
        ├── ProviderUnavailableError    5xx, 529 overloaded, timeouts, connection errors
        ├── InvalidResponseError    structured output that does not validate after one repair
        └── ProviderInputError      bad arguments caught before any network call

Driver and SDK exceptions (asyncpg, redis, anthropic, openai) are translated at the backend
boundary with ``raise ... from exc`` and never escape a store or provider. Names avoid shadowing
the builtin ``ConnectionError`` and pydantic's ``ValidationError``.
"""

from __future__ import annotations


class FocalError(Exception):
    """Root of every error Focal raises on purpose."""


class ConfigurationError(FocalError):
    """The configuration cannot work; the message names the setting and the fix."""


# --- stores -------------------------------------------------------------------------------


class StoreError(FocalError):
    """Raised by a store."""


class StoreConnectionError(StoreError):
    """The backend is unreachable, timed out or has no free connection."""


class NotFoundError(StoreError):
    """The record to change does not exist for this tenant."""


class ConflictError(StoreError):
    """A unique constraint, a stale optimistic version or a cross-tenant id clash."""


class StaleRevisionError(ConflictError):
    """A write conditioned on a revision (``expected_revision``) found another revision stored:
    someone else saved the row since it was read. Nothing was written; re-read and retry."""


class ConcurrentTurnError(ConflictError):
    """A turn lost its session's version check: another turn (or an operator's write) saved the
    session since the turn read it. Nothing of the turn was written; running it again re-reads
    the session and its history."""


class ConversationBusyError(ConflictError):
    """The conversation's earlier turn still held it when this message's wait ran out
    (``FOCAL_TURN__CONCURRENCY=enqueue``). Nothing was written."""


class InvalidDataError(StoreError):
    """Input the store refuses: wrong vector length, limit out of range, invalid value."""


class SchemaVersionError(StoreError):
    """The database schema is not at the revision this code expects."""


# --- providers ----------------------------------------------------------------------------


class ProviderError(FocalError):
    """Raised by an LLM or embedding provider."""

    def __init__(self, message: str, *, provider: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code


class AuthenticationError(ProviderError):
    """The vendor rejected the credentials (401/403)."""


class RateLimitError(ProviderError):
    """The vendor asked us to slow down (429)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, provider=provider, status_code=status_code)
        self.retry_after = retry_after


class ModelError(ProviderError):
    """The model is unknown or not available to this key (404)."""


class ContentFilterError(ProviderError):
    """The vendor refused to produce or process the content."""


class ContextWindowExceededError(ProviderError):
    """The prompt is longer than the model accepts."""


class ProviderUnavailableError(ProviderError):
    """The vendor is down, overloaded (5xx, 529), timed out or unreachable."""


class InvalidResponseError(ProviderError):
    """The vendor answered with something Focal cannot use (e.g. invalid structured output)."""


class ProviderInputError(ProviderError):
    """The call's own arguments are invalid; raised before any network call."""
