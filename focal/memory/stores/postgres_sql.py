"""SQL of the PostgreSQL MemoryStore, and conversions between rows and models.

Kept apart from ``postgres.py`` so the store reads as the plan (what runs when and why) and this
module as the statements. Parameters are numbered as each statement's docstring-comment says.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from focal.db.migrations_support import HNSW_MAX_VECTOR_DIMENSIONS
from focal.db.vector_ranking import band_sql
from focal.memory.models import Entity, Episode, Relationship
from focal.validation import json_text

EPISODE_COLUMNS = (
    "id",
    "tenant_id",
    "agent_id",
    "customer_profile_id",
    "session_id",
    "group_id",
    "content",
    "episode_type",
    "importance",
    "embedding",
    "embedding_model",
    "valid_from",
    "valid_to",
    "recorded_at",
    "metadata",
)
ENTITY_COLUMNS = (
    "id",
    "tenant_id",
    "agent_id",
    "customer_profile_id",
    "name",
    "entity_type",
    "canonical_name",
    "attributes",
    "created_at",
    "updated_at",
)
RELATIONSHIP_COLUMNS = (
    "id",
    "tenant_id",
    "source_entity_id",
    "target_entity_id",
    "relationship_type",
    "confidence",
    "valid_from",
    "valid_to",
    "metadata",
)
_EPISODE_SELECT = ", ".join(f"e.{column}" for column in EPISODE_COLUMNS)
_ENTITY_SELECT = ", ".join(ENTITY_COLUMNS)
_RELATIONSHIP_SELECT = ", ".join(f"r.{column}" for column in RELATIONSHIP_COLUMNS)


def _placeholders(count: int) -> str:
    return ", ".join(f"${i}" for i in range(1, count + 1))


# Episodes are partitioned by tenant, so their primary key is (tenant_id, id); the id registry
# episode_ids (primary key id) makes an id another tenant already uses a unique violation too.
INSERT_EPISODE = f"""
    WITH inserted AS (
        INSERT INTO episodes ({", ".join(EPISODE_COLUMNS)})
        VALUES ({_placeholders(len(EPISODE_COLUMNS) - 1)}, ${len(EPISODE_COLUMNS)}::jsonb)
        RETURNING id, tenant_id
    )
    INSERT INTO episode_ids (id, tenant_id) SELECT id, tenant_id FROM inserted
"""
# Registers the ids of a batch just copied into episodes (same transaction).
REGISTER_EPISODE_IDS = "INSERT INTO episode_ids (id, tenant_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])"
SELECT_EPISODE = f"SELECT {_EPISODE_SELECT} FROM episodes e WHERE e.tenant_id = $1 AND e.id = $2"

# $1 tenant, $2 agent, $3 customer or NULL, $4 embedding model or NULL, $5 as_of or NULL (= now)
_EPISODE_SCOPE = """
    e.tenant_id = $1 AND e.agent_id = $2
    AND ($3::uuid IS NULL OR e.customer_profile_id = $3)
    AND ($4::text IS NULL OR e.embedding_model = $4)
    AND e.valid_from <= COALESCE($5::timestamptz, now())
    AND (e.valid_to IS NULL OR e.valid_to > COALESCE($5::timestamptz, now()))
"""

# How many rows the search scope holds, counted up to $6 (a LIMIT bounds the probe's cost). The
# index (tenant_id, agent_id, customer_profile_id, valid_from, valid_to) INCLUDE (embedding_model)
# answers it with an index-only scan.
PROBE_SCOPE = f"SELECT count(*) FROM (SELECT 1 FROM episodes e WHERE {_EPISODE_SCOPE} LIMIT $6) AS scope"


def begin_hnsw_search_sql(ef_search: int) -> str:
    """Open the index plan's transaction and set its knobs, transaction-local, in one round trip
    (simple query protocol): iterative scan, ``ef_search``, and ``enable_sort = off``, without
    which the planner prefers "filter by tenant, then sort every row" whenever its estimates make
    that look cheaper (it did, on tables of a few thousand rows)."""
    return (
        "BEGIN READ ONLY; SET LOCAL hnsw.iterative_scan = relaxed_order; "
        f"SET LOCAL hnsw.ef_search = {int(ef_search)}; SET LOCAL enable_sort = off"
    )


# The "pg score" below is pgvector's 1 - (embedding <=> query): it only chooses candidates, whose
# real score the store computes (focal.db.vector_ranking), hence a floor slightly below min_score.
_SCORED_SCOPE = f"""
    SELECT {_EPISODE_SELECT}, 1 - (e.embedding <=> $6::vector) AS score
    FROM episodes e
    WHERE {_EPISODE_SCOPE} AND e.embedding IS NOT NULL
