"""Input checks every store runs before it touches its backend.

Shared by the in-memory references and the production backends, so a bad argument gets the same
``InvalidDataError`` everywhere and nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from focal.errors import InvalidDataError

MAX_LIMIT = 1000


def check_limit(limit: int, offset: int = 0) -> None:
    """``limit`` must be 1..1000 and ``offset`` >= 0."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidDataError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidDataError(f"offset must be >= 0, got {offset}")


def check_vector(vector: Sequence[float] | None, dimensions: int, *, what: str = "embedding") -> None:
    """A vector must have exactly ``dimensions`` finite floats and not be all zeros.

    ``None`` passes (the row simply has no embedding). A zero vector has no direction, so its
    cosine similarity is undefined; it is refused rather than silently scored.
    """
    if vector is None:
        return
    if len(vector) != dimensions:
        raise InvalidDataError(
            f"{what} has {len(vector)} dimensions, the store is configured for {dimensions}"
        )
    if not all(math.isfinite(x) for x in vector):
        raise InvalidDataError(f"{what} contains NaN or infinite values")
    if not any(vector):
        raise InvalidDataError(f"{what} is all zeros; cosine similarity is undefined for it")


def check_min_score(min_score: float) -> None:
    """Cosine scores live in [-1, 1]; a threshold outside it is a mistake."""
    if not -1.0 <= min_score <= 1.0:
        raise InvalidDataError(f"min_score must be between -1 and 1, got {min_score}")


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two non-zero vectors of the same length."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm
