"""The in-memory reference MemoryStore: dictionaries, deep copies, exact search.

It defines the semantics every backend must match (``tests/contract/test_memory_store.py``):

- ids are unique across tenants: adding an existing id (of any tenant) is a ``ConflictError``;
- input is refused with ``InvalidDataError`` before anything is stored: embeddings of the wrong
  length, zero or non-finite; naive datetimes; ``valid_to <= valid_from``; dicts JSON cannot hold;
- vector search is an exact scan of the tenant's and agent's rows (optionally one customer's,
  one embedding model's), keeping rows valid at ``as_of`` (default: now), scored by
  ``CosineScorer`` (the query and the stored embeddings at float32, as pgvector has them), scores
  ``>= min_score``, sorted by score desc then id;
- text search splits text into lower-cased word terms (``\\w+``); an episode matches when it
  contains any query term. Currently valid matches rank by how many distinct query terms they
  contain (desc), then how often those terms occur (desc), then ``recorded_at`` desc, then id. A
  blank query is an ``InvalidDataError``. PostgreSQL matches with full-text search (stemming,
  stop words) and ranks by the same matched-term count, then ``ts_rank_cd``: both agree on the
  order by matched terms but may break ties differently;
- graph traversal is a breadth-first walk: the depth of an edge is one more than the smaller
  distance of its two ends from the start entities, edges deeper than ``max_depth`` are not
  returned, only edges of the given types valid at ``as_of`` (default: now) are walked.

Everything is copied on the way in and out, so callers never share objects with the store.
Embeddings are kept at single precision, as pgvector stores them, so both backends return the
same vectors and scores. No method awaits inside, so each one is atomic on the event loop
without a lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from focal.errors import ConflictError, NotFoundError
from focal.memory.models import Entity, Episode, Relationship
from focal.memory.stores.checks import (
    check_entity,
    check_episode,
    check_max_depth,
    check_relationship,
    check_text_query,
    check_vector_search,
    is_valid_at,
    query_terms,
    text_terms,
)
from focal.memory.stores.store import MemoryStore
from focal.models import utc_now
from focal.validation import CosineScorer, check_aware, check_limit, check_text, float32

__all__ = ["InMemoryMemoryStore"]


class InMemoryMemoryStore(MemoryStore):
    """Reference MemoryStore kept in process memory (tests, ``focal serve --memory``)."""

    def __init__(self, *, embedding_dimensions: int = 1536) -> None:
        self.embedding_dimensions = embedding_dimensions
        self._episodes: dict[UUID, Episode] = {}
        self._entities: dict[UUID, Entity] = {}
        self._relationships: dict[UUID, Relationship] = {}

    # --- episodes ---------------------------------------------------------------------------

    async def add_episode(self, episode: Episode) -> UUID:
        check_episode(episode, self.embedding_dimensions)
        if episode.id in self._episodes:
            raise ConflictError(f"episode {episode.id} already exists")
        self._episodes[episode.id] = _stored_copy(episode)
        return episode.id

    async def add_episodes(self, episodes: Sequence[Episode]) -> list[UUID]:
        """Add several episodes at once: all of them, or none when one is invalid or exists."""
        for episode in episodes:
            check_episode(episode, self.embedding_dimensions)
        ids = [episode.id for episode in episodes]
        if len(set(ids)) != len(ids):
            raise ConflictError("the batch contains the same episode id twice")
        clash = next((i for i in ids if i in self._episodes), None)
        if clash is not None:
            raise ConflictError(f"episode {clash} already exists")
        for episode in episodes:
            self._episodes[episode.id] = _stored_copy(episode)
        return ids

    async def get_episode(self, tenant_id: UUID, episode_id: UUID) -> Episode | None:
        episode = self._episodes.get(episode_id)
        if episode is None or episode.tenant_id != tenant_id:
            return None
        return episode.model_copy(deep=True)

    def _visible_episodes(
        self, tenant_id: UUID, agent_id: UUID, customer_profile_id: UUID | None, as_of: datetime | None
    ) -> list[Episode]:
        instant = as_of if as_of is not None else utc_now()
        return [
            episode
            for episode in self._episodes.values()
            if episode.tenant_id == tenant_id
            and episode.agent_id == agent_id
            and (customer_profile_id is None or episode.customer_profile_id == customer_profile_id)
            and is_valid_at(episode.valid_from, episode.valid_to, instant)
        ]

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
    ) -> list[tuple[Episode, float]]:
        score_of = CosineScorer(
            check_vector_search(
                query_embedding,
                self.embedding_dimensions,
                limit,
                min_score,
                as_of,
                embedding_model=embedding_model,
            )
        )
        scored: list[tuple[Episode, float]] = []
        for episode in self._visible_episodes(tenant_id, agent_id, customer_profile_id, as_of):
            if episode.embedding is None:
                continue
            if embedding_model is not None and episode.embedding_model != embedding_model:
                continue
            score = score_of(episode.embedding)
            if score >= min_score:
                scored.append((episode, score))
        scored.sort(key=lambda pair: (-pair[1], pair[0].id))
        return [(episode.model_copy(deep=True), score) for episode, score in scored[:limit]]

    async def text_search_episodes(
        self,
        query: str,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        customer_profile_id: UUID | None = None,
        limit: int = 10,
    ) -> list[Episode]:
        check_text_query(query)
        check_limit(limit)
        terms = set(query_terms(query))
        if not terms:
            return []
        ranked: list[tuple[int, int, float, UUID, Episode]] = []
        for episode in self._visible_episodes(tenant_id, agent_id, customer_profile_id, None):
            counts = Counter(text_terms(episode.content))
            matched = [term for term in terms if counts[term]]
            if matched:
                occurrences = sum(counts[term] for term in matched)
                ranked.append(
                    (-len(matched), -occurrences, -episode.recorded_at.timestamp(), episode.id, episode)
                )
        ranked.sort(key=lambda item: item[:4])
        return [item[4].model_copy(deep=True) for item in ranked[:limit]]

    async def delete_by_group(self, tenant_id: UUID, group_id: str) -> int:
        check_text(group_id, "group_id")
        doomed = [
            episode.id
            for episode in self._episodes.values()
            if episode.tenant_id == tenant_id and episode.group_id == group_id
        ]
        for episode_id in doomed:
            del self._episodes[episode_id]
        return len(doomed)

    # --- entities ---------------------------------------------------------------------------

    async def add_entity(self, entity: Entity) -> UUID:
        check_entity(entity)
        if entity.id in self._entities:
            raise ConflictError(f"entity {entity.id} already exists")
        self._entities[entity.id] = entity.model_copy(deep=True)
        return entity.id

    async def get_entity(self, tenant_id: UUID, entity_id: UUID) -> Entity | None:
        entity = self._entities.get(entity_id)
        if entity is None or entity.tenant_id != tenant_id:
            return None
        return entity.model_copy(deep=True)

    async def get_entities(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        entity_type: str | None = None,
        customer_profile_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Entity]:
        check_limit(limit)
        check_text(entity_type, "entity_type")
        found = [
            entity
            for entity in self._entities.values()
            if entity.tenant_id == tenant_id
            and entity.agent_id == agent_id
            and (entity_type is None or entity.entity_type == entity_type)
            and (customer_profile_id is None or entity.customer_profile_id == customer_profile_id)
        ]
        found.sort(key=lambda entity: (entity.name, entity.id))
        return [entity.model_copy(deep=True) for entity in found[:limit]]

    # --- relationships ----------------------------------------------------------------------

    async def add_relationship(self, relationship: Relationship) -> UUID:
        check_relationship(relationship)
        for entity_id in (relationship.source_entity_id, relationship.target_entity_id):
            entity = self._entities.get(entity_id)
            if entity is None or entity.tenant_id != relationship.tenant_id:
                raise NotFoundError(f"entity {entity_id} does not exist in tenant {relationship.tenant_id}")
        if relationship.id in self._relationships:
            raise ConflictError(f"relationship {relationship.id} already exists")
        self._relationships[relationship.id] = relationship.model_copy(deep=True)
        return relationship.id

    async def traverse_from_entities(
        self,
        tenant_id: UUID,
        entity_ids: Sequence[UUID],
        *,
        relationship_types: Sequence[str] | None = None,
        max_depth: int = 2,
        as_of: datetime | None = None,
    ) -> list[Relationship]:
        check_max_depth(max_depth)
        check_aware(as_of, "as_of")
        check_text(list(relationship_types or ()), "relationship_types")
        instant = as_of if as_of is not None else utc_now()
        types = set(relationship_types) if relationship_types is not None else None
        edges = [
            edge
            for edge in self._relationships.values()
            if edge.tenant_id == tenant_id
            and (types is None or edge.relationship_type in types)
            and is_valid_at(edge.valid_from, edge.valid_to, instant)
        ]
        adjacency: dict[UUID, list[Relationship]] = {}
        for edge in edges:
            adjacency.setdefault(edge.source_entity_id, []).append(edge)
            adjacency.setdefault(edge.target_entity_id, []).append(edge)
        # Breadth-first: nodes get their shortest distance; an edge is first reached from its
        # nearer end. Visited sets make cycles harmless.
        distance: dict[UUID, int] = {entity_id: 0 for entity_id in entity_ids}
        frontier = list(distance)
        edge_depth: dict[UUID, int] = {}
        for depth in range(1, max_depth + 1):
            next_frontier: list[UUID] = []
            for node in frontier:
                for edge in adjacency.get(node, []):
                    edge_depth.setdefault(edge.id, depth)
                    other = edge.target_entity_id if edge.source_entity_id == node else edge.source_entity_id
                    if other not in distance:
                        distance[other] = depth
                        next_frontier.append(other)
            frontier = next_frontier
        by_id = {edge.id: edge for edge in edges}
        order = sorted(edge_depth, key=lambda edge_id: (edge_depth[edge_id], edge_id))
        return [by_id[edge_id].model_copy(deep=True) for edge_id in order]

    # --- erasure ----------------------------------------------------------------------------

    async def delete_customer_data(self, tenant_id: UUID, customer_profile_id: UUID) -> int:
        episode_ids = [
            e.id
            for e in self._episodes.values()
            if e.tenant_id == tenant_id and e.customer_profile_id == customer_profile_id
        ]
        entity_ids = {
            e.id
            for e in self._entities.values()
            if e.tenant_id == tenant_id and e.customer_profile_id == customer_profile_id
        }
        relationship_ids = [
            r.id
            for r in self._relationships.values()
            if r.source_entity_id in entity_ids or r.target_entity_id in entity_ids
        ]
        for episode_id in episode_ids:
            del self._episodes[episode_id]
        for entity_id in entity_ids:
            del self._entities[entity_id]
        for relationship_id in relationship_ids:
            del self._relationships[relationship_id]
        return len(episode_ids) + len(entity_ids) + len(relationship_ids)


def _stored_copy(episode: Episode) -> Episode:
    """A private copy of ``episode`` with its embedding at single precision (like pgvector)."""
    stored = episode.model_copy(deep=True)
    if stored.embedding is not None:
        stored.embedding = float32(stored.embedding)
    return stored
