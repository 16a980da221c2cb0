"""Config revisions, binary transition embeddings, tool id pattern.

Revision ID: 0006
Revises: 0005

- ``revision integer NOT NULL DEFAULT 1`` on agents, rules, scenarios, templates, variables and
  tool activations: the row's optimistic-concurrency counter, kept by the ConfigStore (+1 per
  save; conditional saves are ``UPDATE ... WHERE revision = $n``). Existing rows start at 1.
- Scenario transition embeddings leave the ``steps`` JSON for a ``transition_embeddings bytea``
  (scenarios and scenario archives): one entry per transition in step then transition order,
  each in pgvector's binary ``vector`` format (``vector_send``), an absent embedding being an
  entry of 0 dimensions (see ``focal.alignment.stores.scenario_codec``). Stored EXTERNAL: out of
  line and not compressed (float32 data does not compress; the attempt only costs CPU). Existing
  rows are converted in SQL; values become float32, like every other stored vector.
- ``tool_activations.tool_id`` must match ``^[a-z][a-z0-9_]{0,63}$``. The upgrade refuses to
  run (and changes nothing) while a row does not match, naming the offending ids: such ids
  could not be read, changed or deleted over the API anyway when they held a ``/``, and no tool
  outside the pattern can be defined. Rename or delete them, then upgrade again.

The downgrade restores the embeddings into the JSON (in Python: SQL cannot read the binary
format back) and drops what the upgrade added.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVISIONED_TABLES = ("agents", "rules", "scenarios", "templates", "variables", "tool_activations")
TOOL_ID_PATTERN = "^[a-z][a-z0-9_]{0,63}$"


def _transitions(step: str) -> str:
    """SQL: the transitions array of the JSONB ``step``, or an empty array when it has none."""
    return (
        f"CASE WHEN jsonb_typeof({step}->'transitions') = 'array' "
        f"THEN {step}->'transitions' ELSE '[]'::jsonb END"
    )


def _packed_embeddings(steps: str) -> str:
    """SQL: the bytea of the transition embeddings found in the JSONB array ``steps``."""
    return f"""COALESCE((
        SELECT string_agg(
            CASE WHEN jsonb_typeof(t.value->'condition_embedding') = 'array'
                 THEN vector_send((t.value->'condition_embedding')::text::vector)
                 ELSE '\\x00000000'::bytea END,
            ''::bytea ORDER BY s.n, t.n)
        FROM jsonb_array_elements({steps}) WITH ORDINALITY AS s(value, n),
             jsonb_array_elements({_transitions("s.value")}) WITH ORDINALITY AS t(value, n)
    ), ''::bytea)"""


def _steps_without_embeddings(steps: str) -> str:
    """SQL: the JSONB array ``steps`` with ``condition_embedding`` removed from every transition
    (steps without a transitions array are kept as they are)."""
    return f"""(
        SELECT jsonb_agg(
            CASE WHEN jsonb_typeof(s.value->'transitions') = 'array'
            THEN jsonb_set(s.value, '{{transitions}}', (
                SELECT COALESCE(jsonb_agg(
                    CASE WHEN jsonb_typeof(t.value) = 'object'
                         THEN t.value - 'condition_embedding' ELSE t.value END
                    ORDER BY t.n), '[]'::jsonb)
                FROM jsonb_array_elements(s.value->'transitions') WITH ORDINALITY AS t(value, n)
            )) ELSE s.value END
            ORDER BY s.n)
        FROM jsonb_array_elements({steps}) WITH ORDINALITY AS s(value, n)
    )"""


def upgrade() -> None:
    op.execute(
        f"""
        DO $$
        DECLARE offending text;
        BEGIN
            SELECT string_agg(quote_literal(tool_id), ', ') INTO offending FROM (
                SELECT DISTINCT tool_id FROM tool_activations
                WHERE tool_id !~ '{TOOL_ID_PATTERN}' ORDER BY tool_id LIMIT 20
            ) AS bad;
            IF offending IS NOT NULL THEN
                RAISE EXCEPTION 'tool activations have tool ids outside {TOOL_ID_PATTERN}: %', offending
                    USING HINT = 'rename them (UPDATE tool_activations SET tool_id = ...) or delete them, '
                                 'then run the upgrade again';
            END IF;
        END
        $$
        """
    )
    op.execute(
        "ALTER TABLE tool_activations ADD CONSTRAINT tool_activations_tool_id_pattern "
        f"CHECK (tool_id ~ '{TOOL_ID_PATTERN}')"
    )
    for table in REVISIONED_TABLES:
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN revision integer NOT NULL DEFAULT 1 "
            f"CONSTRAINT {table}_revision_check CHECK (revision >= 1)"
        )
    for table in ("scenarios", "scenario_archives"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN transition_embeddings bytea NOT NULL DEFAULT ''::bytea")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN transition_embeddings SET STORAGE EXTERNAL")
    op.execute(
        f"UPDATE scenarios SET transition_embeddings = {_packed_embeddings('steps')}, "
        f"steps = {_steps_without_embeddings('steps')} "
        "WHERE jsonb_typeof(steps) = 'array' AND jsonb_array_length(steps) > 0"
    )
    archived_steps = "scenario->'steps'"
    op.execute(
        "UPDATE scenario_archives SET "
        f"transition_embeddings = {_packed_embeddings(archived_steps)}, "
        f"scenario = jsonb_set(scenario, '{{steps}}', {_steps_without_embeddings(archived_steps)}) "
        f"WHERE jsonb_typeof({archived_steps}) = 'array' AND jsonb_array_length({archived_steps}) > 0"
    )


def _embedded_steps(steps: Any, packed: bytes) -> Any:
    """``steps`` with each transition's ``condition_embedding`` read back from ``packed`` (one
    entry per element of every transitions array, as the upgrade wrote them)."""
    offset = 0
    for step in steps if isinstance(steps, list) else ():
        transitions = step.get("transitions") if isinstance(step, dict) else None
        for transition in transitions if isinstance(transitions, list) else ():
            dimensions, _ = struct.unpack_from(">HH", packed, offset)
            offset += 4
            values = struct.unpack_from(f">{dimensions}f", packed, offset)
            offset += 4 * dimensions
            if isinstance(transition, dict):
                transition["condition_embedding"] = list(values) if dimensions else None
    if offset != len(packed):
        raise ValueError("transition embeddings do not match the steps; downgrade refused")
    return steps


def downgrade() -> None:
    connection = op.get_bind()
    scenarios = connection.execute(sa.text("SELECT id, steps::text, transition_embeddings FROM scenarios"))
    for scenario_id, steps, packed in scenarios.fetchall():
        connection.execute(
            sa.text("UPDATE scenarios SET steps = CAST(:steps AS jsonb) WHERE id = :id"),
            {"id": scenario_id, "steps": json.dumps(_embedded_steps(json.loads(steps), bytes(packed)))},
        )
    archives = connection.execute(
        sa.text(
            "SELECT tenant_id, scenario_id, version, scenario::text, transition_embeddings "
            "FROM scenario_archives"
        )
    )
    for tenant_id, scenario_id, version, snapshot, packed in archives.fetchall():
        document = json.loads(snapshot)
        if not isinstance(document, dict) or "steps" not in document:
            continue
        document["steps"] = _embedded_steps(document["steps"], bytes(packed))
        connection.execute(
            sa.text(
                "UPDATE scenario_archives SET scenario = CAST(:scenario AS jsonb) "
                "WHERE tenant_id = :tenant_id AND scenario_id = :scenario_id AND version = :version"
            ),
            {
                "tenant_id": tenant_id,
                "scenario_id": scenario_id,
                "version": version,
                "scenario": json.dumps(document),
            },
        )
    for table in ("scenarios", "scenario_archives"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN transition_embeddings")
    for table in REVISIONED_TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN revision")
    op.execute("ALTER TABLE tool_activations DROP CONSTRAINT tool_activations_tool_id_pattern")
