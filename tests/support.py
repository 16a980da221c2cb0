"""Small helpers shared by test suites. Server fixtures live in ``tests/conftest.py``.

Contract suites build every store with ``embedding_dimensions=TEST_EMBEDDING_DIMENSIONS`` (the
in-memory ones too), matching the ``vector(D)`` columns of the ``pg_dsn`` database.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Protocol
from uuid import UUID, uuid4

TEST_EMBEDDING_DIMENSIONS = 8


class DatabaseFactory(Protocol):
    """The ``database_factory`` fixture: a fresh database's DSN (migrated to head by default)."""

    def __call__(
        self, *, dimensions: int = TEST_EMBEDDING_DIMENSIONS, migrate: bool = True
    ) -> Awaitable[str]: ...


async def until(condition: Callable[[], bool], bound: float = 10.0) -> None:
    """Wait for ``condition`` to hold, polling every 5 ms; fail after ``bound`` seconds. For states
    another task reaches with no event to wait on (a lock's waiter count)."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def new_tenant() -> UUID:
    """A fresh tenant id: tests isolate from each other by working in their own tenant."""
    return uuid4()


def unit_vector(index: int, dimensions: int = TEST_EMBEDDING_DIMENSIONS) -> list[float]:
    """The ``index``-th basis vector: 1.0 at ``index``, 0.0 elsewhere."""
    if not 0 <= index < dimensions:
        raise ValueError(f"index {index} outside 0..{dimensions - 1}")
    vector = [0.0] * dimensions
    vector[index] = 1.0
    return vector


def normalized(values: Sequence[float], dimensions: int = TEST_EMBEDDING_DIMENSIONS) -> list[float]:
    """``values`` zero-padded to ``dimensions`` and scaled to length 1 (non-collinear test vectors)."""
    if len(values) > dimensions:
        raise ValueError(f"{len(values)} values for {dimensions} dimensions")
    padded = [float(v) for v in values] + [0.0] * (dimensions - len(values))
    norm = math.sqrt(sum(v * v for v in padded))
    if norm == 0:
        raise ValueError("cannot normalise a zero vector")
    return [v / norm for v in padded]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity, the score the stores report (``1 - (a <=> b)``)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def exact_score(query: Sequence[float], vector: Sequence[float]) -> float:
    """The score every store must report, computed independently of ``focal``: the cosine of the
    two vectors as stored (rounded to float32), in exact rational arithmetic and 40-digit
    decimals, rounded to 12 decimal places."""
    a, b = _float32(query), _float32(vector)
    dot = sum((Fraction(x) * Fraction(y) for x, y in zip(a, b, strict=True)), Fraction(0))
    squares = sum((Fraction(x) ** 2 for x in a), Fraction(0)) * sum(
        (Fraction(y) ** 2 for y in b), Fraction(0)
    )
    with localcontext() as context:
        context.prec = 40
        value = _decimal(dot) / _decimal(squares).sqrt()
    return round(float(value), 12) + 0.0


def _float32(values: Sequence[float]) -> list[float]:
    packing = struct.Struct(f"<{len(values)}f")
    return list(packing.unpack(packing.pack(*values)))


def _decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)
