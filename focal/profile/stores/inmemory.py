"""In-memory ProfileStore: the reference implementation the contract suite holds every backend to.

Choices the ABC leaves open (every backend follows them; the contract suite proves it):

- **Merged ids resolve everywhere.** A merged profile keeps its row with ``merged_into_id`` (and
  its ``external_id``), owns nothing, and every call that names it, reads and writes alike, acts
  on the profile it was merged into. ``merged_into_id`` always points at a live profile: merging
  B into C re-points the profiles earlier merged into B to C, so resolution is one hop.
- **The source keeps its ``external_id``**, so looking it up still finds the customer (resolved
  to the target); that value stays taken in the tenant.
- **Merging a merged profile is a ``ConflictError``**: when the source or the target already has
  ``merged_into_id``, the caller is told to merge the profile it resolves to. A repeated merge is
  therefore a ``ConflictError``, not a silent no-op. Same id twice: ``InvalidDataError``; unknown
  (or another tenant's) id: ``NotFoundError``.
- **Merge, per field**: the current value with the later ``valid_from`` wins; on a tie the
  target's wins. The loser is closed at the merge instant; the whole history moves to the target.
- **update_field stamps time itself**: the previous current row gets ``valid_to = t`` and the new
  row ``valid_from = t``, with ``t`` the moment of the write (never before the previous row's
  ``valid_from``, at least one microsecond after it), so periods chain without gaps and strictly
  in order, whatever ``field.valid_from`` said.
- **delete_profile erases the resolved profile, everything it owns and every profile merged into
  it** (those are aliases of the same customer and would otherwise keep its external ids).
- **set_external_id** sets or clears
  it; a value used by another profile of the tenant is a ``ConflictError``.
- Ids of identities, fields and assets are global: reusing one, in any tenant, is a ``ConflictError``.
- Returned profiles list identities and assets by (created_at, id); ``fields`` holds the current
  value per field name.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from focal.conversation.models import Channel
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.models import utc_now
from focal.profile.models import ChannelIdentity, CustomerProfile, ProfileAsset, ProfileField
from focal.profile.stores.checks import (
    check_asset,
    check_channel_user_id,
    check_external_id,
    check_field,
    check_field_name,
    coerce_channel,
)
from focal.profile.stores.store import ProfileStore
from focal.validation import snapshot

__all__ = ["InMemoryProfileStore"]

_IdentityKey = tuple[UUID, Channel, str]
# History periods must strictly increase even when two writes land in the same microsecond (or a
# clock lags another process's), else (valid_from, id) would not order the history.
ONE_MICROSECOND = timedelta(microseconds=1)


class InMemoryProfileStore(ProfileStore):
    def __init__(self) -> None:
        # Profiles are kept bare (no identities, fields, assets); _assemble fills them in on read.
        self._profiles: dict[UUID, CustomerProfile] = {}
        self._identities: dict[UUID, ChannelIdentity] = {}
        self._identity_by_key: dict[_IdentityKey, UUID] = {}
        self._fields: dict[UUID, ProfileField] = {}  # every row, current and closed
        self._assets: dict[UUID, ProfileAsset] = {}
        # Every write validates first and mutates last under this lock, so it is all-or-nothing
        # and check-then-write (get_or_create, link_channel) cannot interleave.
        self._lock = asyncio.Lock()

    # --- reads ---------------------------------------------------------------------------------

    async def get_by_customer_id(self, tenant_id: UUID, customer_id: UUID) -> CustomerProfile | None:
        profile = self._resolve(tenant_id, customer_id)
        return None if profile is None else self._assemble(profile)

    async def get_by_external_id(self, tenant_id: UUID, external_id: str) -> CustomerProfile | None:
        check_external_id(external_id)
        for profile in self._profiles.values():
            if profile.tenant_id == tenant_id and profile.external_id == external_id:
                resolved = self._resolve(tenant_id, profile.id)
                return None if resolved is None else self._assemble(resolved)
        return None

    async def get_by_channel_identity(
        self, tenant_id: UUID, channel: Channel, channel_user_id: str
    ) -> CustomerProfile | None:
        channel = coerce_channel(channel)
        check_channel_user_id(channel_user_id)
        identity_id = self._identity_by_key.get((tenant_id, channel, channel_user_id))
        if identity_id is None:
            return None
        profile = self._resolve(tenant_id, self._identities[identity_id].profile_id)
        return None if profile is None else self._assemble(profile)

    async def get_field_history(
        self, tenant_id: UUID, profile_id: UUID, field_name: str
    ) -> list[ProfileField]:
        check_field_name(field_name)
        profile = self._resolve(tenant_id, profile_id)
        if profile is None:
            return []
        rows = [
            f
            for f in self._fields.values()
            if f.tenant_id == tenant_id and f.profile_id == profile.id and f.field_name == field_name
        ]
        rows.sort(key=lambda f: (f.valid_from, f.id))
        return [snapshot(f) for f in rows]

    # --- writes --------------------------------------------------------------------------------

    async def get_or_create(self, tenant_id: UUID, channel: Channel, channel_user_id: str) -> CustomerProfile:
        channel = coerce_channel(channel)
        check_channel_user_id(channel_user_id)
        async with self._lock:
            identity_id = self._identity_by_key.get((tenant_id, channel, channel_user_id))
            if identity_id is not None:
                profile = self._resolve(tenant_id, self._identities[identity_id].profile_id)
                if profile is None:  # cannot happen: deleting a profile deletes its identities
                    raise ConflictError(f"identity {identity_id} points at a missing profile")
                return self._assemble(profile)
            now = utc_now()
            profile = CustomerProfile(id=uuid4(), tenant_id=tenant_id, created_at=now, updated_at=now)
            self._profiles[profile.id] = profile
            self._insert_identity(tenant_id, profile.id, channel, channel_user_id, now)
            return self._assemble(profile)

    async def update_field(self, tenant_id: UUID, profile_id: UUID, field: ProfileField) -> ProfileField:
        check_field(field, tenant_id, profile_id)
        new_row = snapshot(field)
        async with self._lock:
            profile = self._require(tenant_id, profile_id)
            if new_row.id in self._fields:
                raise ConflictError(f"profile field {new_row.id} already exists")
            current = self._current_field(profile.id, new_row.field_name)
            now = utc_now()
            if current is not None:
                now = max(now, current.valid_from + ONE_MICROSECOND)
                self._fields[current.id] = current.model_copy(update={"valid_to": now})
            stored = new_row.model_copy(
                update={"profile_id": profile.id, "valid_from": now, "valid_to": None}
            )
            self._fields[stored.id] = stored
            self._touch(profile.id, now)
            return snapshot(stored)

    async def add_asset(self, tenant_id: UUID, profile_id: UUID, asset: ProfileAsset) -> UUID:
        check_asset(asset, tenant_id, profile_id)
        stored = snapshot(asset)
        async with self._lock:
            profile = self._require(tenant_id, profile_id)
            if stored.id in self._assets:
                raise ConflictError(f"profile asset {stored.id} already exists")
            self._assets[stored.id] = stored.model_copy(update={"profile_id": profile.id})
            self._touch(profile.id, utc_now())
        return stored.id

    async def link_channel(
        self, tenant_id: UUID, profile_id: UUID, channel: Channel, channel_user_id: str
    ) -> ChannelIdentity:
        channel = coerce_channel(channel)
        check_channel_user_id(channel_user_id)
        async with self._lock:
            profile = self._require(tenant_id, profile_id)
            identity_id = self._identity_by_key.get((tenant_id, channel, channel_user_id))
            if identity_id is not None:
                existing = self._identities[identity_id]
                if existing.profile_id != profile.id:
                    raise ConflictError(
                        f"{channel.value} identity {channel_user_id!r} belongs to another profile"
                    )
                return snapshot(existing)
            now = utc_now()
            identity = self._insert_identity(tenant_id, profile.id, channel, channel_user_id, now)
            self._touch(profile.id, now)
            return snapshot(identity)

    async def merge_profiles(self, tenant_id: UUID, source_id: UUID, target_id: UUID) -> CustomerProfile:
        if source_id == target_id:
            raise InvalidDataError(f"cannot merge profile {source_id} into itself")
        async with self._lock:
            source = self._own(tenant_id, source_id)
            target = self._own(tenant_id, target_id)
            for profile in (source, target):
                if profile.merged_into_id is not None:
                    raise ConflictError(
                        f"profile {profile.id} is already merged into {profile.merged_into_id}; "
                        "merge the profile it resolves to"
                    )
            now = utc_now()
            for name, source_field in self._current_fields(source.id).items():
                target_field = self._current_field(target.id, name)
                if target_field is None:
                    continue
                loser = target_field if source_field.valid_from > target_field.valid_from else source_field
                self._fields[loser.id] = loser.model_copy(update={"valid_to": max(now, loser.valid_from)})
            self._move_owned(source.id, target.id)
            for profile in list(self._profiles.values()):
                if profile.id == source.id or profile.merged_into_id == source.id:
                    self._profiles[profile.id] = profile.model_copy(
                        update={"merged_into_id": target.id, "updated_at": now}
                    )
            self._touch(target.id, now)
            return self._assemble(self._profiles[target.id])

    async def delete_profile(self, tenant_id: UUID, profile_id: UUID) -> bool:
        async with self._lock:
            profile = self._resolve(tenant_id, profile_id)
            if profile is None:
                return False
            for alias in [p for p in self._profiles.values() if p.merged_into_id == profile.id]:
                del self._profiles[alias.id]
            del self._profiles[profile.id]
            for identity in [i for i in self._identities.values() if i.profile_id == profile.id]:
                del self._identities[identity.id]
                del self._identity_by_key[(identity.tenant_id, identity.channel, identity.channel_user_id)]
            for field_id in [f.id for f in self._fields.values() if f.profile_id == profile.id]:
                del self._fields[field_id]
            for asset_id in [a.id for a in self._assets.values() if a.profile_id == profile.id]:
                del self._assets[asset_id]
            return True

    async def set_external_id(
        self, tenant_id: UUID, profile_id: UUID, external_id: str | None
    ) -> CustomerProfile:
        """Set (or clear, with ``None``) the profile's external id, unique per tenant."""
        if external_id is not None:
            check_external_id(external_id)
        async with self._lock:
            profile = self._require(tenant_id, profile_id)
            if external_id is not None and any(
                p.tenant_id == tenant_id and p.external_id == external_id and p.id != profile.id
                for p in self._profiles.values()
            ):
                raise ConflictError(f"external_id {external_id!r} is used by another profile")
            self._profiles[profile.id] = profile.model_copy(
                update={"external_id": external_id, "updated_at": utc_now()}
            )
            return self._assemble(self._profiles[profile.id])

    # --- helpers -------------------------------------------------------------------------------

    def _own(self, tenant_id: UUID, profile_id: UUID) -> CustomerProfile:
        """The profile row itself (not resolved), or ``NotFoundError``."""
        profile = self._profiles.get(profile_id)
        if profile is None or profile.tenant_id != tenant_id:
            raise NotFoundError(f"profile {profile_id} not found")
        return profile

    def _resolve(self, tenant_id: UUID, profile_id: UUID) -> CustomerProfile | None:
        profile = self._profiles.get(profile_id)
        if profile is None or profile.tenant_id != tenant_id:
            return None
        if profile.merged_into_id is not None:  # one hop: merge keeps merged_into_id pointing at a live one
            return self._profiles.get(profile.merged_into_id)
        return profile

    def _require(self, tenant_id: UUID, profile_id: UUID) -> CustomerProfile:
        profile = self._resolve(tenant_id, profile_id)
        if profile is None:
            raise NotFoundError(f"profile {profile_id} not found")
        return profile

    def _touch(self, profile_id: UUID, now: datetime) -> None:
        self._profiles[profile_id] = self._profiles[profile_id].model_copy(update={"updated_at": now})

    def _insert_identity(
        self, tenant_id: UUID, profile_id: UUID, channel: Channel, channel_user_id: str, now: datetime
    ) -> ChannelIdentity:
        identity = ChannelIdentity(
            tenant_id=tenant_id,
            profile_id=profile_id,
            channel=channel,
            channel_user_id=channel_user_id,
            created_at=now,
        )
        self._identities[identity.id] = identity
        self._identity_by_key[(tenant_id, channel, channel_user_id)] = identity.id
        return identity

    def _current_field(self, profile_id: UUID, field_name: str) -> ProfileField | None:
        for row in self._fields.values():
            if row.profile_id == profile_id and row.field_name == field_name and row.valid_to is None:
                return row
        return None

    def _current_fields(self, profile_id: UUID) -> dict[str, ProfileField]:
        rows = [f for f in self._fields.values() if f.profile_id == profile_id and f.valid_to is None]
        return {f.field_name: f for f in sorted(rows, key=lambda f: f.field_name)}

    def _move_owned(self, source_id: UUID, target_id: UUID) -> None:
        for identity in [i for i in self._identities.values() if i.profile_id == source_id]:
            self._identities[identity.id] = identity.model_copy(update={"profile_id": target_id})
        for row in [f for f in self._fields.values() if f.profile_id == source_id]:
            self._fields[row.id] = row.model_copy(update={"profile_id": target_id})
        for asset in [a for a in self._assets.values() if a.profile_id == source_id]:
            self._assets[asset.id] = asset.model_copy(update={"profile_id": target_id})

    def _assemble(self, profile: CustomerProfile) -> CustomerProfile:
        """A fresh copy of ``profile`` with its identities, current fields and assets."""
        identities = sorted(
            (i for i in self._identities.values() if i.profile_id == profile.id),
            key=lambda i: (i.created_at, i.id),
        )
        assets = sorted(
            (a for a in self._assets.values() if a.profile_id == profile.id),
            key=lambda a: (a.created_at, a.id),
        )
        assembled = profile.model_copy(
            update={
                "channel_identities": identities,
                "fields": self._current_fields(profile.id),
                "assets": assets,
            }
        )
        return snapshot(assembled)
