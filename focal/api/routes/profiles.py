"""Customer profiles: ``/v1/profiles``.

Profiles are created by conversations (a new channel identity opens one). A merged profile
resolves to the profile it was merged into, for reads and writes alike.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query

from focal.api.deps import ServicesDep, TenantDep
from focal.api.schemas.common import ItemList
from focal.api.schemas.conversations import (
    ChannelIdentityOut,
    ChannelLink,
    ChannelUserId,
    FieldUpdate,
    ProfileFieldOut,
    ProfileMerge,
    ProfileOut,
)
from focal.conversation.models import Channel
from focal.errors import NotFoundError
from focal.profile.models import ChannelIdentity, CustomerProfile, ProfileField

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])

FieldName = Annotated[str, Path(min_length=1, max_length=255)]


async def _profile(services: ServicesDep, tenant_id: UUID, profile_id: UUID) -> CustomerProfile:
    profile = await services.profile_store.get_by_customer_id(tenant_id, profile_id)
    if profile is None:
        raise NotFoundError(f"profile {profile_id} not found")
    return profile


# Declared before "/{profile_id}" so "by-channel" is not read as an id.
@router.get(
    "/by-channel",
    response_model=ProfileOut,
    responses={404: {"description": "No profile has this channel identity"}},
)
async def get_profile_by_channel(
    tenant_id: TenantDep,
    services: ServicesDep,
    channel: Channel,
    user_channel_id: Annotated[ChannelUserId, Query()],
) -> CustomerProfile:
    profile = await services.profile_store.get_by_channel_identity(tenant_id, channel, user_channel_id)
    if profile is None:
        raise NotFoundError(f"no profile for {channel.value} identity {user_channel_id!r}")
    return profile


@router.get("/{profile_id}", response_model=ProfileOut)
async def get_profile(profile_id: UUID, tenant_id: TenantDep, services: ServicesDep) -> CustomerProfile:
    return await _profile(services, tenant_id, profile_id)


@router.put("/{profile_id}/fields/{field_name}", response_model=ProfileFieldOut)
async def set_profile_field(
    profile_id: UUID, field_name: FieldName, body: FieldUpdate, tenant_id: TenantDep, services: ServicesDep
) -> ProfileField:
    """Make ``value`` the field's current value; the previous value is kept in the history.
    Answers the row as stored (its ``valid_from`` is the store's, as the history shows it)."""
    profile = await _profile(services, tenant_id, profile_id)
    field = ProfileField(
        tenant_id=tenant_id,
        profile_id=profile.id,
        field_name=field_name,
        field_value=body.value,
        source=body.source,
        confidence=body.confidence,
        verified=body.verified,
    )
    return await services.profile_store.update_field(tenant_id, profile.id, field)


@router.get("/{profile_id}/fields/{field_name}/history", response_model=ItemList[ProfileFieldOut])
async def get_profile_field_history(
    profile_id: UUID, field_name: FieldName, tenant_id: TenantDep, services: ServicesDep
) -> ItemList[ProfileFieldOut]:
    """Every value the field has had, oldest first."""
    profile = await _profile(services, tenant_id, profile_id)
    history = await services.profile_store.get_field_history(tenant_id, profile.id, field_name)
    return ItemList[ProfileFieldOut](items=[ProfileFieldOut.model_validate(f) for f in history])


@router.post("/{profile_id}/channels", response_model=ChannelIdentityOut)
async def link_profile_channel(
    profile_id: UUID, body: ChannelLink, tenant_id: TenantDep, services: ServicesDep
) -> ChannelIdentity:
    """Idempotent for this profile; 409 when the identity belongs to another profile."""
    profile = await _profile(services, tenant_id, profile_id)
    return await services.profile_store.link_channel(
        tenant_id, profile.id, body.channel, body.channel_user_id
    )


@router.post("/{profile_id}/merge", response_model=ProfileOut)
async def merge_profile(
    profile_id: UUID, body: ProfileMerge, tenant_id: TenantDep, services: ServicesDep
) -> CustomerProfile:
    """Merge ``source_id`` into this profile, which is kept and returned."""
    target = await _profile(services, tenant_id, profile_id)
    source = await _profile(services, tenant_id, body.source_id)
    return await services.profile_store.merge_profiles(tenant_id, source.id, target.id)
