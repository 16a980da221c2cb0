"""``vector_search_rules`` on PostgreSQL: the plan, its SQL, and the ranking.

Rules are ranked like every vector search (``focal.db.vector_ranking``): PostgreSQL proposes
candidates by pgvector's ``<=>`` and the real score (``CosineScorer``: the exact cosine of the
float32 vectors, rounded to 12 decimals) decides order, ties (by id) and ``min_score``, so this
backend returns the same rows in the same order as the in-memory one.

The plan depends on how many rules the search scope holds (live, enabled, embedded rules of the
agent, of the admitted scopes and embedding model):

- up to ``exact_scan_max_rows`` (the usual case: an agent has tens or hundreds of rules), every
  rule of the scope is scored: one statement, one round trip, recall 1. The statement counts the
  scope first (a ``LIMIT``-ed count, so a huge scope costs at most that many rows) and skips the
  scan when the scope is larger;
- above it, the rules table's HNSW index (shared by every tenant: the filter is selective) in a
  read-only transaction with ``hnsw.iterative_scan = relaxed_order`` (pgvector >= 0.8; without it
  an index scan that filters afterwards returned about 4 of 10 rows) and a raised
  ``hnsw.ef_search``. When that scan comes back short (it stops after ``hnsw.max_scan_tuples``
  index tuples, 20,000 by default: a small agent behind many closer rules of other tenants) or
  when rows beyond its candidates may tie into the result, the exact plan answers instead.

For more than 2000 dimensions the HNSW index is on ``embedding::halfvec(D)`` (revision 0002),
and the index plan's ORDER BY repeats that expression so the planner can use it; pg scores still
come from the full-precision column.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from focal.alignment.models import Scope
from focal.alignment.stores.postgres_base import Connection
from focal.alignment.stores.postgres_rows import RULES
from focal.db.migrations_support import HNSW_MAX_VECTOR_DIMENSIONS
from focal.db.vector_ranking import Candidate, Ranking, band_sql, rank_candidates, score_margin
from focal.validation import CosineScorer

__all__ = [
    "DEFAULT_EXACT_SCAN_MAX_ROWS",
    "EXACT_SQL",
    "SETTINGS_SQL",
    "SIZED_EXACT_SQL",
    "RuleSearch",
    "candidate_limit",
    "ef_search",
    "index_sql",
]

# Scopes up to this many rules are scored exactly (see the module docstring): at 1536
# dimensions an exact scan of 1,000 rows costs a few ms, about what an HNSW search costs.
DEFAULT_EXACT_SCAN_MAX_ROWS = 1000
# Rows fetched beyond ``limit``: candidates of the index plan, slack of the exact plan (so the
# rows whose real score may tie with the last one returned usually come in the same query).
TIE_SLACK = 16
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search

# Transaction-local knobs of the index plan: iterative scan, ef_search ($1), and no sorts, without
# which the planner prefers "filter the tenant's rows, then sort them all" whenever its estimates
# make that look cheaper (it does on a table of a few thousand rules), which is the exact plan
# without the exact plan's bound on its cost.
SETTINGS_SQL = (
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('hnsw.ef_search', $1, true), set_config('enable_sort', 'off', true)"
)

# $1 query vector, $2 tenant_id, $3 agent_id, $4 embedding_model or NULL, $5 "every scope" flag,
# $6 scopes admitted whole (text[]), $7/$8 (scope, scope_id) pairs (text[], uuid[]).
_SCOPE = """
    tenant_id = $2 AND agent_id = $3 AND deleted_at IS NULL AND enabled AND embedding IS NOT NULL
    AND ($4::text IS NULL OR embedding_model = $4::text)
    AND ($5::boolean
         OR scope = ANY($6::text[])
         OR EXISTS (SELECT 1 FROM unnest($7::text[], $8::uuid[]) AS admitted(scope, scope_id)
                    WHERE admitted.scope = rules.scope AND admitted.scope_id = rules.scope_id))
"""
# pg score: pgvector's 1 - (a <=> b), only to choose candidates. OFFSET 0 keeps the subquery
# from being flattened, which would compute the distance twice per row.
_SCORED = f"SELECT {RULES.select_list}, 1 - (embedding <=> $1::vector) AS score FROM rules WHERE {_SCOPE}"

# $9 pg floor, $10 row limit, $11 limit, $12 twice the score margin: the best $10 rows of the
# scope by pg score, of which only the band comes back (see ``band_sql``).
_EXACT_CANDIDATES = (
    f"SELECT * FROM ({_SCORED} OFFSET 0) AS scored WHERE score >= $9 ORDER BY score DESC, id LIMIT $10"
)
EXACT_SQL = band_sql(_EXACT_CANDIDATES, floor="$9", limit="$11", double_margin="$12")
# The same, with $13 = exact_scan_max_rows + 1: first the scope's size (counted up to $13, in
# ``scope_size``), and the exact scan only when the scope is smaller (the condition on the
# size is a one-time filter: a large scope is not scanned).
SIZED_EXACT_SQL = band_sql(
    f"SELECT * FROM ({_EXACT_CANDIDATES}) AS best WHERE (SELECT size FROM scope) < $13",
    floor="$9",
    limit="$11",
    double_margin="$12",
    ctes=f"scope AS (SELECT count(*) AS size FROM (SELECT 1 FROM rules WHERE {_SCOPE} LIMIT $13) AS n),",
    stats=", (SELECT size FROM scope) AS scope_size",
)
# $9 floor, $10 limit: every row of the band, at most $10 per identical embedding (the others can
# never be in the result, so a hundred copies of one rule cost $10 rows).
_BAND_SQL = f"""
    SELECT * FROM (
        SELECT scored.*, row_number() OVER (PARTITION BY scored.embedding ORDER BY scored.id) AS twin
        FROM ({_SCORED} OFFSET 0) AS scored
        WHERE scored.score >= $9
    ) AS band
    WHERE twin <= $10
    ORDER BY score DESC, id
