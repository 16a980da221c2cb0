"""The ProfileStore backends of the contract suite, and builders for valid test models.

Every ``tests/contract/test_profile_store*.py`` module imports ``profile_store_fixture`` and runs
each test against every backend; a new backend is one more param and factory entry here.
``set_external_id`` is not in the ABC yet (see the in-memory store's docstring); both backends
have it, and the tests that need an external id use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.conversation.models import Channel
from focal.profile.models import CustomerProfile, ProfileAsset, ProfileField
from focal.profile.stores.inmemory import InMemoryProfileStore
from focal.profile.stores.store import ProfileStore

BACKENDS = ["inmemory", pytest.param("postgres", marks=pytest.mark.postgres)]


def _postgres(request: pytest.FixtureRequest) -> ProfileStore:
    from focal.profile.stores.postgres import PostgresProfileStore

    return PostgresProfileStore(request.getfixturevalue("pg_pool"))


FACTORIES: dict[str, Callable[[pytest.FixtureRequest], ProfileStore]] = {
    "inmemory": lambda request: InMemoryProfileStore(),
    "postgres": _postgres,
}


@pytest.fixture(params=BACKENDS, name="store")
def profile_store_fixture(request: pytest.FixtureRequest) -> Any:  # Any: set_external_id is beyond the ABC
    return FACTORIES[request.param](request)


def uid() -> str:
    return f"user-{uuid4().hex[:10]}"


def make_field(
    tenant_id: UUID, profile_id: UUID, name: str = "email", value: Any = "a@b.c", **kw: Any
) -> ProfileField:
    return ProfileField(tenant_id=tenant_id, profile_id=profile_id, field_name=name, field_value=value, **kw)


def make_asset(tenant_id: UUID, profile_id: UUID, **kw: Any) -> ProfileAsset:
    values: dict[str, Any] = {"asset_type": "order", "asset_reference": f"ord-{uuid4().hex[:6]}"}
    values.update(kw)
    return ProfileAsset(tenant_id=tenant_id, profile_id=profile_id, **values)


async def new_profile(
    store: ProfileStore, tenant_id: UUID, channel: Channel = Channel.WEB
) -> CustomerProfile:
    return await store.get_or_create(tenant_id, channel, uid())


__all__ = ["BACKENDS", "make_asset", "make_field", "new_profile", "profile_store_fixture", "uid"]
