"""The SQL of ``vector_search_rules`` for the PostgreSQL ConfigStore.

A tenant's agent owns a small slice of the ``rules`` table, so an HNSW scan that filters after
the index would return only a few of the requested rows (measured: about 4 of 10). The search
therefore runs in a transaction with ``hnsw.iterative_scan = relaxed_order`` (pgvector >= 0.8:
the index keeps scanning until enough rows pass the filter) and a raised ``hnsw.ef_search``.
Relaxed order may return candidates slightly out of order, so the outer query re-sorts them on
the exact score ``1 - (embedding <=> query)`` and breaks ties on id. The inner query fetches a
few more candidates than asked for, so rows tied at the cut are still ordered by id.

For more than 2000 dimensions the HNSW index is on ``embedding::halfvec(D)`` (revision 0002),
and the inner ORDER BY repeats that expression so the planner can use it; scores still come from
the full-precision column.
"""

from __future__ import annotations

from focal.alignment.stores.postgres_rows import RULES
from focal.db.migrations_support import HNSW_MAX_VECTOR_DIMENSIONS

__all__ = ["SETTINGS_SQL", "candidate_limit", "ef_search", "search_sql"]

# Extra candidates fetched beyond ``limit`` so score ties at the cut still break on id.
TIE_SLACK = 16
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search

SETTINGS_SQL = (
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', $1, true)"
)


def candidate_limit(limit: int) -> int:
    return limit + TIE_SLACK


def ef_search(limit: int) -> int:
    """A candidate list comfortably larger than what is asked for (default would be 40)."""
    return min(MAX_EF_SEARCH, max(100, 2 * candidate_limit(limit)))


def search_sql(dimensions: int) -> str:
    """Arguments: $1 query vector, $2 tenant_id, $3 agent_id, $4 embedding_model or NULL,
    $5 "every scope" flag, $6 scopes admitted whole (text[]), $7/$8 (scope, scope_id) pairs
    (text[], uuid[]), $9 candidate limit, $10 min_score, $11 limit."""
    if dimensions <= HNSW_MAX_VECTOR_DIMENSIONS:
        distance = "embedding <=> $1::vector"
    else:
        distance = f"embedding::halfvec({dimensions}) <=> $1::vector::halfvec({dimensions})"
    columns = RULES.select_list
    return f"""
        SELECT {columns}, score FROM (
            SELECT {columns}, 1 - (embedding <=> $1::vector) AS score
            FROM rules
            WHERE tenant_id = $2 AND agent_id = $3 AND deleted_at IS NULL AND enabled
              AND embedding IS NOT NULL
              AND ($4::text IS NULL OR embedding_model = $4::text)
              AND ($5::boolean
                   OR scope = ANY($6::text[])
                   OR EXISTS (SELECT 1 FROM unnest($7::text[], $8::uuid[]) AS admitted(scope, scope_id)
                              WHERE admitted.scope = rules.scope AND admitted.scope_id = rules.scope_id))
            ORDER BY {distance}
            LIMIT $9
        ) AS candidates
        WHERE score >= $10
        ORDER BY score DESC, id
        LIMIT $11
    """
