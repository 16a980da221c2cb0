"""Who the customer is: a profile, the channel identities that lead to it, fields with history."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field, JsonValue

from focal.conversation.models import Channel
from focal.models import FocalModel, JsonDict, utc_now


class FieldSource(StrEnum):
    USER_PROVIDED = "USER_PROVIDED"
    EXTRACTED = "EXTRACTED"
    INFERRED = "INFERRED"
    SYSTEM = "SYSTEM"


class ChannelIdentity(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    profile_id: UUID
    channel: Channel
    channel_user_id: str = Field(min_length=1, max_length=255)
    verified: bool = False
    created_at: AwareDatetime = Field(default_factory=utc_now)


class ProfileField(FocalModel):
    """One value of one field over one period. The current value has ``valid_to = None``."""

    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    profile_id: UUID
    field_name: str = Field(min_length=1, max_length=255)
    field_value: JsonValue = None
    source: FieldSource = FieldSource.USER_PROVIDED
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    verified: bool = False
    valid_from: AwareDatetime = Field(default_factory=utc_now)
    valid_to: AwareDatetime | None = None


class ProfileAsset(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    profile_id: UUID
    asset_type: str = Field(min_length=1, max_length=100)
    asset_reference: str = Field(min_length=1)
    metadata: JsonDict = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=utc_now)


class CustomerProfile(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    merged_into_id: UUID | None = None
    channel_identities: list[ChannelIdentity] = Field(default_factory=list)
    fields: dict[str, ProfileField] = Field(default_factory=dict)  # current value per field name
    assets: list[ProfileAsset] = Field(default_factory=list)
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
