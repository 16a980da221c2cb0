"""ProfileStore contract: every backend behaves like the in-memory reference.

Backends and builders live in ``profile_backends``; what every backend must keep exactly or refuse
(JSON types, unstorable text, timestamps and nesting) is in ``test_profile_store_values``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from uuid import uuid4

import pytest

from focal.conversation.models import Channel
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.profile.models import CustomerProfile, FieldSource
from focal.profile.stores.store import ProfileStore
from tests.contract.profile_backends import (
    make_asset,
    make_field,
    new_profile,
    profile_store_fixture,  # noqa: F401 - the parametrised fixture
    uid,
)
from tests.support import new_tenant

# --- get_or_create and lookups -------------------------------------------------------------------


async def test_get_or_create_creates_once(store: ProfileStore) -> None:
    tenant, user = new_tenant(), uid()
    created = await store.get_or_create(tenant, Channel.WHATSAPP, user)
    assert created.tenant_id == tenant
    assert created.external_id is None and created.merged_into_id is None
    assert created.fields == {} and created.assets == []
    [identity] = created.channel_identities
    assert (identity.tenant_id, identity.profile_id) == (tenant, created.id)
    assert (identity.channel, identity.channel_user_id, identity.verified) == (Channel.WHATSAPP, user, False)
    assert created.created_at.tzinfo is not None
    again = await store.get_or_create(tenant, Channel.WHATSAPP, user)
    assert again == created
    assert await store.get_by_customer_id(tenant, created.id) == created
    assert await store.get_by_channel_identity(tenant, Channel.WHATSAPP, user) == created
    # Another channel with the same user id is another identity, hence another profile.
    assert (await store.get_or_create(tenant, Channel.SMS, user)).id != created.id


async def test_channel_may_be_given_as_its_value(store: ProfileStore) -> None:
    tenant, user = new_tenant(), uid()
    created = await store.get_or_create(tenant, "EMAIL", user)  # type: ignore[arg-type]
    assert created.channel_identities[0].channel is Channel.EMAIL
    assert (await store.get_by_channel_identity(tenant, "EMAIL", user)) == created  # type: ignore[arg-type]


async def test_lookups_are_tenant_scoped(store: Any) -> None:
    tenant, other, user = new_tenant(), new_tenant(), uid()
    mine = await store.get_or_create(tenant, Channel.WEB, user)
    external = f"crm-{uuid4().hex[:8]}"
    await store.set_external_id(tenant, mine.id, external)
    await store.update_field(tenant, mine.id, make_field(tenant, mine.id))
    assert await store.get_by_customer_id(other, mine.id) is None
    assert await store.get_by_channel_identity(other, Channel.WEB, user) is None
    assert await store.get_by_external_id(other, external) is None
    assert await store.get_field_history(other, mine.id, "email") == []
    theirs = await store.get_or_create(other, Channel.WEB, user)  # same identity, other tenant
    assert theirs.id != mine.id and theirs.tenant_id == other
    assert (await store.get_by_channel_identity(tenant, Channel.WEB, user)).id == mine.id


async def test_unknown_ids_read_as_nothing(store: ProfileStore) -> None:
    tenant = new_tenant()
    assert await store.get_by_customer_id(tenant, uuid4()) is None
    assert await store.get_by_channel_identity(tenant, Channel.WEB, uid()) is None
    assert await store.get_by_external_id(tenant, "nobody") is None
    assert await store.get_field_history(tenant, uuid4(), "email") == []


@pytest.mark.parametrize(
    ("channel", "user"),
    [("FAX", "u1"), (Channel.WEB, ""), (Channel.WEB, "x" * 256), (Channel.WEB, "nul\x00")],
    ids=["unknown-channel", "empty-user", "long-user", "nul-user"],
)
async def test_bad_identity_is_refused_and_writes_nothing(
    store: ProfileStore, channel: Any, user: str
) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    with pytest.raises(InvalidDataError):
        await store.get_or_create(tenant, channel, user)
    with pytest.raises(InvalidDataError):
        await store.get_by_channel_identity(tenant, channel, user)
    with pytest.raises(InvalidDataError):
        await store.link_channel(tenant, profile.id, channel, user)
    assert await store.get_by_customer_id(tenant, profile.id) == profile


@pytest.mark.parametrize("bad", ["", "x" * 256])
async def test_bad_external_id_or_field_name_is_invalid(store: ProfileStore, bad: str) -> None:
    with pytest.raises(InvalidDataError):
        await store.get_by_external_id(new_tenant(), bad)
    with pytest.raises(InvalidDataError):
        await store.get_field_history(new_tenant(), uuid4(), bad)


CONCURRENT_CALLS = 10  # the size of the test pool: every call holds a connection at once


async def test_concurrent_get_or_create_yields_one_profile(store: ProfileStore) -> None:
    """All calls start together on a warm pool, so they really overlap: on a cold pool each call
    waited for a new connection and the first had committed before the others read. (That
    PostgreSQL calls do overlap, and one wins, is proven by blocking them all in
    ``test_postgres_profile_store::test_get_or_create_race_has_one_winner``.)"""
    tenant, user = new_tenant(), uid()
    # Warm up: reads in parallel open every connection the calls below will use.
    await asyncio.gather(*(store.get_by_channel_identity(tenant, Channel.API, uid()) for _ in range(10)))
    start = asyncio.Barrier(CONCURRENT_CALLS)

    async def call() -> CustomerProfile:
        await start.wait()  # released together once every task is ready
        return await store.get_or_create(tenant, Channel.API, user)

    results = await asyncio.gather(*(call() for _ in range(CONCURRENT_CALLS)))
    assert len({p.id for p in results}) == 1
    profile = await store.get_by_channel_identity(tenant, Channel.API, user)
    assert profile is not None and profile.id == results[0].id
    assert len(profile.channel_identities) == 1


# --- external id ---------------------------------------------------------------------------------


async def test_external_id_is_unique_per_tenant(store: Any) -> None:
    tenant, other = new_tenant(), new_tenant()
    first, second = await new_profile(store, tenant), await new_profile(store, tenant)
    external = f"crm-{uuid4().hex[:8]}"
    updated = await store.set_external_id(tenant, first.id, external)
    assert updated.external_id == external
    assert updated.updated_at >= first.updated_at
    assert await store.get_by_external_id(tenant, external) == updated
    with pytest.raises(ConflictError):
        await store.set_external_id(tenant, second.id, external)
    assert (await store.get_by_customer_id(tenant, second.id)).external_id is None
    elsewhere = await new_profile(store, other)
    assert (await store.set_external_id(other, elsewhere.id, external)).external_id == external
    cleared = await store.set_external_id(tenant, first.id, None)
    assert cleared.external_id is None
    assert await store.get_by_external_id(tenant, external) is None
    with pytest.raises(NotFoundError):
        await store.set_external_id(other, first.id, "x")
    with pytest.raises(InvalidDataError):
        await store.set_external_id(tenant, first.id, "")


# --- fields --------------------------------------------------------------------------------------


async def test_update_field_keeps_history(store: ProfileStore) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    first = make_field(tenant, profile.id, value="old@x.io", source=FieldSource.EXTRACTED, confidence=0.5)
    second = make_field(tenant, profile.id, value="new@x.io", verified=True)
    third = make_field(tenant, profile.id, value="newest@x.io")
    for field in (first, second, third):
        await store.update_field(tenant, profile.id, field)
    history = await store.get_field_history(tenant, profile.id, "email")
    assert [h.id for h in history] == [first.id, second.id, third.id]
    assert [h.field_value for h in history] == ["old@x.io", "new@x.io", "newest@x.io"]
    assert history[0].valid_to == history[1].valid_from
    assert history[1].valid_to == history[2].valid_from
    assert history[0].valid_from < history[1].valid_from < history[2].valid_from
    assert history[2].valid_to is None
    assert (history[0].source, history[0].confidence, history[1].verified) == (
        FieldSource.EXTRACTED,
        0.5,
        True,
    )
    current = await store.get_by_customer_id(tenant, profile.id)
    assert current is not None
    assert current.fields == {"email": history[2]}
    assert current.updated_at >= history[2].valid_from
    assert await store.get_field_history(tenant, profile.id, "phone") == []


async def test_field_values_round_trip_as_json(store: ProfileStore) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    values: dict[str, Any] = {
        "address": {"city": "Lyon", "lines": ["1 rue X", None], "zip": 69001},
        "tags": ["vip", 3, 2.5, True],
        "nothing": None,
        "age": 42,
        "name": "Zoë",
    }
    for name, value in values.items():
        await store.update_field(tenant, profile.id, make_field(tenant, profile.id, name, value))
    current = await store.get_by_customer_id(tenant, profile.id)
    assert current is not None
    assert {name: f.field_value for name, f in current.fields.items()} == values
    assert all(f.profile_id == profile.id and f.tenant_id == tenant for f in current.fields.values())


@pytest.mark.parametrize(
    "bad",
    ["other-tenant", "other-profile", "closed", "nul"],
)
async def test_bad_field_is_refused_and_changes_nothing(store: ProfileStore, bad: str) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id, value="kept"))
    before = await store.get_field_history(tenant, profile.id, "email")
    before_profile = await store.get_by_customer_id(tenant, profile.id)
    field = {
        "other-tenant": make_field(new_tenant(), profile.id),
        "other-profile": make_field(tenant, uuid4()),
        "closed": make_field(tenant, profile.id, valid_to=profile.created_at),
        "nul": make_field(tenant, profile.id, value={"k": "\x00"}),
    }[bad]
    with pytest.raises(InvalidDataError):
        await store.update_field(tenant, profile.id, field)
    assert await store.get_field_history(tenant, profile.id, "email") == before
    assert await store.get_by_customer_id(tenant, profile.id) == before_profile


async def test_update_field_errors(store: ProfileStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    profile = await new_profile(store, tenant)
    field = make_field(tenant, profile.id, value="first")
    await store.update_field(tenant, profile.id, field)
    before = await store.get_by_customer_id(tenant, profile.id)
    with pytest.raises(ConflictError):  # the same field id again
        await store.update_field(tenant, profile.id, field.model_copy(update={"field_value": "second"}))
    assert await store.get_by_customer_id(tenant, profile.id) == before
    assert len(await store.get_field_history(tenant, profile.id, "email")) == 1
    unknown = uuid4()
    with pytest.raises(NotFoundError):
        await store.update_field(tenant, unknown, make_field(tenant, unknown))
    with pytest.raises(NotFoundError):  # another tenant's profile
        await store.update_field(other, profile.id, make_field(other, profile.id))
    assert await store.get_by_customer_id(tenant, profile.id) == before


async def test_concurrent_field_updates_keep_one_current_value(store: ProfileStore) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    fields = [make_field(tenant, profile.id, value=i) for i in range(10)]
    await asyncio.gather(*(store.update_field(tenant, profile.id, f) for f in fields))
    history = await store.get_field_history(tenant, profile.id, "email")
    assert len(history) == 10
    assert [h.valid_to is None for h in history].count(True) == 1
    assert history[-1].valid_to is None
    for older, newer in itertools.pairwise(history):
        assert older.valid_to == newer.valid_from
    current = await store.get_by_customer_id(tenant, profile.id)
    assert current is not None and current.fields["email"] == history[-1]


# --- assets --------------------------------------------------------------------------------------


async def test_add_asset(store: ProfileStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    profile = await new_profile(store, tenant)
    assets = [make_asset(tenant, profile.id, metadata={"total": 12.5, "items": [i]}) for i in range(3)]
    for asset in assets:
        assert await store.add_asset(tenant, profile.id, asset) == asset.id
    stored = await store.get_by_customer_id(tenant, profile.id)
    assert stored is not None
    assert stored.assets == sorted(assets, key=lambda a: (a.created_at, a.id))
    before = stored
    with pytest.raises(ConflictError):
        await store.add_asset(tenant, profile.id, assets[0])
    with pytest.raises(InvalidDataError):
        await store.add_asset(tenant, profile.id, make_asset(other, profile.id))
    with pytest.raises(InvalidDataError):
        await store.add_asset(tenant, profile.id, make_asset(tenant, profile.id, metadata={"x": "\x00"}))
    with pytest.raises(NotFoundError):
        await store.add_asset(other, profile.id, make_asset(other, profile.id))
    missing = uuid4()
    with pytest.raises(NotFoundError):
        await store.add_asset(tenant, missing, make_asset(tenant, missing))
    assert await store.get_by_customer_id(tenant, profile.id) == before


async def test_assets_with_equal_created_at_are_ordered_by_id(store: ProfileStore) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    same_moment = profile.created_at
    assets = [make_asset(tenant, profile.id, created_at=same_moment) for _ in range(4)]
    for asset in assets:
        await store.add_asset(tenant, profile.id, asset)
    stored = await store.get_by_customer_id(tenant, profile.id)
    assert stored is not None
    assert [a.id for a in stored.assets] == sorted(a.id for a in assets)


# --- identities ----------------------------------------------------------------------------------


async def test_link_channel(store: ProfileStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    profile = await new_profile(store, tenant)
    user = uid()
    linked = await store.link_channel(tenant, profile.id, Channel.SLACK, user)
    assert (linked.profile_id, linked.channel, linked.channel_user_id) == (profile.id, Channel.SLACK, user)
    again = await store.link_channel(tenant, profile.id, Channel.SLACK, user)
    assert again == linked  # idempotent for the same profile
    stored = await store.get_by_channel_identity(tenant, Channel.SLACK, user)
    assert stored is not None and stored.id == profile.id
    expected = sorted([*profile.channel_identities, linked], key=lambda i: (i.created_at, i.id))
    assert stored.channel_identities == expected
    someone_else = await new_profile(store, tenant)
    with pytest.raises(ConflictError):
        await store.link_channel(tenant, someone_else.id, Channel.SLACK, user)
    assert await store.get_by_customer_id(tenant, someone_else.id) == someone_else
    with pytest.raises(NotFoundError):
        await store.link_channel(tenant, uuid4(), Channel.SLACK, uid())
    with pytest.raises(NotFoundError):
        await store.link_channel(other, profile.id, Channel.SLACK, uid())
    # The identity is free in another tenant.
    theirs = await new_profile(store, other)
    assert (await store.link_channel(other, theirs.id, Channel.SLACK, user)).profile_id == theirs.id


async def test_concurrent_links_of_one_identity_have_one_winner(store: ProfileStore) -> None:
    tenant, user = new_tenant(), uid()
    profiles = [await new_profile(store, tenant) for _ in range(5)]
    results = await asyncio.gather(
        *(store.link_channel(tenant, p.id, Channel.VOICE, user) for p in profiles), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
    owner = await store.get_by_channel_identity(tenant, Channel.VOICE, user)
    assert owner is not None and owner.id == winners[0].profile_id


# --- merge ---------------------------------------------------------------------------------------


async def test_merge_moves_everything_and_newer_value_wins(store: Any) -> None:
    tenant = new_tenant()
    source, target = await new_profile(store, tenant), await new_profile(store, tenant, Channel.SMS)
    external = f"crm-{uuid4().hex[:8]}"
    await store.set_external_id(tenant, source.id, external)
    source_user = source.channel_identities[0].channel_user_id
    # "phone": target's value is newer; "email": source's value is newer; "city": source only.
    await store.update_field(tenant, source.id, make_field(tenant, source.id, "phone", "source-phone"))
    await store.update_field(tenant, target.id, make_field(tenant, target.id, "email", "target-email"))
    await store.update_field(tenant, target.id, make_field(tenant, target.id, "phone", "target-phone"))
    await store.update_field(tenant, source.id, make_field(tenant, source.id, "email", "source-email"))
    await store.update_field(tenant, source.id, make_field(tenant, source.id, "city", "Lyon"))
    source_asset = make_asset(tenant, source.id)
    await store.add_asset(tenant, source.id, source_asset)

    merged = await store.merge_profiles(tenant, source.id, target.id)

    assert merged.id == target.id and merged.merged_into_id is None
    assert {n: f.field_value for n, f in merged.fields.items()} == {
        "phone": "target-phone",
        "email": "source-email",
        "city": "Lyon",
    }
    assert all(f.profile_id == target.id for f in merged.fields.values())
    assert {i.channel_user_id for i in merged.channel_identities} == {
        source_user,
        target.channel_identities[0].channel_user_id,
    }
    assert all(i.profile_id == target.id for i in merged.channel_identities)
    assert [a.id for a in merged.assets] == [source_asset.id]
    assert merged.assets[0].profile_id == target.id
    # Whole history moved; exactly one current row per field.
    phone = await store.get_field_history(tenant, target.id, "phone")
    assert [h.field_value for h in phone] == ["source-phone", "target-phone"]
    assert phone[0].valid_to is not None and phone[1].valid_to is None
    email = await store.get_field_history(tenant, target.id, "email")
    assert [h.field_value for h in email] == ["target-email", "source-email"]
    assert email[0].valid_to is not None and email[1].valid_to is None
    # Every lookup of the source resolves to the target.
    assert await store.get_by_customer_id(tenant, source.id) == merged
    assert await store.get_by_channel_identity(tenant, Channel.WEB, source_user) == merged
    assert await store.get_by_external_id(tenant, external) == merged
    assert await store.get_field_history(tenant, source.id, "phone") == phone


async def test_writes_to_a_merged_profile_reach_its_target(store: ProfileStore) -> None:
    tenant = new_tenant()
    source, target = await new_profile(store, tenant), await new_profile(store, tenant)
    await store.merge_profiles(tenant, source.id, target.id)
    await store.update_field(tenant, source.id, make_field(tenant, source.id, "name", "Ada"))
    await store.add_asset(tenant, source.id, make_asset(tenant, source.id))
    identity = await store.link_channel(tenant, source.id, Channel.EMAIL, "ada@x.io")
    assert identity.profile_id == target.id
    current = await store.get_by_customer_id(tenant, target.id)
    assert current is not None
    assert current.fields["name"].field_value == "Ada" and current.fields["name"].profile_id == target.id
    assert len(current.assets) == 1 and current.assets[0].profile_id == target.id


async def test_merge_errors_change_nothing(store: ProfileStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    a, b, c = [await new_profile(store, tenant) for _ in range(3)]
    foreign = await new_profile(store, other)
    with pytest.raises(InvalidDataError):
        await store.merge_profiles(tenant, a.id, a.id)
    with pytest.raises(NotFoundError):
        await store.merge_profiles(tenant, a.id, uuid4())
    with pytest.raises(NotFoundError):
        await store.merge_profiles(tenant, uuid4(), a.id)
    with pytest.raises(NotFoundError):  # another tenant's profile
        await store.merge_profiles(tenant, a.id, foreign.id)
    for profile in (a, b, c):
        assert await store.get_by_customer_id(tenant, profile.id) == profile
    assert await store.get_by_customer_id(other, foreign.id) == foreign
    await store.merge_profiles(tenant, a.id, b.id)
    after_first = await store.get_by_customer_id(tenant, b.id)
    with pytest.raises(ConflictError):  # the source is already merged
        await store.merge_profiles(tenant, a.id, c.id)
    with pytest.raises(ConflictError):  # the target is already merged
        await store.merge_profiles(tenant, c.id, a.id)
    assert await store.get_by_customer_id(tenant, b.id) == after_first
    assert await store.get_by_customer_id(tenant, c.id) == c


async def test_concurrent_opposite_merges_have_one_winner(store: ProfileStore) -> None:
    tenant = new_tenant()
    a, b = await new_profile(store, tenant), await new_profile(store, tenant)
    results = await asyncio.gather(
        store.merge_profiles(tenant, a.id, b.id),
        store.merge_profiles(tenant, b.id, a.id),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, CustomerProfile)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, CustomerProfile))
    survivor = winners[0]
    assert len(survivor.channel_identities) == 2
    assert await store.get_by_customer_id(tenant, a.id) == survivor
    assert await store.get_by_customer_id(tenant, b.id) == survivor


async def test_merge_chains_resolve_to_the_last_target(store: ProfileStore) -> None:
    tenant = new_tenant()
    a, b, c = [await new_profile(store, tenant) for _ in range(3)]
    await store.merge_profiles(tenant, a.id, b.id)
    final = await store.merge_profiles(tenant, b.id, c.id)
    assert len(final.channel_identities) == 3
    assert await store.get_by_customer_id(tenant, a.id) == final
    assert await store.get_by_customer_id(tenant, b.id) == final
    user_a = a.channel_identities[0].channel_user_id
    assert await store.get_by_channel_identity(tenant, Channel.WEB, user_a) == final


# --- delete --------------------------------------------------------------------------------------


async def test_delete_profile_erases_everything_it_owns(store: Any) -> None:
    tenant, other = new_tenant(), new_tenant()
    profile = await new_profile(store, tenant)
    user = profile.channel_identities[0].channel_user_id
    external = f"crm-{uuid4().hex[:8]}"
    await store.set_external_id(tenant, profile.id, external)
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id))
    await store.add_asset(tenant, profile.id, make_asset(tenant, profile.id))
    theirs = await store.get_or_create(other, Channel.WEB, user)
    assert await store.delete_profile(other, profile.id) is False  # another tenant's id
    assert await store.delete_profile(tenant, profile.id) is True
    assert await store.get_by_customer_id(tenant, profile.id) is None
    assert await store.get_by_channel_identity(tenant, Channel.WEB, user) is None
    assert await store.get_by_external_id(tenant, external) is None
    assert await store.get_field_history(tenant, profile.id, "email") == []
    assert await store.delete_profile(tenant, profile.id) is False
    # The identity is free again: a new profile is created for it.
    fresh = await store.get_or_create(tenant, Channel.WEB, user)
    assert fresh.id != profile.id and fresh.fields == {}
    assert await store.get_by_customer_id(other, theirs.id) == theirs


async def test_delete_through_a_merged_id_erases_target_and_aliases(store: ProfileStore) -> None:
    tenant = new_tenant()
    source, target, bystander = [await new_profile(store, tenant) for _ in range(3)]
    await store.merge_profiles(tenant, source.id, target.id)
    assert await store.delete_profile(tenant, source.id) is True
    assert await store.get_by_customer_id(tenant, target.id) is None
    assert await store.get_by_customer_id(tenant, source.id) is None
    assert await store.delete_profile(tenant, target.id) is False
    assert await store.get_by_customer_id(tenant, bystander.id) == bystander


# --- copies --------------------------------------------------------------------------------------


async def test_returned_and_saved_objects_are_detached(store: ProfileStore) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    field = make_field(tenant, profile.id, value={"list": [1]})
    await store.update_field(tenant, profile.id, field)
    field.field_value["list"].append(2)
    asset = make_asset(tenant, profile.id, metadata={"a": [1]})
    await store.add_asset(tenant, profile.id, asset)
    asset.metadata["a"].append(2)
    stored = await store.get_by_customer_id(tenant, profile.id)
    assert stored is not None
    assert stored.fields["email"].field_value == {"list": [1]}
    assert stored.assets[0].metadata == {"a": [1]}
    stored.fields["email"].field_value["list"].append(3)
    stored.fields.clear()
    stored.assets.clear()
    stored.channel_identities[0].verified = True
    history = await store.get_field_history(tenant, profile.id, "email")
    history[0].field_value["list"].append(4)
    again = await store.get_by_customer_id(tenant, profile.id)
    assert again is not None
    assert again.fields["email"].field_value == {"list": [1]}
    assert again.assets[0].metadata == {"a": [1]}
    assert again.channel_identities[0].verified is False