"""


def candidate_limit(limit: int) -> int:
    """How many candidates the index plan asks the HNSW scan for."""
    return limit + TIE_SLACK


def ef_search(limit: int) -> int:
    """A candidate list comfortably larger than what is asked for (default would be 40)."""
    return min(MAX_EF_SEARCH, max(100, 2 * candidate_limit(limit)))


def index_sql(dimensions: int) -> str:
    """$9 pg floor, $10 candidates, $11 limit, $12 twice the score margin. The nearest $10 rules
    of the scope by the HNSW index, of which the band comes back, with ``found`` (how many the
    scan yielded) and ``lowest`` (their lowest pg score); see ``band_sql``."""
    if dimensions <= HNSW_MAX_VECTOR_DIMENSIONS:
        distance = "embedding <=> $1::vector"
    else:
        distance = f"embedding::halfvec({dimensions}) <=> $1::vector::halfvec({dimensions})"
    return band_sql(f"{_SCORED} ORDER BY {distance} LIMIT $10", floor="$9", limit="$11", double_margin="$12")


class RuleSearch:
    """The PostgreSQL plan of ``vector_search_rules`` for one store (its dimension and knobs)."""

    def __init__(self, dimensions: int, *, exact_scan_max_rows: int = DEFAULT_EXACT_SCAN_MAX_ROWS) -> None:
        if exact_scan_max_rows < 0:
            raise ValueError(f"exact_scan_max_rows must be >= 0, got {exact_scan_max_rows}")
        self.exact_scan_max_rows = exact_scan_max_rows
        self._index_sql = index_sql(dimensions)
        self._margin = score_margin(dimensions)

    async def run(
        self,
        connection: Connection,
        query: list[float],
        tenant_id: UUID,
        agent_id: UUID,
        *,
        selector: Sequence[tuple[Scope, UUID | None]] | None,
        embedding_model: str | None,
        limit: int,
        min_score: float,
    ) -> list[tuple[asyncpg.Record, float]]:
        """The top ``limit`` rule records with their real scores. ``connection`` is an acquired
        asyncpg connection, outside any transaction (the index plan opens its own)."""
        whole = [scope.value for scope, scope_id in selector or () if scope_id is None]
        pairs = [(scope.value, scope_id) for scope, scope_id in selector or () if scope_id is not None]
        scope = (
            query,
            tenant_id,
            agent_id,
            embedding_model,
            selector is None,
            whole,
            [scope for scope, _ in pairs],
            [scope_id for _, scope_id in pairs],
        )
        score_of = CosineScorer(query)
        floor = min_score - self._margin

        def rank(records: Sequence[asyncpg.Record], unseen_max: float | None) -> Ranking[asyncpg.Record]:
            candidates = [
                Candidate(r["id"], r["score"], r["embedding"], r) for r in records if r["id"] is not None
            ]
            return rank_candidates(
                score_of,
                candidates,
                limit=limit,
                min_score=min_score,
                margin=self._margin,
                unseen_max=unseen_max,
            )

        def band(candidates: int) -> tuple[object, ...]:
            return (*scope, floor, candidates, limit, 2.0 * self._margin)

        wanted = limit + TIE_SLACK
        records = await connection.fetch(SIZED_EXACT_SQL, *band(wanted), self.exact_scan_max_rows + 1)
        if records[0]["scope_size"] > self.exact_scan_max_rows:
            async with connection.transaction(readonly=True):
                await connection.execute(SETTINGS_SQL, str(ef_search(limit)))
                nearest = await connection.fetch(self._index_sql, *band(candidate_limit(limit)))
            if nearest[0]["found"] == candidate_limit(limit):
                ranking = rank(nearest, unseen_max=nearest[0]["lowest"])
                if ranking.hits is not None:
                    return ranking.hits
            # the scan came back short, or rows beyond its candidates may tie in: score them all
            records = await connection.fetch(EXACT_SQL, *band(wanted))
        ranking = rank(records, unseen_max=records[0]["lowest"] if records[0]["found"] == wanted else None)
        if ranking.hits is None:
            ranking = rank(await connection.fetch(_BAND_SQL, *scope, ranking.floor, limit), unseen_max=None)
        assert ranking.hits is not None  # nothing unseen: the band is complete
        return ranking.hits