"""

# Exact scan: every row of the scope gets its pg score; no vector index. The best $8 rows with
# pg score >= $7 (floor) are the candidates, of which only the band comes back ($9 limit, $10
# twice the score margin; see band_sql). OFFSET 0 keeps the subquery from being flattened:
# flattened, the score expression would be computed twice per row.
VECTOR_SEARCH_EXACT = band_sql(
    f"SELECT * FROM ({_SCORED_SCOPE} OFFSET 0) AS scored WHERE score >= $7 ORDER BY score DESC, id LIMIT $8",
    floor="$7",
    limit="$9",
    double_margin="$10",
)

# The band of an exact search when it reaches past the candidates (ties at the cut): every row
# with pg score >= $7, but at most $8 (the search's limit) per identical embedding, the ones with
# the smallest ids: the others can never make the result, and a thousand copies of one vector
# must not cost a thousand rows.
VECTOR_SEARCH_BAND = f"""
    SELECT * FROM (
        SELECT scored.*, row_number() OVER (PARTITION BY scored.embedding ORDER BY scored.id) AS twin
        FROM ({_SCORED_SCOPE} OFFSET 0) AS scored
        WHERE scored.score >= $7
    ) AS band
    WHERE twin <= $8
    ORDER BY score DESC, id
"""


def vector_search_hnsw_sql(dimensions: int) -> str:
    """Index scan: the HNSW index yields the nearest $8 rows of the scope (iterative scan keeps
    going until enough rows pass the filter, or until ``hnsw.max_scan_tuples``); of those, the
    band comes back ($7 floor, $9 limit, $10 twice the score margin; see ``band_sql``), with
    ``found`` (how many the scan yielded) and ``lowest`` (their lowest pg score). The ORDER BY
    repeats the indexed expression: ``embedding``, or ``embedding::halfvec(D)`` above 2000
    dimensions (see migration 0005)."""
    if dimensions <= HNSW_MAX_VECTOR_DIMENSIONS:
        order = "e.embedding <=> $6::vector"
    else:
        order = f"(e.embedding::halfvec({dimensions})) <=> ($6::vector::halfvec({dimensions}))"
    return band_sql(f"{_SCORED_SCOPE} ORDER BY {order} LIMIT $8", floor="$7", limit="$9", double_margin="$10")


# $1 OR-query text (websearch syntax), $2 query text, $3 tenant, $4 agent, $5 customer, $6 limit.
# Ranked by the number of distinct query lexemes the episode contains (as the in-memory store
# counts terms), then ts_rank_cd, recorded_at desc, id.
TEXT_SEARCH = f"""
    WITH q AS (
        SELECT websearch_to_tsquery('english', $1) AS query,
               tsvector_to_array(to_tsvector('english', $2)) AS lexemes
    )
    SELECT {_EPISODE_SELECT}
    FROM episodes e, q
    WHERE e.tenant_id = $3 AND e.agent_id = $4
      AND ($5::uuid IS NULL OR e.customer_profile_id = $5)
      AND e.valid_from <= now() AND (e.valid_to IS NULL OR e.valid_to > now())
      AND e.search_vector @@ q.query
    ORDER BY length(e.search_vector) - length(ts_delete(e.search_vector, q.lexemes)) DESC,
             ts_rank_cd(e.search_vector, q.query) DESC,
             e.recorded_at DESC,
             e.id
    LIMIT $6
"""

DELETE_BY_GROUP = "DELETE FROM episodes WHERE tenant_id = $1 AND group_id = $2"

INSERT_ENTITY = (
    f"INSERT INTO entities ({', '.join(ENTITY_COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)"
)
SELECT_ENTITY = f"SELECT {_ENTITY_SELECT} FROM entities WHERE tenant_id = $1 AND id = $2"
# name has the "C" collation in the schema: code point order, like the in-memory store.
SELECT_ENTITIES = f"""
    SELECT {_ENTITY_SELECT} FROM entities
    WHERE tenant_id = $1 AND agent_id = $2
      AND ($3::text IS NULL OR entity_type = $3)
      AND ($4::uuid IS NULL OR customer_profile_id = $4)
    ORDER BY name, id
    LIMIT $5
"""

INSERT_RELATIONSHIP = (
    f"INSERT INTO relationships ({', '.join(RELATIONSHIP_COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)"
)

# $1 tenant, $2 start entity ids, $3 max_depth, $4 relationship types or NULL, $5 as_of or NULL.
_EDGE_FILTER = """
    r.tenant_id = $1
    AND ($4::text[] IS NULL OR r.relationship_type = ANY($4::text[]))
    AND r.valid_from <= COALESCE($5::timestamptz, now())
    AND (r.valid_to IS NULL OR r.valid_to > COALESCE($5::timestamptz, now()))
