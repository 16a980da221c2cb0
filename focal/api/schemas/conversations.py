"""Session, turn, profile and memory request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, Field

from focal.alignment.turn.models import normalise_channel_user_id
from focal.api.schemas.common import NonBlankStr, RequestModel, ResponseModel
from focal.conversation.models import Channel, SessionMode, SessionStatus, StepVisit
from focal.memory.models import EpisodeType
from focal.profile.models import FieldSource

__all__ = [
    "MAX_CHANNEL_USER_ID_CHARS",
    "ChannelIdentityOut",
    "ChannelLink",
    "ChannelUserId",
    "EpisodeHit",
    "FieldUpdate",
    "MemorySearch",
    "ProfileFieldOut",
    "ProfileMerge",
    "ProfileOut",
    "SessionOut",
]


MAX_CHANNEL_USER_ID_CHARS = 255


def _channel_user_id(value: str) -> str:
    normalised = normalise_channel_user_id(value)
    if not 1 <= len(normalised) <= MAX_CHANNEL_USER_ID_CHARS:
        raise ValueError(
            f"must be 1..{MAX_CHANNEL_USER_ID_CHARS} characters once surrounding whitespace is removed"
        )
    return normalised


# A customer's id on a channel, as every route takes it (chat body, profile query and body): one
# normal form everywhere (``normalise_channel_user_id``), so they all name the same customer.
ChannelUserId = Annotated[
    str,
    AfterValidator(_channel_user_id),
    Field(
        description="the customer's id on the channel; surrounding whitespace is removed",
        # documented, checked after the whitespace is removed (by the validator above)
        json_schema_extra={"minLength": 1, "maxLength": MAX_CHANNEL_USER_ID_CHARS},
    ),
]


class SessionOut(ResponseModel):
    session_id: UUID
    agent_id: UUID
    customer_profile_id: UUID | None
    channel: Channel
    user_channel_id: str
    status: SessionStatus
    mode: SessionMode
    config_version: int
    variables: dict[str, Any]
    active_scenario_id: UUID | None
    active_scenario_version: int | None
    current_step_id: UUID | None
    step_history: list[StepVisit]
    rule_fires: dict[str, int]
    turn_count: int
    version: int
    created_at: datetime
    last_activity_at: datetime


class ChannelIdentityOut(ResponseModel):
    id: UUID
    profile_id: UUID
    channel: Channel
    channel_user_id: str
    verified: bool
    created_at: datetime


class ProfileFieldOut(ResponseModel):
    id: UUID
    profile_id: UUID
    field_name: str
    field_value: Any
    source: FieldSource
    confidence: float
    verified: bool
    valid_from: datetime
    valid_to: datetime | None


class ProfileOut(ResponseModel):
    id: UUID
    external_id: str | None
    merged_into_id: UUID | None
    channel_identities: list[ChannelIdentityOut]
    fields: dict[str, ProfileFieldOut]
    created_at: datetime
    updated_at: datetime


class FieldUpdate(RequestModel):
    value: Any = Field(description="the new current value of the field")
    source: FieldSource = FieldSource.USER_PROVIDED
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    verified: bool = False


class ChannelLink(RequestModel):
    channel: Channel
    channel_user_id: ChannelUserId


class ProfileMerge(RequestModel):
    source_id: UUID = Field(description="the profile merged into the one in the path (which is kept)")


class MemorySearch(RequestModel):
    query: NonBlankStr = Field(min_length=1, max_length=10_000)
    customer_profile_id: UUID | None = None
    mode: Literal["vector", "text"] = "vector"
    limit: int = Field(default=10, ge=1, le=100)


class EpisodeHit(ResponseModel):
    id: UUID
    agent_id: UUID
    customer_profile_id: UUID | None
    session_id: UUID | None
    content: str
    episode_type: EpisodeType
    importance: float
    valid_from: datetime
    valid_to: datetime | None
    recorded_at: datetime
    metadata: dict[str, Any]
    score: float | None = Field(default=None, description="cosine similarity (vector mode only)")
