"""What an agent remembers: episodes, and a small knowledge graph of entities and relationships.

Rows are bi-temporal: ``valid_from``/``valid_to`` say when a fact holds in the world (an open
``valid_to`` means still valid), ``recorded_at``/``created_at`` when Focal learnt it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field, model_validator

from focal.models import FocalModel, JsonDict, require_embedding_model, utc_now


class EpisodeType(StrEnum):
    TURN = "TURN"
    SUMMARY = "SUMMARY"
    FACT = "FACT"
    EVENT = "EVENT"


class Episode(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    customer_profile_id: UUID | None = None
    session_id: UUID | None = None
    group_id: str | None = Field(default=None, max_length=255)
    content: str = Field(min_length=1)
    episode_type: EpisodeType = EpisodeType.TURN
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    embedding: list[float] | None = None
    embedding_model: str | None = None
    valid_from: AwareDatetime = Field(default_factory=utc_now)
    valid_to: AwareDatetime | None = None
    recorded_at: AwareDatetime = Field(default_factory=utc_now)
    metadata: JsonDict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _embedding_names_its_model(self) -> Self:
        require_embedding_model(self.embedding, self.embedding_model)
        return self


class Entity(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    customer_profile_id: UUID | None = None
    name: str = Field(min_length=1, max_length=255)
    entity_type: str = Field(min_length=1, max_length=100)
    canonical_name: str | None = Field(default=None, max_length=255)
    attributes: JsonDict = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)


class Relationship(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    source_entity_id: UUID
    target_entity_id: UUID
    relationship_type: str = Field(min_length=1, max_length=100)
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    valid_from: AwareDatetime = Field(default_factory=utc_now)
    valid_to: AwareDatetime | None = None
    metadata: JsonDict = Field(default_factory=dict)
