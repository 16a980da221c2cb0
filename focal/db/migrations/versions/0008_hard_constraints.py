"""Hard constraints: rule checks, and what each turn's answer was checked against.

Revision ID: 0008
Revises: 0007

- ``rules.forbid_patterns`` / ``require_patterns`` (JSONB arrays of RE2 patterns, default ``[]``)
  and ``rules.judge_instructions`` (text, NULL = no judge). Only a hard constraint may carry
  them (CHECK, like the model's validator); pattern syntax and limits are checked by the store
  (``focal.alignment.constraint_patterns``), not by the database.
- ``rules_hard_constraints_idx``: a partial index over the live hard constraints of an agent,
  which every turn reads (``ConfigStore.get_hard_constraints``).
- ``turn_records.constraints_checked`` / ``constraints_failed`` (JSONB arrays, default ``[]``):
  the constraints a turn's answer was checked against and the violations found on its
  candidates. Existing turn records get empty lists (they were checked against nothing). Adding a
  column with a constant default rewrites no row, so the append-only trigger is not involved.

The downgrade drops what the upgrade added. Dropping the turn records' constraint columns erases
audit information, so it refuses while a turn record holds a checked constraint, unless forced
(``focal db downgrade REV --force``), like the downgrade that drops the audit tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from focal.db.migrations_support import audit_downgrade_forced

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON_ARRAY = "jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof({column}) = 'array')"


def upgrade() -> None:
    for column in ("forbid_patterns", "require_patterns"):
        op.execute(f"ALTER TABLE rules ADD COLUMN {column} {_JSON_ARRAY.format(column=column)}")
    op.execute("ALTER TABLE rules ADD COLUMN judge_instructions text")
    op.execute(
        "ALTER TABLE rules ADD CONSTRAINT rules_checks_need_hard_constraint_check CHECK ("
        "is_hard_constraint OR (forbid_patterns = '[]'::jsonb AND require_patterns = '[]'::jsonb "
        "AND judge_instructions IS NULL))"
    )
    op.execute(
        "CREATE INDEX rules_hard_constraints_idx ON rules "
        "(tenant_id, agent_id, priority DESC, created_at, id) WHERE is_hard_constraint AND deleted_at IS NULL"
    )
    for column in ("constraints_checked", "constraints_failed"):
        op.execute(f"ALTER TABLE turn_records ADD COLUMN {column} {_JSON_ARRAY.format(column=column)}")


def downgrade() -> None:
    bind = op.get_bind()
    checked = bind.exec_driver_sql(
        "SELECT count(*) FROM (SELECT 1 FROM turn_records WHERE constraints_checked <> '[]'::jsonb "
        "LIMIT 1001) AS sample"
    ).scalar_one()
    if checked and not audit_downgrade_forced():
        from focal.errors import SchemaVersionError

        shown = "1000+" if checked > 1000 else str(checked)
        raise SchemaVersionError(
            f"downgrade below 0008 would erase the hard-constraint checks of {shown} turn records "
            "(turn_records.constraints_checked / constraints_failed); run it with --force to accept that"
        )
    for column in ("constraints_failed", "constraints_checked"):
        op.execute(f"ALTER TABLE turn_records DROP COLUMN {column}")
    op.execute("DROP INDEX rules_hard_constraints_idx")
    op.execute("ALTER TABLE rules DROP CONSTRAINT rules_checks_need_hard_constraint_check")
    for column in ("judge_instructions", "require_patterns", "forbid_patterns"):
        op.execute(f"ALTER TABLE rules DROP COLUMN {column}")
