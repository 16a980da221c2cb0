"""What migration revisions read from their caller: the embedding dimension.

Revisions call ``embedding_dimensions()`` when they create ``vector(D)`` columns. The value comes,
in this order, from the Alembic config attribute ``embedding_dimensions`` (set by
``focal.db.migrate.upgrade(..., embedding_dimensions=N)`` and by ``focal db upgrade``), from
``alembic -x embedding_dimensions=N`` on the plain Alembic CLI, else the default 1536
(``FOCAL_EMBEDDING__DIMENSIONS``'s default).

The dimension is fixed when the tables are created: changing it later needs a new revision
that re-creates the columns (and re-embeds the rows), not a different value on upgrade.
"""

from __future__ import annotations

DEFAULT_EMBEDDING_DIMENSIONS = 1536
EMBEDDING_DIMENSIONS_ATTRIBUTE = "embedding_dimensions"
# pgvector indexes `vector` up to 2000 dimensions; larger embeddings index a `halfvec` expression.
HNSW_MAX_VECTOR_DIMENSIONS = 2000


def embedding_dimensions() -> int:
    """The embedding dimension for ``vector(D)`` columns of the migration being run."""
    from alembic import context

    value = context.config.attributes.get(EMBEDDING_DIMENSIONS_ATTRIBUTE)
    if value is None:
        value = context.get_x_argument(as_dictionary=True).get(EMBEDDING_DIMENSIONS_ATTRIBUTE)
    dimensions = int(value) if value is not None else DEFAULT_EMBEDDING_DIMENSIONS
    if not 1 <= dimensions <= 16000:
        raise ValueError(f"embedding dimensions must be 1..16000 (pgvector's limit), got {dimensions}")
    return dimensions
