"""``PUT /v1/profiles/{id}/fields/{name}`` on every profile backend: the answer is the stored row,
numbers keep their type, and values no backend can store are a 422 that changes nothing.

The PostgreSQL variant swaps in ``PostgresProfileStore`` on the shared test pool (the route needs
no other store), so it runs without Redis.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio

from focal.api.app import create_app
from focal.bootstrap import build_memory_services
from focal.conversation.models import Channel
from focal.profile.stores.inmemory import InMemoryProfileStore
from focal.profile.stores.store import ProfileStore
from tests.api.conftest import asgi_client, bearer, memory_settings

BACKENDS = ["inmemory", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class ProfileApi:
    client: httpx.AsyncClient
    store: ProfileStore
    tenant_id: UUID
    headers: dict[str, str]
    profile_id: UUID

    def field_url(self, name: str) -> str:
        return f"/v1/profiles/{self.profile_id}/fields/{name}"


@pytest.fixture(params=BACKENDS)
def profile_store(request: pytest.FixtureRequest) -> ProfileStore:
    """Synchronous: ``getfixturevalue`` of the async session fixture ``pg_pool`` only works here."""
    if request.param == "postgres":
        from focal.profile.stores.postgres import PostgresProfileStore

        return PostgresProfileStore(request.getfixturevalue("pg_pool"))
    return InMemoryProfileStore()


@pytest_asyncio.fixture
async def profile_api(profile_store: ProfileStore) -> AsyncIterator[ProfileApi]:
    settings = memory_settings()
    services = dataclasses.replace(build_memory_services(settings), profile_store=profile_store)
    tenant_id = uuid4()
    profile = await profile_store.get_or_create(tenant_id, Channel.WEB, f"u-{uuid4().hex[:8]}")
    async with asgi_client(create_app(settings, services=services)) as client:
        yield ProfileApi(client, profile_store, tenant_id, bearer(tenant_id), profile.id)


async def test_put_field_answers_the_stored_row(profile_api: ProfileApi) -> None:
    api = profile_api
    first = await api.client.put(api.field_url("email"), json={"value": "a@x.io"}, headers=api.headers)
    second = await api.client.put(api.field_url("email"), json={"value": "b@x.io"}, headers=api.headers)
    assert (first.status_code, second.status_code) == (200, 200)
    history = (await api.client.get(api.field_url("email") + "/history", headers=api.headers)).json()["items"]
    # The first answer was the current row then; the second closed it (valid_to) and nothing else.
    assert first.json() == {**history[0], "valid_to": None}
    assert second.json() == history[1]
    stored = await api.store.get_field_history(api.tenant_id, api.profile_id, "email")
    assert [datetime.fromisoformat(answer.json()["valid_from"]) for answer in (first, second)] == [
        row.valid_from for row in stored
    ]


@pytest.mark.parametrize("value", [1e16, 1e300, {"amount": 1e16, "count": 10**16}, [2.0, 2]])
async def test_numbers_keep_their_type(profile_api: ProfileApi, value: Any) -> None:
    api = profile_api
    answered = await api.client.put(api.field_url("score"), json={"value": value}, headers=api.headers)
    assert answered.status_code == 200
    read = await api.client.get(f"/v1/profiles/{api.profile_id}", headers=api.headers)
    # parse_int tags integers: a float that came back as an int would show up tagged
    answer = json.loads(answered.content, parse_int=lambda text: ("int", int(text)))
    profile = json.loads(read.content, parse_int=lambda text: ("int", int(text)))
    assert answer["field_value"] == _tag_ints(value)
    assert profile["fields"]["score"]["field_value"] == _tag_ints(value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '{"x": [1, NaN]}'])
async def test_non_finite_numbers_are_a_422_that_changes_nothing(
    profile_api: ProfileApi, literal: str
) -> None:
    api = profile_api
    await api.client.put(api.field_url("score"), json={"value": 1}, headers=api.headers)
    before = await api.store.get_field_history(api.tenant_id, api.profile_id, "score")
    # Python's JSON parser accepts these non-standard literals, so the body reaches the store.
    body = '{"value": ' + literal + "}"
    answered = await api.client.put(
        api.field_url("score"), content=body, headers={**api.headers, "content-type": "application/json"}
    )
    assert answered.status_code == 422
    assert "DETAIL" not in answered.text and "Error:" not in answered.text
    assert await api.store.get_field_history(api.tenant_id, api.profile_id, "score") == before


def _tag_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _tag_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tag_ints(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return ("int", value)
    return value
