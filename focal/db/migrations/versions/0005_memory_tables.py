"""Memory tables: episodes, entities, relationships.

Revision ID: 0005
Revises: 0004

- ``episodes.embedding`` is ``vector(D)`` stored PLAIN (no TOAST: exact scans and parallel HNSW
  builds are much faster; above 1900 dimensions the row would not fit a page, so EXTERNAL) with
  an HNSW ``vector_cosine_ops`` index (m 16, ef_construction 32). pgvector indexes ``vector`` up
  to 2000 dimensions, so for D > 2000 the index is on the expression ``embedding::halfvec(D)``
  (which the store's queries repeat) and exact scores still come from the full-precision column.
- ``episodes`` is hash-partitioned by ``tenant_id`` (16 partitions, each with its own indexes),
  primary key ``(tenant_id, id)``. A partitioned table cannot enforce a unique ``id`` alone, so
  ``episode_ids`` registers every id (primary key ``id``, foreign key to the episode with ON DELETE
  CASCADE): an id already used by any tenant is a unique violation.
- ``episodes.search_vector`` is a generated ``tsvector`` (english) with a GIN index, for ranked
  full-text search.
- Bi-temporal columns (``valid_from``/``valid_to``, ``recorded_at``) are indexed behind
  ``tenant_id, agent_id``; extended statistics on ``(tenant_id, agent_id)`` tell the planner how
  many rows one tenant's agent really has (the two columns are far from independent).
- ``relationships`` reference ``entities(tenant_id, id)`` with composite foreign keys, so an edge
  can only join entities of its own tenant, and they go away with their entities (CASCADE).
- ``entities.name`` uses the "C" collation: ``get_entities`` orders by code point on every server,
  like the in-memory reference, whatever the database's default locale.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from focal.db.migrations_support import HNSW_MAX_VECTOR_DIMENSIONS, embedding_dimensions

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pgvector's HNSW index takes halfvec up to 4000 dimensions.
HNSW_MAX_HALFVEC_DIMENSIONS = 4000
# HNSW build parameters. ef_construction 32 instead of pgvector's 64 (the minimum is 2 x m) halves
# the CPU of every insert (1.7 instead of 3.6 ms per 1536-d row here, so ingestion with the index
# live reaches a few hundred rows/s per core) and of the build, and did not lower recall@10 on
# clustered 1536-d data at the store's search settings (benchmarks/vector_search.py).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 32
# A PLAIN (never TOASTed) column must fit in the 8 kB heap page with the rest of the row: a
# vector takes 4 bytes per dimension plus 8, and the row needs a few hundred bytes more (the
# other columns, or TOAST pointers to them). Larger vectors are stored EXTERNAL (out of line,
# uncompressed: embeddings do not compress).
PLAIN_STORAGE_MAX_DIMENSIONS = 1900

# Episodes are hash-partitioned by tenant: every query names its tenant, so it reads one
# partition, whose HNSW graph holds only that tenant's rows and those of a few others. A filtered
# vector search then wastes far less work on other tenants' neighbours (see the store).
EPISODE_PARTITIONS = 16


def episode_embedding_storage(dimensions: int) -> str:
    return "PLAIN" if dimensions <= PLAIN_STORAGE_MAX_DIMENSIONS else "EXTERNAL"


def episode_embedding_index_sql(dimensions: int) -> str:
    """The HNSW index on episode embeddings for this dimension (see the module docstring)."""
    if dimensions <= HNSW_MAX_VECTOR_DIMENSIONS:
        target = "embedding vector_cosine_ops"
    elif dimensions <= HNSW_MAX_HALFVEC_DIMENSIONS:
        target = f"(embedding::halfvec({dimensions})) halfvec_cosine_ops"
    else:
        raise ValueError(
            f"episode embeddings of {dimensions} dimensions cannot be HNSW-indexed "
            f"(pgvector's limit is {HNSW_MAX_HALFVEC_DIMENSIONS} with halfvec): choose a smaller "
            "embedding dimension (FOCAL_EMBEDDING__DIMENSIONS)"
        )
    return (
        f"CREATE INDEX episodes_embedding_hnsw_idx ON episodes USING hnsw ({target}) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )


def upgrade() -> None:
    dimensions = embedding_dimensions()
    index_sql = episode_embedding_index_sql(dimensions)  # fails before anything is created
    op.execute(
        f"""
        CREATE TABLE episodes (
            id uuid NOT NULL,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            customer_profile_id uuid,
            session_id uuid,
            group_id varchar(255),
            content text NOT NULL CONSTRAINT episodes_content_not_empty CHECK (content <> ''),
            episode_type text NOT NULL
                CONSTRAINT episodes_episode_type_check
                CHECK (episode_type IN ('TURN', 'SUMMARY', 'FACT', 'EVENT')),
            importance double precision NOT NULL
                CONSTRAINT episodes_importance_range CHECK (importance >= 0 AND importance <= 1),
            embedding vector({dimensions}),
            embedding_model text,
            valid_from timestamptz NOT NULL,
            valid_to timestamptz,
            recorded_at timestamptz NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            search_vector tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED,
            CONSTRAINT episodes_validity_window CHECK (valid_to IS NULL OR valid_to > valid_from),
            CONSTRAINT episodes_pkey PRIMARY KEY (tenant_id, id)
        ) PARTITION BY HASH (tenant_id)
        """
    )
    for remainder in range(EPISODE_PARTITIONS):
        op.execute(
            f"CREATE TABLE episodes_p{remainder:02d} PARTITION OF episodes "
            f"FOR VALUES WITH (MODULUS {EPISODE_PARTITIONS}, REMAINDER {remainder})"
        )
    # recurses into the partitions
    op.execute(
        f"ALTER TABLE episodes ALTER COLUMN embedding SET STORAGE {episode_embedding_storage(dimensions)}"
    )
    # The search scope (tenant, agent, customer, validity, model) in one index: the vector search
    # counts its scope with an index-only scan to choose between an exact and an HNSW plan.
    op.execute(
        "CREATE INDEX episodes_scope_idx ON episodes "
        "(tenant_id, agent_id, customer_profile_id, valid_from, valid_to) INCLUDE (embedding_model)"
    )
    op.execute(
        "CREATE INDEX episodes_tenant_customer_idx ON episodes (tenant_id, customer_profile_id) "
        "WHERE customer_profile_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX episodes_tenant_group_idx ON episodes (tenant_id, group_id) WHERE group_id IS NOT NULL"
    )
    op.execute("CREATE INDEX episodes_recorded_at_idx ON episodes (tenant_id, agent_id, recorded_at)")
    op.execute("CREATE INDEX episodes_search_vector_gin_idx ON episodes USING gin (search_vector)")
    op.execute(index_sql)
    op.execute(
        "CREATE STATISTICS episodes_tenant_agent_stats (ndistinct, dependencies) "
        "ON tenant_id, agent_id FROM episodes"
    )

    op.execute(
        """
        CREATE TABLE episode_ids (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            CONSTRAINT episode_ids_episode_fkey FOREIGN KEY (tenant_id, id)
                REFERENCES episodes (tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute("CREATE INDEX episode_ids_tenant_id_idx ON episode_ids (tenant_id, id)")

    op.execute(
        """
        CREATE TABLE entities (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            customer_profile_id uuid,
            name varchar(255) COLLATE "C" NOT NULL CONSTRAINT entities_name_not_empty CHECK (name <> ''),
            entity_type varchar(100) NOT NULL
                CONSTRAINT entities_entity_type_not_empty CHECK (entity_type <> ''),
            canonical_name varchar(255),
            attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            CONSTRAINT entities_tenant_id_id_key UNIQUE (tenant_id, id)
        )
        """
    )
    op.execute("CREATE INDEX entities_tenant_agent_name_idx ON entities (tenant_id, agent_id, name, id)")
    op.execute(
        "CREATE INDEX entities_tenant_customer_idx ON entities (tenant_id, customer_profile_id) "
        "WHERE customer_profile_id IS NOT NULL"
    )

    op.execute(
        """
        CREATE TABLE relationships (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            source_entity_id uuid NOT NULL,
            target_entity_id uuid NOT NULL,
            relationship_type varchar(100) NOT NULL
                CONSTRAINT relationships_type_not_empty CHECK (relationship_type <> ''),
            confidence double precision NOT NULL
                CONSTRAINT relationships_confidence_range CHECK (confidence >= 0 AND confidence <= 1),
            valid_from timestamptz NOT NULL,
            valid_to timestamptz,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT relationships_validity_window CHECK (valid_to IS NULL OR valid_to > valid_from),
            CONSTRAINT relationships_source_fkey FOREIGN KEY (tenant_id, source_entity_id)
                REFERENCES entities (tenant_id, id) ON DELETE CASCADE,
            CONSTRAINT relationships_target_fkey FOREIGN KEY (tenant_id, target_entity_id)
                REFERENCES entities (tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute("CREATE INDEX relationships_tenant_source_idx ON relationships (tenant_id, source_entity_id)")
    op.execute("CREATE INDEX relationships_tenant_target_idx ON relationships (tenant_id, target_entity_id)")


def downgrade() -> None:
    # Indexes, constraints and statistics go with their tables.
    op.execute("DROP TABLE IF EXISTS relationships")
    op.execute("DROP TABLE IF EXISTS entities")
    op.execute("DROP TABLE IF EXISTS episode_ids")
    op.execute("DROP TABLE IF EXISTS episodes")
