"""PostgreSQL ProfileStore (asyncpg), schema from revision 0004.

Behaviour matches ``focal.profile.stores.inmemory`` (read its docstring for the choices: merged
ids resolve everywhere, merging a merged profile is a ``ConflictError``, erasure takes aliases
along). How it stays correct under concurrency, across processes:

- a profile is read in ONE statement (identities, current fields and assets aggregated as JSONB
  sub-selects), so it is a consistent snapshot even while a merge commits;
- every write that attaches rows to a profile first locks the live profile row
  (``SELECT ... FOR UPDATE``) inside its transaction; ``merge_profiles`` locks both profiles in id
  order, so a merge and a write to either profile serialise instead of interleaving;
- ``get_or_create`` inserts the profile and then the identity with
  ``ON CONFLICT (tenant_id, channel, channel_user_id) DO NOTHING`` in one transaction; the loser
  of a race rolls its profile back and reads the winner's;
- multi-row writes run in one transaction: any failure leaves nothing half-written.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from focal.conversation.models import Channel
from focal.db.translate import translate_pg_errors
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
from focal.validation import json_text

__all__ = ["PostgresProfileStore"]

# {resolve} is a scalar sub-select yielding the id to show, already resolved through merged_into_id.
_SELECT_PROFILE = """
SELECT p.id, p.tenant_id, p.external_id, p.merged_into_id, p.created_at, p.updated_at,
  (SELECT COALESCE(jsonb_agg(to_jsonb(ci) ORDER BY ci.created_at, ci.id), '[]'::jsonb)
     FROM channel_identities ci
    WHERE ci.tenant_id = p.tenant_id AND ci.profile_id = p.id) AS channel_identities,
  (SELECT COALESCE(jsonb_agg(to_jsonb(pf) ORDER BY pf.field_name), '[]'::jsonb)
     FROM profile_fields pf
    WHERE pf.tenant_id = p.tenant_id AND pf.profile_id = p.id AND pf.valid_to IS NULL) AS fields,
  (SELECT COALESCE(jsonb_agg(to_jsonb(pa) ORDER BY pa.created_at, pa.id), '[]'::jsonb)
     FROM profile_assets pa WHERE pa.tenant_id = p.tenant_id AND pa.profile_id = p.id) AS assets
FROM customer_profiles p
WHERE p.tenant_id = $1 AND p.id = ({resolve})
"""
_BY_ID = _SELECT_PROFILE.format(
    resolve="SELECT COALESCE(s.merged_into_id, s.id) FROM customer_profiles s "
    "WHERE s.tenant_id = $1 AND s.id = $2"
)
_BY_EXTERNAL_ID = _SELECT_PROFILE.format(
    resolve="SELECT COALESCE(s.merged_into_id, s.id) FROM customer_profiles s "
    "WHERE s.tenant_id = $1 AND s.external_id = $2"
)
_BY_IDENTITY = _SELECT_PROFILE.format(
    resolve="SELECT COALESCE(s.merged_into_id, s.id) FROM channel_identities ci "
    "JOIN customer_profiles s ON s.tenant_id = ci.tenant_id AND s.id = ci.profile_id "
    "WHERE ci.tenant_id = $1 AND ci.channel = $2 AND ci.channel_user_id = $3"
)
# The live profile an id resolves to, locked for the rest of the transaction.
_LOCK_LIVE = """
SELECT t.id, t.merged_into_id FROM customer_profiles s
JOIN customer_profiles t ON t.tenant_id = s.tenant_id AND t.id = COALESCE(s.merged_into_id, s.id)
WHERE s.tenant_id = $1 AND s.id = $2
FOR UPDATE OF t
"""
_IDENTITY_COLUMNS = "id, tenant_id, profile_id, channel, channel_user_id, verified, created_at"
_FIELD_COLUMNS = (
    "id, tenant_id, profile_id, field_name, field_value, source, confidence, verified, valid_from, valid_to"
)
_INSERT_IDENTITY = (
    f"INSERT INTO channel_identities ({_IDENTITY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, false, $6) "
    "ON CONFLICT (tenant_id, channel, channel_user_id) DO NOTHING "
    f"RETURNING {_IDENTITY_COLUMNS}"
)
# Per field present on both sides the later valid_from wins (the target's on a tie); the loser is
# closed at the merge instant, before the source's rows move (one current row per field name).
_CLOSE_MERGE_LOSERS = """
UPDATE profile_fields f SET valid_to = GREATEST($4, f.valid_from)
FROM profile_fields s
JOIN profile_fields t ON t.tenant_id = s.tenant_id AND t.field_name = s.field_name
WHERE s.tenant_id = $1 AND s.profile_id = $2 AND s.valid_to IS NULL
  AND t.profile_id = $3 AND t.valid_to IS NULL
  AND f.id = CASE WHEN s.valid_from > t.valid_from THEN t.id ELSE s.id END
