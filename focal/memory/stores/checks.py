"""Input checks and shared semantics of every MemoryStore backend.

Each backend calls these before it touches its storage, so bad input raises the same
``InvalidDataError`` everywhere and nothing is written. The models refuse most of this at
construction already, but ``model_construct`` and ``model_copy(update=...)`` skip validation,
and the store is the boundary that must not trust its caller.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from focal.errors import InvalidDataError
from focal.memory.models import Entity, Episode, Relationship
from focal.validation import (
    check_aware,
    check_limit,
    check_min_score,
    check_storable,
    check_text,
    check_vector,
    checked_vector,
    float32,
    json_text,
)

MIN_TRAVERSAL_DEPTH = 1
MAX_TRAVERSAL_DEPTH = 5

# A "term" of a text search: a run of letters, digits or underscores, compared lower-cased.
_TERM = re.compile(r"\w+")


def check_validity_window(valid_from: datetime, valid_to: datetime | None, what: str) -> None:
    check_aware(valid_from, f"{what}.valid_from")
    check_aware(valid_to, f"{what}.valid_to")
    if valid_to is not None and valid_to <= valid_from:
        raise InvalidDataError(f"{what}.valid_to ({valid_to}) must be after valid_from ({valid_from})")


def check_episode(episode: Episode, dimensions: int) -> None:
    check_vector(episode.embedding, dimensions, what="episode embedding")
    if episode.embedding is not None:
        float32(episode.embedding)  # pgvector stores float32: a larger value is refused, not made inf
    if episode.embedding is not None and not episode.embedding_model:
        raise InvalidDataError("episode.embedding_model is required when embedding is set")
    check_validity_window(episode.valid_from, episode.valid_to, "episode")
    check_aware(episode.recorded_at, "episode.recorded_at")
    check_storable(episode, "episode")
    json_text(episode.metadata, "episode.metadata")  # plain JSON: no datetime, tuple, ...


def check_entity(entity: Entity) -> None:
    check_aware(entity.created_at, "entity.created_at")
    check_aware(entity.updated_at, "entity.updated_at")
    check_storable(entity, "entity")
    json_text(entity.attributes, "entity.attributes")


def check_relationship(relationship: Relationship) -> None:
    check_validity_window(relationship.valid_from, relationship.valid_to, "relationship")
    check_storable(relationship, "relationship")
    json_text(relationship.metadata, "relationship.metadata")


def check_vector_search(
    query_embedding: Sequence[float],
    dimensions: int,
    limit: int,
    min_score: float,
    as_of: datetime | None,
    *,
    embedding_model: str | None = None,
) -> list[float]:
    """The arguments of ``vector_search_episodes`` that every backend refuses alike; returns the
    query rounded to float32, as the stored embeddings are (every backend scores that)."""
    query = checked_vector(query_embedding, dimensions, what="query embedding")
    check_text(embedding_model, "embedding_model")
    check_limit(limit)
    check_min_score(min_score)
    check_aware(as_of, "as_of")
    return query


def check_max_depth(max_depth: int) -> None:
    if not MIN_TRAVERSAL_DEPTH <= max_depth <= MAX_TRAVERSAL_DEPTH:
        raise InvalidDataError(
            f"max_depth must be between {MIN_TRAVERSAL_DEPTH} and {MAX_TRAVERSAL_DEPTH}, got {max_depth}"
        )


def check_text_query(query: str) -> None:
    """A blank query is a caller bug, not a search; a query without any word finds nothing."""
    check_text(query, "text search query")
    if not query.strip():
        raise InvalidDataError("text search query is empty")


def text_terms(text: str) -> list[str]:
    """Every lower-cased term of ``text``, repetitions included."""
    return [term.lower() for term in _TERM.findall(text)]


def query_terms(text: str) -> list[str]:
    """The distinct lower-cased terms of ``text``, in order of first appearance."""
    return list(dict.fromkeys(text_terms(text)))


def is_valid_at(valid_from: datetime, valid_to: datetime | None, instant: datetime) -> bool:
    """``valid_from <= instant < valid_to``; an open ``valid_to`` never ends."""
    return valid_from <= instant and (valid_to is None or instant < valid_to)
