"""Ranking PostgreSQL vector search candidates exactly as the in-memory stores rank rows.

Every backend scores with ``focal.validation.CosineScorer`` and sorts by score descending, ties
by id, keeping scores ``>= min_score``. pgvector's ``<=>`` cannot be that score: it accumulates
in float32, so it is off by up to ~1e-7 (near-copies of the query score exactly 1.0) and orders
rows closer than that arbitrarily. PostgreSQL therefore only *chooses candidates* with ``<=>``
(its "pg score" ``1 - (embedding <=> query)``, computed where the data is, with an index when
the scope is large), and Python computes the real score of the few candidates that can matter.

That is exact, not approximate, because the pg score is within ``score_margin(dimensions)`` of
the real score (a bound on float32 rounding, not a measurement). With ``k = limit``:

- a row whose pg score is below ``min_score - margin`` cannot reach ``min_score``;
- a row whose pg score is more than ``2 * margin`` below the ``k``-th best pg score is beaten by
  ``k`` rows (each at least ``kth - margin`` for real), so it cannot enter the result;
- every other row is in the *band*: only band rows are scored in Python, so their order, their
  ties (by id) and the ``min_score`` cut are decided on the real score.

The band must be complete: ``rank_candidates`` is told the highest pg score a row it was not
given can have (``unseen_max``: the last pg score of a ``LIMIT``-ed query, or the lowest of an
index scan's candidates). If that row could fall in the band (e.g. 40 tied rows and 21 fetched),
it answers "fetch every row with pg score >= ``floor``" and the store runs the exact query for
the band, which keeps at most ``limit`` rows per identical embedding (the rest can never be in
the top ``limit``), so a thousand copies of one vector cost ``limit`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from uuid import UUID

from focal.validation import SCORE_DECIMALS, CosineScorer

__all__ = ["Candidate", "Ranking", "band_sql", "rank_candidates", "score_margin"]

Item = TypeVar("Item")

# float32's unit roundoff: pgvector's sums of d products are each off by at most about
# d * 2**-24 relative to the sum of absolute values, whatever the summation order (FMA or not).
_FLOAT32_ROUNDOFF = 2.0**-24


def score_margin(dimensions: int) -> float:
    """An upper bound of |pg score - real score| for vectors of ``dimensions`` that pass
    ``checked_vector``: the dot product and both squared norms are each off by at most
    ``g = d * u / (1 - d * u)`` relatively (u the float32 roundoff), so the cosine is off by at
    most ``2 g`` (first order), doubled here for the second-order terms and the double-precision
    steps, plus the real score's own rounding to ``SCORE_DECIMALS``. About 1e-6 at 8 dimensions
    and 3.7e-4 at 1536 (measured errors are ~100 times smaller: the bound only widens the band)."""
    roundoff = dimensions * _FLOAT32_ROUNDOFF
    return 4.0 * roundoff / (1.0 - roundoff) + 10.0**-SCORE_DECIMALS


@dataclass(frozen=True, slots=True)
class Candidate(Generic[Item]):
    """A row PostgreSQL proposed: its id, pg score, embedding (float32) and payload (a record)."""

    id: UUID
    pg_score: float
    embedding: Sequence[float]
    item: Item


@dataclass(frozen=True, slots=True)
class Ranking(Generic[Item]):
    """``hits`` (payload, real score) best first, or ``None`` when rows the caller did not fetch
    may belong to the result: then fetch every row whose pg score is ``>= floor`` and rank again."""

    hits: list[tuple[Item, float]] | None
    floor: float


def rank_candidates(
    score_of: CosineScorer,
    candidates: Sequence[Candidate[Item]],
    *,
    limit: int,
    min_score: float,
    margin: float,
    unseen_max: float | None,
) -> Ranking[Item]:
    """The top ``limit`` candidates by real score (ties by id) with real score ``>= min_score``.

    ``unseen_max`` bounds the pg score of every row not among ``candidates`` (``None``: there is
    none that could pass ``min_score - margin``). A NaN pg score (a zero vector stored before
    such vectors were refused; PostgreSQL sorts NaN above every number) is scored like any row.
    """
    floor = min_score - margin
    eligible = sorted(
        (c for c in candidates if c.pg_score >= floor),  # NaN fails every comparison
        key=lambda c: (-c.pg_score, c.id),
    )
    if len(eligible) >= limit:
        floor = max(floor, eligible[limit - 1].pg_score - 2.0 * margin)
    if unseen_max is not None and not unseen_max < floor:  # a NaN bound proves nothing either
        return Ranking(None, floor)
    band = [c for c in eligible if c.pg_score >= floor]
    band.extend(c for c in candidates if math.isnan(c.pg_score))
    scored = [(c, score) for c in band if (score := score_of(c.embedding)) >= min_score]
    scored.sort(key=lambda pair: (-pair[1], pair[0].id))
    return Ranking([(c.item, score) for c, score in scored[:limit]], floor)


def band_sql(
    candidates: str, *, floor: str, limit: str, double_margin: str, ctes: str = "", stats: str = ""
) -> str:
    """SQL returning only the rows ``rank_candidates`` needs from ``candidates`` (a query whose rows
    have a pg ``score``): those with ``score >= floor`` within ``double_margin`` of the
    ``limit``-th best such score (NaN scores always), so the rows that cannot make the result are
    neither sent nor decoded. Every row carries ``found`` (how many rows ``candidates`` yielded)
    and ``lowest`` (their lowest score); one row of NULLs carries them when no row is in the band.
    ``floor``, ``limit`` and ``double_margin`` are SQL expressions (parameters); ``ctes`` are more
    common table expressions (``name AS (...), ``) the candidates may use, ``stats`` more
    columns of the stats row (``, expression AS name``)."""
    return f"""
        WITH {ctes} candidates AS MATERIALIZED ({candidates}),
        stats AS (
            SELECT count(*) AS found, min(score) AS lowest{stats},
                   (SELECT score FROM candidates WHERE score >= {floor} AND score <> 'NaN'
                    ORDER BY score DESC OFFSET {limit} - 1 LIMIT 1) AS kth
            FROM candidates
        )
        SELECT stats.*, band.*
        FROM stats LEFT JOIN LATERAL (
            SELECT * FROM candidates
            WHERE score >= {floor} AND (stats.kth IS NULL OR score >= stats.kth - {double_margin})
        ) AS band ON true
    """
