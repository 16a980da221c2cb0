"""Config tables: agents, rules, scenarios, templates, variables, tool activations, migration
plans and scenario archives (the ConfigStore).

Revision ID: 0002
Revises: 0001

- Every table has ``tenant_id`` and indexes that start with it. Children reference
  ``agents(tenant_id, id)`` with composite foreign keys, so a rule can never point at another
  tenant's agent; they are removed with a hard-deleted agent (CASCADE; soft deletes are done by
  the store).
- Live names are unique through partial unique indexes (``WHERE deleted_at IS NULL``): agents
  per tenant, variables per agent. A soft-deleted name can be reused.
- Enums are text with CHECK constraints matching the StrEnum values; ranges (priority,
  temperature, ...) and name lengths are CHECKed too, so the database refuses what the models do.
- Names and tool ids use the "C" collation: lists ordered by name sort by code point on every
  server, like the in-memory reference, whatever the database's default locale.
- ``rules.embedding`` and ``scenarios.entry_embedding`` are ``vector(D)`` with an HNSW
  ``vector_cosine_ops`` index; pgvector indexes ``vector`` up to 2000 dimensions, so for
  D > 2000 the index is on ``embedding::halfvec(D)`` (the store's query repeats the expression)
  and exact scores still come from the full-precision column. The columns are stored PLAIN (no
  TOAST: exact scans and parallel HNSW builds are much faster) while a vector fits comfortably in
  a heap page; a PLAIN column cannot move out of line, so above ``PLAIN_MAX_DIMENSIONS`` a row
  would exceed the page and the columns are EXTERNAL instead (out of line, uncompressed).
- Lists and dicts that are never queried (steps, tags, attached ids, policy overrides, maps, the
  scope filter, archived snapshots) are JSONB columns named after their field.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from focal.db.migrations_support import HNSW_MAX_VECTOR_DIMENSIONS, embedding_dimensions

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pgvector's HNSW index takes halfvec up to 4000 dimensions.
HNSW_MAX_HALFVEC_DIMENSIONS = 4000
# A PLAIN vector takes 8 + 4*D bytes inside the row; heap rows are capped at about 8160 bytes and
# the other columns of a rule or scenario need up to ~300 bytes even with their text toasted.
PLAIN_MAX_DIMENSIONS = 1900

TABLES = (
    "scenario_archives",
    "migration_plans",
    "tool_activations",
    "variables",
    "templates",
    "scenarios",
    "rules",
    "agents",
)

_NAME = 'text COLLATE "C" NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255)'
_TIMESTAMPS = """
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz"""
_SCOPE = """
    scope text NOT NULL DEFAULT 'GLOBAL' CHECK (scope IN ('GLOBAL', 'SCENARIO', 'STEP')),
    scope_id uuid"""


def _owned_by_agent(table: str) -> str:
    return (
        f"CONSTRAINT {table}_agent_fkey FOREIGN KEY (tenant_id, agent_id) "
        "REFERENCES agents (tenant_id, id) ON DELETE CASCADE"
    )


def _scope_id_matches_scope(table: str) -> str:
    return f"CONSTRAINT {table}_scope_id_check CHECK ((scope = 'GLOBAL') = (scope_id IS NULL))"


def embedding_index_sql(table: str, column: str, dimensions: int) -> str:
    """The HNSW cosine index on ``table.column`` for this dimension (see the module docstring)."""
    if dimensions <= HNSW_MAX_VECTOR_DIMENSIONS:
        target = f"{column} vector_cosine_ops"
    elif dimensions <= HNSW_MAX_HALFVEC_DIMENSIONS:
        target = f"({column}::halfvec({dimensions})) halfvec_cosine_ops"
    else:
        raise ValueError(
            f"embeddings of {dimensions} dimensions cannot be HNSW-indexed (pgvector's limit is "
            f"{HNSW_MAX_HALFVEC_DIMENSIONS} with halfvec): choose a smaller FOCAL_EMBEDDING__DIMENSIONS"
        )
    return f"CREATE INDEX {table}_{column}_hnsw_idx ON {table} USING hnsw ({target})"


def _vector_storage_sql(table: str, column: str, dimensions: int) -> str:
    storage = "PLAIN" if dimensions <= PLAIN_MAX_DIMENSIONS else "EXTERNAL"
    return f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {storage}"


def upgrade() -> None:
    d = embedding_dimensions()
    index_sql = [  # built first: an unusable dimension fails before anything is created
        embedding_index_sql("rules", "embedding", d),
        embedding_index_sql("scenarios", "entry_embedding", d),
    ]
    op.execute(
        f"""
        CREATE TABLE agents (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            name {_NAME},
            description text,
            system_prompt text,
            default_model text CHECK (char_length(default_model) <= 255),
            temperature double precision NOT NULL DEFAULT 0.7 CHECK (temperature BETWEEN 0 AND 2),
            max_tokens integer NOT NULL DEFAULT 1024 CHECK (max_tokens BETWEEN 1 AND 200000),
            enabled boolean NOT NULL DEFAULT true,
            current_version integer NOT NULL DEFAULT 1 CHECK (current_version >= 1),{_TIMESTAMPS},
            CONSTRAINT agents_tenant_id_id_key UNIQUE (tenant_id, id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX agents_live_name_key ON agents (tenant_id, name) WHERE deleted_at IS NULL"
    )
    op.execute(
        "CREATE INDEX agents_tenant_created_idx ON agents (tenant_id, created_at DESC, id) "
        "WHERE deleted_at IS NULL"
    )

    op.execute(
        f"""
        CREATE TABLE rules (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            name {_NAME},
            description text,
            condition_text text NOT NULL CHECK (condition_text <> ''),
            action_text text NOT NULL CHECK (action_text <> ''),{_SCOPE},
            priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
            enabled boolean NOT NULL DEFAULT true,
            max_fires_per_session integer NOT NULL DEFAULT 0 CHECK (max_fires_per_session >= 0),
            cooldown_turns integer NOT NULL DEFAULT 0 CHECK (cooldown_turns >= 0),
            is_hard_constraint boolean NOT NULL DEFAULT false,
            attached_tool_ids jsonb NOT NULL DEFAULT '[]'::jsonb,
            attached_template_ids jsonb NOT NULL DEFAULT '[]'::jsonb,
            embedding vector({d}),
            embedding_model text,{_TIMESTAMPS},
            {_scope_id_matches_scope("rules")},
            {_owned_by_agent("rules")}
        )
        """
    )
    op.execute(_vector_storage_sql("rules", "embedding", d))
    op.execute(
        "CREATE INDEX rules_tenant_agent_priority_idx ON rules "
        "(tenant_id, agent_id, priority DESC, created_at, id) WHERE deleted_at IS NULL"
    )
    op.execute(
        "CREATE INDEX rules_tenant_agent_scope_idx ON rules (tenant_id, agent_id, scope, scope_id) "
        "WHERE deleted_at IS NULL"
    )
    op.execute(index_sql[0])
    op.execute(  # tenant and agent are far from independent: tell the planner
        "CREATE STATISTICS rules_tenant_agent_stats (ndistinct, dependencies) "
        "ON tenant_id, agent_id FROM rules"
    )

    op.execute(
        f"""
        CREATE TABLE scenarios (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            name {_NAME},
            description text,
            version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
            entry_step_id uuid NOT NULL,
            entry_condition_text text,
            entry_embedding vector({d}),
            embedding_model text,
            steps jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array' AND jsonb_array_length(steps) >= 1),
            tags jsonb NOT NULL DEFAULT '[]'::jsonb,
            enabled boolean NOT NULL DEFAULT true,{_TIMESTAMPS},
            {_owned_by_agent("scenarios")}
        )
        """
    )
    op.execute(_vector_storage_sql("scenarios", "entry_embedding", d))
    op.execute(
        "CREATE INDEX scenarios_tenant_agent_name_idx ON scenarios (tenant_id, agent_id, name, id) "
        "WHERE deleted_at IS NULL"
    )
    op.execute(index_sql[1])

    op.execute(
        f"""
        CREATE TABLE templates (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            name {_NAME},
            text text NOT NULL CHECK (text <> ''),
            mode text NOT NULL DEFAULT 'SUGGEST'
                CHECK (mode IN ('SUGGEST', 'EXCLUSIVE', 'FALLBACK')),{_SCOPE},
            {_TIMESTAMPS.strip()},
            {_scope_id_matches_scope("templates")},
            {_owned_by_agent("templates")}
        )
        """
    )
    op.execute(
        "CREATE INDEX templates_tenant_agent_name_idx ON templates (tenant_id, agent_id, name, id) "
        "WHERE deleted_at IS NULL"
    )

    op.execute(
        f"""
        CREATE TABLE variables (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            name {_NAME} CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
            description text,
            default_value jsonb,
            update_policy text NOT NULL DEFAULT 'REPLACE'
                CHECK (update_policy IN ('REPLACE', 'APPEND', 'MERGE')),
            resolver_tool_id text,{_TIMESTAMPS},
            {_owned_by_agent("variables")}
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX variables_live_name_key ON variables (tenant_id, agent_id, name) "
        "WHERE deleted_at IS NULL"
    )

    op.execute(
        f"""
        CREATE TABLE tool_activations (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            tool_id text COLLATE "C" NOT NULL CHECK (char_length(tool_id) BETWEEN 1 AND 255),
            enabled boolean NOT NULL DEFAULT true,
            policy_overrides jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT tool_activations_agent_tool_key UNIQUE (tenant_id, agent_id, tool_id),
            {_owned_by_agent("tool_activations")}
        )
        """
    )

    op.execute(
        """
        CREATE TABLE migration_plans (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            scenario_id uuid NOT NULL,
            from_version integer NOT NULL CHECK (from_version >= 1),
            to_version integer NOT NULL,
            status text NOT NULL DEFAULT 'DRAFT'
                CHECK (status IN ('DRAFT', 'APPROVED', 'DEPLOYED', 'REJECTED')),
            transformation_map jsonb NOT NULL DEFAULT '{}'::jsonb,
            anchor_policies jsonb NOT NULL DEFAULT '{}'::jsonb,
            scope_filter jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            approved_at timestamptz,
            deployed_at timestamptz,
            CONSTRAINT migration_plans_forward_only CHECK (to_version > from_version)
        )
        """
    )
    op.execute(
        "CREATE INDEX migration_plans_tenant_created_idx ON migration_plans (tenant_id, created_at DESC, id)"
    )
    op.execute(
        "CREATE INDEX migration_plans_tenant_versions_idx ON migration_plans "
        "(tenant_id, scenario_id, from_version, to_version)"
    )

    op.execute(
        """
        CREATE TABLE scenario_archives (
            tenant_id uuid NOT NULL,
            scenario_id uuid NOT NULL,
            version integer NOT NULL CHECK (version >= 1),
            scenario jsonb NOT NULL,
            archived_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, scenario_id, version)
        )
        """
    )


def downgrade() -> None:
    for table in TABLES:  # children first; indexes, constraints and statistics go with their table
        op.execute(f"DROP TABLE IF EXISTS {table}")
