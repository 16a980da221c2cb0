"""What migration revisions (and ``env.py``) share: the embedding dimension and the audit guard.

Embedding dimension
-------------------
Revisions call ``embedding_dimensions()`` when they create ``vector(D)`` columns. The value comes,
in this order, from the Alembic config attribute ``embedding_dimensions`` (set by
``focal.db.migrate.upgrade(..., embedding_dimensions=N)`` and by ``focal db upgrade``), from
``alembic -x embedding_dimensions=N`` on the plain Alembic CLI, else the default 1536
(``FOCAL_EMBEDDING__DIMENSIONS``'s default).

The dimension is fixed when the tables are created: changing it later needs a new revision
that re-creates the columns (and re-embeds the rows), not a different value on upgrade. So an
upgrade that states a dimension first reads every ``vector``/``halfvec`` column of the schema
from the catalog (``EMBEDDING_COLUMNS_SQL``, whatever revision made it) and refuses when one
differs (``dimension_mismatch``): otherwise a partial downgrade followed by an upgrade with
another dimension would leave columns of two sizes behind.

Audit guard
-----------
Dropping the audit tables destroys the audit trail. The downgrade of the revision that made them
calls ``refuse_to_drop_audit_rows`` first: it refuses while they hold rows unless the run was
forced (config attribute ``force_audit_downgrade``, set by ``focal db downgrade REV --force``, or
``alembic -x force_audit_downgrade=true``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_EMBEDDING_DIMENSIONS = 1536
EMBEDDING_DIMENSIONS_ATTRIBUTE = "embedding_dimensions"
FORCE_AUDIT_DOWNGRADE_ATTRIBUTE = "force_audit_downgrade"
# pgvector indexes `vector` up to 2000 dimensions; larger embeddings index a `halfvec` expression.
HNSW_MAX_VECTOR_DIMENSIONS = 2000
# Counted up to this many rows per table in the audit guard's message (a full count could be slow).
_AUDIT_ROWS_SHOWN = 1000

# Every vector/halfvec column of the tables in the current schema (the one Focal migrates), as
# "table.column" -> dimension. Partitions are left out: they repeat their parent's columns.
EMBEDDING_COLUMNS_SQL = """
SELECT c.relname || '.' || a.attname AS column_name, a.atttypmod AS dimensions
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
   AND NOT c.relispartition
   AND t.typname IN ('vector', 'halfvec') AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY 1
"""


def _stated(attribute: str) -> Any:
    """A value given by the caller: config attribute first, then ``-x attribute=value``."""
    from alembic import context

    value = context.config.attributes.get(attribute)
    if value is None:
        value = context.get_x_argument(as_dictionary=True).get(attribute)
    return value


def stated_embedding_dimensions() -> int | None:
    """The dimension the caller of this run asked for, or ``None`` (e.g. a downgrade)."""
    value = _stated(EMBEDDING_DIMENSIONS_ATTRIBUTE)
    if value is None:
        return None
    dimensions = int(value)
    if not 1 <= dimensions <= 16000:
        raise ValueError(f"embedding dimensions must be 1..16000 (pgvector's limit), got {dimensions}")
    return dimensions


def embedding_dimensions() -> int:
    """The embedding dimension for ``vector(D)`` columns of the migration being run."""
    stated = stated_embedding_dimensions()
    return stated if stated is not None else DEFAULT_EMBEDDING_DIMENSIONS


def dimension_mismatch(columns: Mapping[str, int], expected: int) -> str | None:
    """What is wrong when ``columns`` (``table.column`` -> D) are not all ``expected``, else None.

    The text names both sizes and the columns, e.g. "the schema's embedding columns are vector(1536)
    (rules.embedding, ...), not 384" or, for columns of several sizes, each column with its size.
    """
    sizes = set(columns.values())
    if sizes <= {expected}:
        return None
    if len(sizes) > 1:
        listed = ", ".join(f"{name}={size}" for name, size in sorted(columns.items()))
        return (
            f"the schema's embedding columns have mixed dimensions ({listed}), and {expected} was asked "
            "for: the schema is unusable until every column has one size (downgrade below the odd "
            "columns and upgrade again with the dimension of the others, or migrate a fresh database)"
        )
    (size,) = sizes
    return f"the schema's embedding columns are vector({size}) ({', '.join(sorted(columns))}), not {expected}"


def check_upgrade_dimensions(connection: Any, dimensions: int) -> None:
    """Refuse (``ConfigurationError``) an upgrade whose dimension differs from the schema's columns.

    ``connection`` is the SQLAlchemy connection of the migration run (inside its transaction and
    advisory lock, so a concurrent upgrade cannot add columns between this check and the run).
    """
    from focal.errors import ConfigurationError

    rows = connection.exec_driver_sql(EMBEDDING_COLUMNS_SQL).all()
    problem = dimension_mismatch({str(name): int(size) for name, size in rows}, dimensions)
    if problem is not None:
        raise ConfigurationError(
            f"refusing to upgrade with embedding dimension {dimensions}: {problem}. The dimension is "
            "fixed when the tables are created; upgrade with the schema's dimension "
            "(--embedding-dimensions / FOCAL_EMBEDDING__DIMENSIONS), or migrate a fresh database"
        )


def audit_downgrade_forced() -> bool:
    value = _stated(FORCE_AUDIT_DOWNGRADE_ATTRIBUTE)
    return value is True or str(value).strip().lower() in {"1", "true", "yes"}


def refuse_to_drop_audit_rows(tables: Iterable[str]) -> None:
    """In a revision's ``downgrade``: refuse to drop ``tables`` while they hold rows, unless forced.

    Raises ``SchemaVersionError``; the run's single transaction then rolls back, so the revisions
    already downgraded in the same run are restored too: nothing changes.
    """
    from alembic import op

    from focal.errors import SchemaVersionError
    from focal.logging import get_logger

    bind = op.get_bind()
    held = {}
    for table in tables:
        rows = bind.exec_driver_sql(
            f'SELECT count(*) FROM (SELECT 1 FROM "{table}" LIMIT {_AUDIT_ROWS_SHOWN + 1}) AS sample'
        ).scalar_one()
        if rows:
            held[table] = f"{_AUDIT_ROWS_SHOWN}+" if rows > _AUDIT_ROWS_SHOWN else str(rows)
    if not held:
        return
    described = ", ".join(f"{table} has {rows} rows" for table, rows in held.items())
    if audit_downgrade_forced():
        get_logger("focal.db.migrate").warning("dropping the audit trail (forced downgrade)", tables=held)
        return
    raise SchemaVersionError(
        f"refusing to downgrade past the audit tables: {described}, and the downgrade would drop "
        "them with the audit trail. Export what you must keep, then run `focal db downgrade REV --force`"
    )
