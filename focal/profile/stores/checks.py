"""Input checks every ProfileStore backend runs before it touches storage (same error everywhere)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from focal.conversation.models import Channel
from focal.errors import InvalidDataError
from focal.profile.models import ProfileAsset, ProfileField
from focal.validation import as_enum, check_aware, check_finite, check_no_nul, check_storable

__all__ = [
    "check_asset",
    "check_channel_user_id",
    "check_external_id",
    "check_field",
    "check_field_name",
    "coerce_channel",
]

MAX_KEY_LENGTH = 255


def coerce_channel(channel: Any) -> Channel:
    """A ``Channel`` (or its value as a string); anything else is ``InvalidDataError``."""
    return as_enum(Channel, channel, "channel")


def _check_key(value: Any, what: str) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise InvalidDataError(f"{what} must be a string of 1..{MAX_KEY_LENGTH} characters, got {value!r}")
    check_no_nul(value, what)


def check_channel_user_id(channel_user_id: Any) -> None:
    _check_key(channel_user_id, "channel_user_id")


def check_external_id(external_id: Any) -> None:
    _check_key(external_id, "external_id")


def check_field_name(field_name: Any) -> None:
    _check_key(field_name, "field_name")


def _check_owner(record: ProfileField | ProfileAsset, tenant_id: UUID, profile_id: UUID) -> None:
    what = type(record).__name__
    if record.tenant_id != tenant_id:
        raise InvalidDataError(f"{what}.tenant_id {record.tenant_id} does not match tenant_id {tenant_id}")
    if record.profile_id != profile_id:
        raise InvalidDataError(
            f"{what}.profile_id {record.profile_id} does not match profile_id {profile_id}"
        )


def check_field(field: ProfileField, tenant_id: UUID, profile_id: UUID) -> None:
    """A new current value: owned by the profile named in the call, still open (``valid_to`` None).
    Its ``valid_from`` is not checked: the store stamps the moment it records the value."""
    _check_owner(field, tenant_id, profile_id)
    if field.valid_to is not None:
        raise InvalidDataError("a new current field value cannot have valid_to set")
    check_finite(field.confidence, "ProfileField.confidence")
    check_storable(field, "ProfileField")


def check_asset(asset: ProfileAsset, tenant_id: UUID, profile_id: UUID) -> None:
    _check_owner(asset, tenant_id, profile_id)
    check_aware(asset.created_at, "ProfileAsset.created_at")
    check_storable(asset, "ProfileAsset")
