"""Focal's retry policy for vendor calls, and the one log event each provider call emits.

The SDKs' own retries are switched off (``max_retries=0``) so that this is the only place that
retries: otherwise 3 SDK retries times 3 Focal attempts would hammer a struggling vendor with 9
requests. Only ``RateLimitError`` and ``ProviderUnavailableError`` are retried; everything else
(bad key, unknown model, refusal, bad request) fails at once because repeating it cannot help.

Delays use exponential backoff with full jitter (a uniform draw in ``[0, min(max_delay,
base_delay * 2**(n-1))]``), so many clients hit by the same outage do not retry in lockstep. A
``retry-after`` the vendor sent is a lower bound on the delay. A retry whose delay would cross the
call's overall deadline is not attempted; the last error is raised instead.

An explicit loop is used rather than tenacity: the delay depends on the error (``retry_after``)
and the deadline is shared with the in-flight attempt, both of which read more plainly here.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from focal.errors import ConfigurationError, ProviderError, ProviderUnavailableError, RateLimitError
from focal.logging import get_logger

T = TypeVar("T")

RETRYABLE_ERRORS: tuple[type[ProviderError], ...] = (RateLimitError, ProviderUnavailableError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a provider retries one vendor request.

    ``max_attempts`` counts the first try. ``deadline`` (seconds) bounds the whole public call
    (all attempts, all sleeps, and a repair request if any). Tests pass tiny delays.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_delay < self.base_delay:
            raise ConfigurationError(
                f"need 0 <= base_delay <= max_delay, got base_delay={self.base_delay}, "
                f"max_delay={self.max_delay}"
            )
        if self.deadline <= 0:
            raise ConfigurationError(f"deadline must be > 0 seconds, got {self.deadline}")

    def delay_before_retry(self, failed_attempts: int, error: ProviderError) -> float:
        """Seconds to wait after ``failed_attempts`` failures: full jitter, floored by retry-after."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (failed_attempts - 1)))
        delay = self.rng.uniform(0.0, ceiling)
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


class ProviderCall:
    """One public provider call (``generate``, ``embed_batch``, ...): retries, deadline, log event.

    Use as ``async with ProviderCall(...) as call: result = await call.run(request)``; ``run`` may
    be awaited several times (a structured-output repair, several embedding batches). On exit one
    event ``provider_call`` is logged with provider, model, operation, latency_ms, token counts,
    attempts (HTTP requests made) and outcome ("ok" or the error class). Nothing secret is in it.
    """

    def __init__(self, *, provider: str, model: str, operation: str, policy: RetryPolicy) -> None:
        self.provider = provider
        self.model = model
        self.operation = operation
        self.policy = policy
        self.attempts = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._started = time.monotonic()

    async def __aenter__(self) -> ProviderCall:
        self._started = time.monotonic()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        outcome = "ok" if exc_type is None else exc_type.__name__
        if exc_type is not None and issubclass(exc_type, GeneratorExit | asyncio.CancelledError):
            outcome = "cancelled"  # the consumer of a stream stopped reading, or the task was cancelled
        event = dict(
            provider=self.provider,
            model=self.model,
            operation=self.operation,
            latency_ms=round((time.monotonic() - self._started) * 1000.0, 1),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            attempts=self.attempts,
            outcome=outcome,
        )
        # A fresh logger per event keeps structlog's configuration (and test capture) current.
        logger = get_logger("focal.providers")
        if exc_type is None:
            logger.info("provider_call", **event)
        else:
            logger.warning("provider_call", **event)

    def add_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def remaining_seconds(self) -> float:
        return self.policy.deadline - (time.monotonic() - self._started)

    async def run(self, request: Callable[[], Awaitable[T]]) -> T:
        """Await ``request()`` (which raises only Focal errors), retrying per the policy."""
        failures = 0
        while True:
            remaining = self.remaining_seconds()
            if remaining <= 0:
                raise ProviderUnavailableError(
                    f"{self.provider}: no time left within the {self.policy.deadline}s deadline",
                    provider=self.provider,
                )
            self.attempts += 1
            scope = asyncio.timeout(remaining)
            try:
                async with scope:
                    return await request()
            except TimeoutError as exc:
                if not scope.expired():
                    raise
                raise ProviderUnavailableError(
                    f"{self.provider}: call exceeded its {self.policy.deadline}s deadline",
                    provider=self.provider,
                ) from exc
            except RETRYABLE_ERRORS as exc:
                failures += 1
                if failures >= self.policy.max_attempts:
                    raise
                delay = self.policy.delay_before_retry(failures, exc)
                if delay >= self.remaining_seconds():
                    raise
                await asyncio.sleep(delay)