"""
_MAX_ATTEMPTS = 3
_Connection = asyncpg.Connection | PoolConnectionProxy


class _IdentityTaken(Exception):
    """Rolls back get_or_create's transaction when another caller created the identity first."""


def _profile_from_row(row: asyncpg.Record) -> CustomerProfile:
    data: dict[str, Any] = dict(row)
    data["channel_identities"] = json.loads(data["channel_identities"])
    data["assets"] = json.loads(data["assets"])
    data["fields"] = {field["field_name"]: field for field in json.loads(data["fields"])}
    return CustomerProfile.model_validate(data)


def _field_from_row(row: asyncpg.Record) -> ProfileField:
    data: dict[str, Any] = dict(row)
    data["field_value"] = json.loads(data["field_value"])
    return ProfileField.model_validate(data)


class PostgresProfileStore(ProfileStore):
    """Receives a pool made by ``focal.db.pool.create_pool``; never closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # --- reads ---------------------------------------------------------------------------------

    async def get_by_customer_id(self, tenant_id: UUID, customer_id: UUID) -> CustomerProfile | None:
        with translate_pg_errors("get_by_customer_id", tenant_id=tenant_id):
            row = await self._pool.fetchrow(_BY_ID, tenant_id, customer_id)
        return None if row is None else _profile_from_row(row)

    async def get_by_external_id(self, tenant_id: UUID, external_id: str) -> CustomerProfile | None:
        check_external_id(external_id)
        with translate_pg_errors("get_by_external_id", tenant_id=tenant_id):
            row = await self._pool.fetchrow(_BY_EXTERNAL_ID, tenant_id, external_id)
        return None if row is None else _profile_from_row(row)

    async def get_by_channel_identity(
        self, tenant_id: UUID, channel: Channel, channel_user_id: str
    ) -> CustomerProfile | None:
        channel = coerce_channel(channel)
        check_channel_user_id(channel_user_id)
        with translate_pg_errors("get_by_channel_identity", tenant_id=tenant_id):
            row = await self._pool.fetchrow(_BY_IDENTITY, tenant_id, channel.value, channel_user_id)
        return None if row is None else _profile_from_row(row)

    async def get_field_history(
        self, tenant_id: UUID, profile_id: UUID, field_name: str
    ) -> list[ProfileField]:
        check_field_name(field_name)
        with translate_pg_errors("get_field_history", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                f"SELECT {_FIELD_COLUMNS} FROM profile_fields WHERE tenant_id = $1 AND field_name = $3 "
                "AND profile_id = (SELECT COALESCE(merged_into_id, id) FROM customer_profiles "
                "WHERE tenant_id = $1 AND id = $2) ORDER BY valid_from, id",
                tenant_id,
                profile_id,
                field_name,
            )
        return [_field_from_row(row) for row in rows]

    # --- writes --------------------------------------------------------------------------------

    async def get_or_create(self, tenant_id: UUID, channel: Channel, channel_user_id: str) -> CustomerProfile:
        channel = coerce_channel(channel)
        check_channel_user_id(channel_user_id)
        with translate_pg_errors("get_or_create", tenant_id=tenant_id):
            async with self._pool.acquire() as connection:
                for _ in range(_MAX_ATTEMPTS):
                    row = await connection.fetchrow(_BY_IDENTITY, tenant_id, channel.value, channel_user_id)
                    if row is not None:
                        return _profile_from_row(row)
                    try:
                        return await self._create_with_identity(
                            connection, tenant_id, channel, channel_user_id
                        )
                    except _IdentityTaken:
                        continue  # another caller won the race: read its profile
        raise ConflictError(
            f"get_or_create for {channel.value} {channel_user_id!r} kept racing with concurrent deletes"
        )

    async def _create_with_identity(
        self, connection: _Connection, tenant_id: UUID, channel: Channel, channel_user_id: str
    ) -> CustomerProfile:
        now = utc_now()
        profile_id = uuid4()
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO customer_profiles (id, tenant_id, created_at, updated_at) "
                "VALUES ($1, $2, $3, $3)",
                profile_id,
                tenant_id,
                now,
            )
            identity = await connection.fetchrow(
                _INSERT_IDENTITY, uuid4(), tenant_id, profile_id, channel.value, channel_user_id, now
            )
            if identity is None:
                raise _IdentityTaken
        return CustomerProfile(
            id=profile_id,
            tenant_id=tenant_id,
            channel_identities=[ChannelIdentity.model_validate(dict(identity))],
            created_at=now,
            updated_at=now,
        )

    async def update_field(self, tenant_id: UUID, profile_id: UUID, field: ProfileField) -> ProfileField:
        check_field(field, tenant_id, profile_id)
        value = json_text(field.model_dump(mode="json")["field_value"], "ProfileField.field_value")
        duplicate = f"profile field {field.id} already exists"
        with translate_pg_errors("update_field", tenant_id=tenant_id, duplicate=duplicate):
            async with self._pool.acquire() as connection, connection.transaction():
                target = await self._lock_live(connection, tenant_id, profile_id)
                now = utc_now()
                # Strictly after the closed row's start, so (valid_from, id) orders the history.
                closed_at = await connection.fetchval(
                    "UPDATE profile_fields "
                    "SET valid_to = GREATEST($4, valid_from + interval '1 microsecond') "
                    "WHERE tenant_id = $1 AND profile_id = $2 AND field_name = $3 AND valid_to IS NULL "
                    "RETURNING valid_to",
                    tenant_id,
                    target,
                    field.field_name,
                    now,
                )
                valid_from: datetime = closed_at if closed_at is not None else now
                row = await connection.fetchrow(
                    f"INSERT INTO profile_fields ({_FIELD_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, NULL) "
                    f"RETURNING {_FIELD_COLUMNS}",
                    field.id,
                    tenant_id,
                    target,
                    field.field_name,
                    value,
                    field.source.value,
                    field.confidence,
                    field.verified,
                    valid_from,
                )
                await self._touch(connection, tenant_id, target, valid_from)
        if row is None:  # cannot happen: INSERT ... RETURNING returns the row or raises
            raise NotFoundError(f"profile field {field.id} was not stored")
        return _field_from_row(row)

    async def add_asset(self, tenant_id: UUID, profile_id: UUID, asset: ProfileAsset) -> UUID:
        check_asset(asset, tenant_id, profile_id)
        duplicate = f"profile asset {asset.id} already exists"
        with translate_pg_errors("add_asset", tenant_id=tenant_id, duplicate=duplicate):
            async with self._pool.acquire() as connection, connection.transaction():
                target = await self._lock_live(connection, tenant_id, profile_id)
                await connection.execute(
                    "INSERT INTO profile_assets (id, tenant_id, profile_id, asset_type, asset_reference, "
                    "metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
                    asset.id,
                    tenant_id,
                    target,
                    asset.asset_type,
                    asset.asset_reference,
                    json_text(asset.model_dump(mode="json")["metadata"], "ProfileAsset.metadata"),
                    asset.created_at,
                )
                await self._touch(connection, tenant_id, target, utc_now())
        return asset.id

    async def link_channel(
        self, tenant_id: UUID, profile_id: UUID, channel: Channel, channel_user_id: str
    ) -> ChannelIdentity:
        channel = coerce_channel(channel)
        check_channel_user_id(channel_user_id)
        with translate_pg_errors("link_channel", tenant_id=tenant_id):
            async with self._pool.acquire() as connection, connection.transaction():
                target = await self._lock_live(connection, tenant_id, profile_id)
                now = utc_now()
                row = await connection.fetchrow(
                    _INSERT_IDENTITY, uuid4(), tenant_id, target, channel.value, channel_user_id, now
                )
                if row is not None:
                    await self._touch(connection, tenant_id, target, now)
                    return ChannelIdentity.model_validate(dict(row))
                existing = await connection.fetchrow(
                    f"SELECT {_IDENTITY_COLUMNS} FROM channel_identities "
                    "WHERE tenant_id = $1 AND channel = $2 AND channel_user_id = $3",
                    tenant_id,
                    channel.value,
                    channel_user_id,
                )
                if existing is None or existing["profile_id"] != target:
                    raise ConflictError(
                        f"{channel.value} identity {channel_user_id!r} belongs to another profile"
                    )
                return ChannelIdentity.model_validate(dict(existing))

    async def merge_profiles(self, tenant_id: UUID, source_id: UUID, target_id: UUID) -> CustomerProfile:
        if source_id == target_id:
            raise InvalidDataError(f"cannot merge profile {source_id} into itself")
        with translate_pg_errors("merge_profiles", tenant_id=tenant_id):
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(
                    # id order: two merges of one pair cannot deadlock.
                    "SELECT id, merged_into_id FROM customer_profiles "
                    "WHERE tenant_id = $1 AND id = ANY($2::uuid[]) ORDER BY id FOR UPDATE",
                    tenant_id,
                    [source_id, target_id],
                )
                found = {row["id"]: row["merged_into_id"] for row in rows}
                for profile_id in (source_id, target_id):
                    if profile_id not in found:
                        raise NotFoundError(f"profile {profile_id} not found")
                    if found[profile_id] is not None:
                        raise ConflictError(
                            f"profile {profile_id} is already merged into {found[profile_id]}; "
                            "merge the profile it resolves to"
                        )
                now = utc_now()
                await connection.execute(_CLOSE_MERGE_LOSERS, tenant_id, source_id, target_id, now)
                for table in ("profile_fields", "channel_identities", "profile_assets"):
                    await connection.execute(
                        f"UPDATE {table} SET profile_id = $3 WHERE tenant_id = $1 AND profile_id = $2",
                        tenant_id,
                        source_id,
                        target_id,
                    )
                await connection.execute(
                    "UPDATE customer_profiles SET merged_into_id = $3, updated_at = $4 "
                    "WHERE tenant_id = $1 AND (id = $2 OR merged_into_id = $2)",
                    tenant_id,
                    source_id,
                    target_id,
                    now,
                )
                await self._touch(connection, tenant_id, target_id, now)
                row = await connection.fetchrow(_BY_ID, tenant_id, target_id)
        if row is None:  # cannot happen: the target is locked by this transaction
            raise NotFoundError(f"profile {target_id} not found")
        return _profile_from_row(row)

    async def delete_profile(self, tenant_id: UUID, profile_id: UUID) -> bool:
        # One statement: the cascades erase identities, fields, assets and merged aliases with it.
        with translate_pg_errors("delete_profile", tenant_id=tenant_id):
            status = await self._pool.execute(
                "DELETE FROM customer_profiles WHERE tenant_id = $1 AND id = "
                "(SELECT COALESCE(merged_into_id, id) FROM customer_profiles "
                "WHERE tenant_id = $1 AND id = $2)",
                tenant_id,
                profile_id,
            )
        return status != "DELETE 0"

    async def set_external_id(
        self, tenant_id: UUID, profile_id: UUID, external_id: str | None
    ) -> CustomerProfile:
        """Set (or clear, with ``None``) the profile's external id, unique per tenant."""
        if external_id is not None:
            check_external_id(external_id)
        duplicate = f"external_id {external_id!r} is used by another profile"
        with translate_pg_errors("set_external_id", tenant_id=tenant_id, duplicate=duplicate):
            async with self._pool.acquire() as connection, connection.transaction():
                target = await self._lock_live(connection, tenant_id, profile_id)
                await connection.execute(
                    "UPDATE customer_profiles SET external_id = $3, updated_at = $4 "
                    "WHERE tenant_id = $1 AND id = $2",
                    tenant_id,
                    target,
                    external_id,
                    utc_now(),
                )
                row = await connection.fetchrow(_BY_ID, tenant_id, target)
        if row is None:
            raise NotFoundError(f"profile {profile_id} not found")
        return _profile_from_row(row)

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _lock_live(connection: _Connection, tenant_id: UUID, profile_id: UUID) -> UUID:
        """Lock and return the live profile ``profile_id`` resolves to, or ``NotFoundError``.

        If a merge commits between resolving and locking, the locked row shows ``merged_into_id``:
        resolve again (bounded)."""
        for _ in range(_MAX_ATTEMPTS):
            row = await connection.fetchrow(_LOCK_LIVE, tenant_id, profile_id)
            if row is None:
                raise NotFoundError(f"profile {profile_id} not found")
            if row["merged_into_id"] is None:
                live: UUID = row["id"]
                return live
        raise ConflictError(f"profile {profile_id} kept being merged while this write waited")

    @staticmethod
    async def _touch(connection: _Connection, tenant_id: UUID, profile_id: UUID, now: datetime) -> None:
        await connection.execute(
            "UPDATE customer_profiles SET updated_at = $3 WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            profile_id,
            now,
        )