"""
# One recursive CTE. `walk` is a breadth-first walk over admitted edges in both directions; UNION
# (not UNION ALL) drops repeated (entity, depth) pairs and the depth bound ends every cycle, so
# it terminates on any graph with at most entities x max_depth rows. An entity's distance is its
# smallest depth; an edge's depth is one more than the smaller distance of its two ends, which is
# the breadth-first "depth first reached". Each edge comes out once (GROUP BY id).
TRAVERSE = f"""
    WITH RECURSIVE walk(entity_id, depth) AS (
        SELECT DISTINCT start.id, 0 FROM unnest($2::uuid[]) AS start(id)
        UNION
        SELECT step.entity_id, walk.depth + 1
        FROM walk
        CROSS JOIN LATERAL (
            SELECT r.target_entity_id AS entity_id FROM relationships r
            WHERE {_EDGE_FILTER} AND r.source_entity_id = walk.entity_id
            UNION ALL
            SELECT r.source_entity_id FROM relationships r
            WHERE {_EDGE_FILTER} AND r.target_entity_id = walk.entity_id
        ) AS step
        WHERE walk.depth < $3 - 1
    ),
    distance AS (
        SELECT entity_id, min(depth) AS depth FROM walk GROUP BY entity_id
    ),
    reached AS (
        SELECT r.id, d.depth FROM distance d
        JOIN relationships r ON r.source_entity_id = d.entity_id
        WHERE {_EDGE_FILTER}
        UNION ALL
        SELECT r.id, d.depth FROM distance d
        JOIN relationships r ON r.target_entity_id = d.entity_id
        WHERE {_EDGE_FILTER}
    ),
    edge_depth AS (
        SELECT id, min(depth) + 1 AS depth FROM reached GROUP BY id
    )
    SELECT {_RELATIONSHIP_SELECT}
    FROM edge_depth
    JOIN relationships r ON r.id = edge_depth.id
    ORDER BY edge_depth.depth, r.id
"""

# One statement, hence one transaction: the customer's episodes, their entities and every edge
# touching those entities. Edges are deleted explicitly (not left to ON DELETE CASCADE) so they
# are counted; the cascade then finds nothing left to do.
DELETE_CUSTOMER_DATA = """
    WITH doomed_entities AS (
        SELECT id FROM entities WHERE tenant_id = $1 AND customer_profile_id = $2
    ),
    deleted_relationships AS (
        DELETE FROM relationships
        WHERE tenant_id = $1
          AND (source_entity_id IN (SELECT id FROM doomed_entities)
               OR target_entity_id IN (SELECT id FROM doomed_entities))
        RETURNING 1
    ),
    deleted_entities AS (
        DELETE FROM entities WHERE tenant_id = $1 AND id IN (SELECT id FROM doomed_entities) RETURNING 1
    ),
    deleted_episodes AS (
        DELETE FROM episodes WHERE tenant_id = $1 AND customer_profile_id = $2 RETURNING 1
    )
    SELECT (SELECT count(*) FROM deleted_relationships)
         + (SELECT count(*) FROM deleted_entities)
         + (SELECT count(*) FROM deleted_episodes)
"""


def episode_values(episode: Episode) -> tuple[Any, ...]:
    return (
        episode.id,
        episode.tenant_id,
        episode.agent_id,
        episode.customer_profile_id,
        episode.session_id,
        episode.group_id,
        episode.content,
        episode.episode_type.value,
        episode.importance,
        episode.embedding,
        episode.embedding_model,
        episode.valid_from,
        episode.valid_to,
        episode.recorded_at,
        json_text(episode.metadata, "episode.metadata"),
    )


def entity_values(entity: Entity) -> tuple[Any, ...]:
    return (
        entity.id,
        entity.tenant_id,
        entity.agent_id,
        entity.customer_profile_id,
        entity.name,
        entity.entity_type,
        entity.canonical_name,
        json_text(entity.attributes, "entity.attributes"),
        entity.created_at,
        entity.updated_at,
    )


def relationship_values(relationship: Relationship) -> tuple[Any, ...]:
    return (
        relationship.id,
        relationship.tenant_id,
        relationship.source_entity_id,
        relationship.target_entity_id,
        relationship.relationship_type,
        relationship.confidence,
        relationship.valid_from,
        relationship.valid_to,
        json_text(relationship.metadata, "relationship.metadata"),
    )


def episode_from_row(row: asyncpg.Record) -> Episode:
    data = {column: row[column] for column in EPISODE_COLUMNS}
    data["metadata"] = json.loads(data["metadata"])
    return Episode.model_validate(data)


def entity_from_row(row: asyncpg.Record) -> Entity:
    data = {column: row[column] for column in ENTITY_COLUMNS}
    data["attributes"] = json.loads(data["attributes"])
    return Entity.model_validate(data)


def relationship_from_row(row: asyncpg.Record) -> Relationship:
    data = {column: row[column] for column in RELATIONSHIP_COLUMNS}
    data["metadata"] = json.loads(data["metadata"])
    return Relationship.model_validate(data)
