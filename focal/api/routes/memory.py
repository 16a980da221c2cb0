"""Memory search: ``POST /v1/agents/{agent_id}/memory/search`` (vector or full-text)."""

from __future__ import annotations

from fastapi import APIRouter

from focal.api.deps import AgentDep, ServicesDep
from focal.api.schemas.common import ItemList
from focal.api.schemas.conversations import EpisodeHit, MemorySearch

router = APIRouter(tags=["memory"])


@router.post("/v1/agents/{agent_id}/memory/search", response_model=ItemList[EpisodeHit])
async def search_memory(body: MemorySearch, agent: AgentDep, services: ServicesDep) -> ItemList[EpisodeHit]:
    """The agent's episodes most related to ``query``, optionally for one customer.

    ``vector`` compares embeddings (of the configured embedding model only) and returns a score;
    ``text`` ranks by PostgreSQL full-text relevance and returns no score.
    """
    store = services.memory_store
    if body.mode == "vector":
        provider = services.embedding_provider
        embedding = await provider.embed(body.query)
        scored = await store.vector_search_episodes(
            embedding,
            agent.tenant_id,
            agent.id,
            customer_profile_id=body.customer_profile_id,
            limit=body.limit,
            embedding_model=provider.model_id,
        )
        items = [
            EpisodeHit.model_validate({**episode.model_dump(), "score": score}) for episode, score in scored
        ]
    else:
        episodes = await store.text_search_episodes(
            body.query,
            agent.tenant_id,
            agent.id,
            customer_profile_id=body.customer_profile_id,
            limit=body.limit,
        )
        items = [EpisodeHit.model_validate(episode.model_dump()) for episode in episodes]
    return ItemList[EpisodeHit](items=items)
