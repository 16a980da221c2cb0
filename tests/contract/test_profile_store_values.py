"""ProfileStore contract, values: what is saved is what is read, with its type, on every backend;
what no backend can store is an ``InvalidDataError`` before any write, and conflicts read alike.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from focal.conversation.models import Channel
from focal.errors import ConflictError, InvalidDataError
from focal.validation import MAX_JSON_DEPTH
from tests.contract.profile_backends import (
    make_asset,
    make_field,
    new_profile,
    profile_store_fixture,  # noqa: F401 - the parametrised fixture
)
from tests.contract.storable_values import (
    LONE_SURROGATE,
    NUL,
    TYPED_JSON,
    UNSTORABLE_TIMESTAMPS,
    nested,
    typed,
)
from tests.support import new_tenant

DRIVER_WORDS = ("duplicate key", "violates", "DETAIL", "Key (", "Error:")


# --- JSON keeps its types ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [TYPED_JSON, 1e16, 1e300, -2.5e-300, 10**16, 1.0, [1e16, 10**16]])
async def test_field_values_keep_their_type(store: Any, value: Any) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    stored = await store.update_field(tenant, profile.id, make_field(tenant, profile.id, "score", value))
    current = await store.get_by_customer_id(tenant, profile.id)
    [history] = await store.get_field_history(tenant, profile.id, "score")
    for read in (stored.field_value, current.fields["score"].field_value, history.field_value):
        assert typed(read) == typed(value)


async def test_asset_metadata_keeps_its_types(store: Any) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    await store.add_asset(tenant, profile.id, make_asset(tenant, profile.id, metadata=TYPED_JSON))
    current = await store.get_by_customer_id(tenant, profile.id)
    assert typed(current.assets[0].metadata) == typed(TYPED_JSON)


# --- update_field answers the stored row ---------------------------------------------------------


async def test_update_field_returns_the_row_it_stored(store: Any) -> None:
    tenant = new_tenant()
    source, target = await new_profile(store, tenant), await new_profile(store, tenant)
    await store.merge_profiles(tenant, source.id, target.id)
    # A stale valid_from and the merged id: the store stamps its own time and resolves the target.
    field = make_field(tenant, source.id, value={"n": 1e16}, valid_from=datetime(2020, 1, 1, tzinfo=UTC))
    stored = await store.update_field(tenant, source.id, field)
    [history] = await store.get_field_history(tenant, target.id, "email")
    current = await store.get_by_customer_id(tenant, target.id)
    assert stored == history == current.fields["email"]
    assert stored.id == field.id and stored.profile_id == target.id
    assert stored.valid_from > field.valid_from and stored.valid_to is None
    second = await store.update_field(tenant, target.id, make_field(tenant, target.id, value="b"))
    first, latest = await store.get_field_history(tenant, target.id, "email")
    assert second == latest and first.valid_to == second.valid_from


# --- unstorable values: InvalidDataError, nothing written -----------------------------------------

BAD_FIELD_CHANGES: dict[str, dict[str, Any]] = {
    "nan": {"field_value": math.nan},
    "infinity": {"field_value": math.inf},
    "minus-infinity": {"field_value": {"x": [-math.inf]}},
    "lone-surrogate": {"field_value": {"k": LONE_SURROGATE}},
    "lone-surrogate-key": {"field_value": {LONE_SURROGATE: 1}},
    "nested-2000": {"field_value": nested(2000)},
    "nested-past-the-limit": {"field_value": nested(MAX_JSON_DEPTH + 1)},
    "surrogate-field-name": {"field_name": f"name{LONE_SURROGATE}"},
    "nul-field-name": {"field_name": f"name{NUL}"},
}


@pytest.mark.parametrize("change", BAD_FIELD_CHANGES.values(), ids=BAD_FIELD_CHANGES.keys())
async def test_unstorable_field_is_refused_and_changes_nothing(store: Any, change: dict[str, Any]) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    await store.update_field(tenant, profile.id, make_field(tenant, profile.id, value="kept"))
    before = await store.get_by_customer_id(tenant, profile.id)
    history = await store.get_field_history(tenant, profile.id, "email")
    # model_copy(update=...) skips validation, as model_construct does: the store must re-check.
    field = make_field(tenant, profile.id, value="new").model_copy(update=change)
    with pytest.raises(InvalidDataError):
        await store.update_field(tenant, profile.id, field)
    assert await store.get_by_customer_id(tenant, profile.id) == before
    assert await store.get_field_history(tenant, profile.id, "email") == history


BAD_ASSET_CHANGES: dict[str, dict[str, Any]] = {
    "nan": {"metadata": {"total": math.nan}},
    "lone-surrogate": {"metadata": {"note": LONE_SURROGATE}},
    "nested-2000": {"metadata": {"deep": nested(2000)}},
    "surrogate-reference": {"asset_reference": f"ord-{LONE_SURROGATE}"},
    "nul-type": {"asset_type": f"order{NUL}"},
    **{
        f"created-at-{name}": {"created_at": moment}
        for name, moment in UNSTORABLE_TIMESTAMPS.items()  # OverflowError before
    },
}


@pytest.mark.parametrize("change", BAD_ASSET_CHANGES.values(), ids=BAD_ASSET_CHANGES.keys())
async def test_unstorable_asset_is_refused_and_changes_nothing(store: Any, change: dict[str, Any]) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    asset = make_asset(tenant, profile.id).model_copy(update=change)
    with pytest.raises(InvalidDataError):
        await store.add_asset(tenant, profile.id, asset)
    assert await store.get_by_customer_id(tenant, profile.id) == profile


@pytest.mark.parametrize("bad", [LONE_SURROGATE, f"a{NUL}b"], ids=["lone-surrogate", "nul"])
async def test_lookups_and_writes_refuse_unstorable_text(store: Any, bad: str) -> None:
    tenant = new_tenant()
    profile = await new_profile(store, tenant)
    calls = [
        store.get_by_external_id(tenant, bad),
        store.get_by_channel_identity(tenant, Channel.WEB, bad),
        store.get_field_history(tenant, profile.id, bad),
        store.get_or_create(tenant, Channel.WEB, bad),
        store.link_channel(tenant, profile.id, Channel.WEB, bad),
        store.set_external_id(tenant, profile.id, bad),
    ]
    for call in calls:
        with pytest.raises(InvalidDataError):
            await call
    assert await store.get_by_customer_id(tenant, profile.id) == profile


# --- conflicts read like the in-memory reference (no driver text) ---------------------------------


async def test_conflict_messages_are_the_reference_ones(store: Any) -> None:
    tenant = new_tenant()
    profile, other = await new_profile(store, tenant), await new_profile(store, tenant)
    field = make_field(tenant, profile.id)
    await store.update_field(tenant, profile.id, field)
    asset = make_asset(tenant, profile.id)
    await store.add_asset(tenant, profile.id, asset)
    external = f"crm-{uuid4().hex[:8]}"
    await store.set_external_id(tenant, profile.id, external)
    cases = [
        (store.update_field(tenant, profile.id, field), f"profile field {field.id} already exists"),
        (store.add_asset(tenant, profile.id, asset), f"profile asset {asset.id} already exists"),
        (
            store.set_external_id(tenant, other.id, external),
            f"external_id {external!r} is used by another profile",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ConflictError) as caught:
            await call
        assert str(caught.value) == message
        assert not any(word in str(caught.value) for word in DRIVER_WORDS)
    assert (await store.get_by_customer_id(tenant, other.id)).external_id is None
