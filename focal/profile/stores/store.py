"""The ProfileStore interface: customer profiles, channel identities, fields with history.

Rules every backend follows (proven by ``tests/contract/test_profile_store.py``):

- every call filters on ``tenant_id``; returned objects are copies with their identities
  (by created_at, id), current fields and assets (by created_at, id) filled in;
- lookups follow ``merged_into_id``: a merged profile resolves to the profile it was merged into;
- ``get_or_create`` is race-safe: concurrent calls for one identity yield one profile;
- ``update_field`` closes the current value (``valid_to = now``) and opens a new one, so history
  is kept; on an unknown profile it is ``NotFoundError``;
- multi-row writes (merge, update_field, delete) are all-or-nothing;
- writes through a merged profile id act on the profile it was merged into; merging a profile that
  is already merged (as source or target) is a ``ConflictError``;
- ``update_field`` sets the validity times itself (the new value starts when the old one ends)
  and returns the row it stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from uuid import UUID

from focal.conversation.models import Channel
from focal.profile.models import ChannelIdentity, CustomerProfile, ProfileAsset, ProfileField


class ProfileStore(ABC):
    @abstractmethod
    async def get_by_customer_id(self, tenant_id: UUID, customer_id: UUID) -> CustomerProfile | None:
        """The profile with this id (following ``merged_into_id``)."""

    @abstractmethod
    async def get_by_external_id(self, tenant_id: UUID, external_id: str) -> CustomerProfile | None: ...

    @abstractmethod
    async def get_by_channel_identity(
        self, tenant_id: UUID, channel: Channel, channel_user_id: str
    ) -> CustomerProfile | None: ...

    @abstractmethod
    async def get_or_create(
        self, tenant_id: UUID, channel: Channel, channel_user_id: str
    ) -> CustomerProfile: ...

    @abstractmethod
    async def set_external_id(
        self, tenant_id: UUID, profile_id: UUID, external_id: str | None
    ) -> CustomerProfile:
        """Set (or clear, with ``None``) the profile's external id, unique per tenant
        (``ConflictError`` when another profile of the tenant has it)."""

    @abstractmethod
    async def update_field(self, tenant_id: UUID, profile_id: UUID, field: ProfileField) -> ProfileField:
        """Make ``field`` the current value of ``field.field_name``; the previous one is closed.
        ``field.tenant_id`` and ``field.profile_id`` must match the arguments
        (``InvalidDataError``).

        Returns the row as stored: its ``valid_from`` is the moment the store recorded it (not
        ``field.valid_from``), its ``profile_id`` the profile a merged id resolved to, and its
        value the stored JSON, equal to what ``get_field_history`` returns for it."""

    @abstractmethod
    async def get_field_history(
        self, tenant_id: UUID, profile_id: UUID, field_name: str
    ) -> list[ProfileField]:
        """Every value the field has had, oldest first (valid_from asc, then id)."""

    @abstractmethod
    async def add_asset(self, tenant_id: UUID, profile_id: UUID, asset: ProfileAsset) -> UUID: ...

    @abstractmethod
    async def link_channel(
        self, tenant_id: UUID, profile_id: UUID, channel: Channel, channel_user_id: str
    ) -> ChannelIdentity:
        """Idempotent for the same profile; ``ConflictError`` if the identity belongs to another
        profile; ``NotFoundError`` for an unknown profile."""

    @abstractmethod
    async def merge_profiles(self, tenant_id: UUID, source_id: UUID, target_id: UUID) -> CustomerProfile:
        """Move identities, assets and field history from source to target; per field the newer
        current value wins; the source keeps ``merged_into_id = target``. Returns the target.
        Merging a profile into itself is ``InvalidDataError``; an unknown one ``NotFoundError``."""

    @abstractmethod
    async def delete_profile(self, tenant_id: UUID, profile_id: UUID) -> bool:
        """Erase the profile and everything it owns (identities, fields, assets)."""
