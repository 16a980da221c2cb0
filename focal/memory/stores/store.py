"""The MemoryStore interface: episodes and a bi-temporal knowledge graph.

Rules every backend follows (proven by ``tests/contract/test_memory_store.py``):

- every call filters on ``tenant_id``; returned objects are copies;
- embeddings (stored and queries) must have ``embedding_dimensions`` finite floats that fit a
  float32, with a length between 1e-15 and 1e15 (``focal.validation.checked_vector``; else
  ``InvalidDataError``);
- scores are the cosine similarity of the float32 vectors, rounded to 12 decimals
  (``focal.validation.CosineScorer``: the same value on every backend, exactly 1.0 for the same
  direction and 0.0 for orthogonal vectors), sorted descending with ties on id (however many tie),
  filtered by ``score >= min_score``; a given ``embedding_model`` restricts the search to rows
  embedded by that model;
- validity: without ``as_of`` only rows valid now are returned; with ``as_of`` only rows with
  ``valid_from <= as_of < valid_to`` (an open ``valid_to`` is still valid);
- ``add_*`` with an id that already exists is a ``ConflictError`` (memory is appended, not
  overwritten);
- ``valid_to`` must be after ``valid_from`` and ``as_of`` must be timezone-aware
  (``InvalidDataError``); deleting an episode frees its id;
- text search matches any word of the query (a blank query is ``InvalidDataError``) and ranks by
  the number of distinct query words matched; PostgreSQL also stems and drops stop words;
- ``limit`` is 1..1000 (``InvalidDataError``); an empty result is an empty list, never an error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from focal.memory.models import Entity, Episode, Relationship


class MemoryStore(ABC):
    embedding_dimensions: int
    """The length every embedding must have; each backend sets it from its constructor."""

    @abstractmethod
    async def add_episode(self, episode: Episode) -> UUID: ...

    @abstractmethod
    async def add_episodes(self, episodes: Sequence[Episode]) -> list[UUID]:
        """Add several episodes in one write: all of them, or none (an invalid episode or an
        existing id fails the whole batch). An empty batch is a no-op."""

    @abstractmethod
    async def get_episode(self, tenant_id: UUID, episode_id: UUID) -> Episode | None: ...

    @abstractmethod
    async def vector_search_episodes(
        self,
        query_embedding: Sequence[float],
        tenant_id: UUID,
        agent_id: UUID,
        *,
        customer_profile_id: UUID | None = None,
        limit: int = 10,
        min_score: float = 0.0,
        embedding_model: str | None = None,
        as_of: datetime | None = None,
    ) -> list[tuple[Episode, float]]: ...

    @abstractmethod
    async def text_search_episodes(
        self,
        query: str,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        customer_profile_id: UUID | None = None,
        limit: int = 10,
    ) -> list[Episode]:
        """Currently valid episodes matching the words of ``query``, most relevant first
        (PostgreSQL full-text ranking; the in-memory reference ranks by matched-term count)."""

    @abstractmethod
    async def delete_by_group(self, tenant_id: UUID, group_id: str) -> int:
        """Delete every episode of the group; returns how many were deleted."""

    @abstractmethod
    async def add_entity(self, entity: Entity) -> UUID: ...

    @abstractmethod
    async def get_entity(self, tenant_id: UUID, entity_id: UUID) -> Entity | None: ...

    @abstractmethod
    async def get_entities(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        entity_type: str | None = None,
        customer_profile_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Entity]:
        """Entities by name asc, then id."""

    @abstractmethod
    async def add_relationship(self, relationship: Relationship) -> UUID:
        """Both entities must exist in the relationship's tenant (``NotFoundError`` otherwise)."""

    @abstractmethod
    async def traverse_from_entities(
        self,
        tenant_id: UUID,
        entity_ids: Sequence[UUID],
        *,
        relationship_types: Sequence[str] | None = None,
        max_depth: int = 2,
        as_of: datetime | None = None,
    ) -> list[Relationship]:
        """Relationships reachable from ``entity_ids`` within ``max_depth`` hops (1..5, else
        ``InvalidDataError``), following edges in both directions, each edge once, cycle-safe.
        Ordered by depth first reached, then id."""

    @abstractmethod
    async def delete_customer_data(self, tenant_id: UUID, customer_profile_id: UUID) -> int:
        """Erase a customer's episodes, entities and their relationships; returns rows deleted."""
