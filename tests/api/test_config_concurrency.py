"""Optimistic concurrency of the config API, on the in-memory and the PostgreSQL ConfigStore.

Every config object carries its ``revision`` in the body and as ``ETag``; PATCH honours
``If-Match`` (412 otherwise) and, without it, never loses a concurrent change. Races are made
deterministic with ``GatedReads``: both requests read the object before either writes (the
situation in which a plain read-modify-write loses one of the two changes), no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio

from focal.alignment.stores.config_store import ConfigStore
from focal.api.app import create_app
from focal.bootstrap import FocalServices, build_memory_services
from tests.api.conftest import ApiHarness, asgi_client, bearer, define_tool, memory_settings
from tests.support import TEST_EMBEDDING_DIMENSIONS

BACKENDS = ["memory", pytest.param("postgres", marks=pytest.mark.postgres)]
RACE_TIMEOUT_SECONDS = 30  # a bound against a hang if a gated read never comes; never reached


@pytest.fixture(params=BACKENDS)
def backend_services(request: pytest.FixtureRequest) -> FocalServices:
    """Services with the in-memory or the PostgreSQL ConfigStore (the other stores in memory).
    Sync, so that it may ask for the async session fixture ``pg_pool``."""
    services = build_memory_services(memory_settings())
    if request.param == "postgres":
        from focal.alignment.stores.postgres import PostgresConfigStore

        store = PostgresConfigStore(
            request.getfixturevalue("pg_pool"), embedding_dimensions=TEST_EMBEDDING_DIMENSIONS
        )
        services = dataclasses.replace(services, config_store=store)
    return services


@pytest_asyncio.fixture
async def api(backend_services: FocalServices) -> AsyncIterator[ApiHarness]:
    app = create_app(backend_services.settings, services=backend_services)
    tenant_id = uuid4()
    async with asgi_client(app) as client:
        yield ApiHarness(app, client, backend_services, tenant_id, bearer(tenant_id))


class GatedReads:
    """A ConfigStore whose first ``parties`` calls of ``method`` each wait, after reading, until
    all of them have read. Everything else goes straight to the real store."""

    def __init__(self, store: ConfigStore, method: str, parties: int = 2) -> None:
        self._store, self._method, self._waiting = store, method, parties
        self._barrier = asyncio.Barrier(parties)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name != self._method:
            return attribute

        async def gated(*args: Any, **kwargs: Any) -> Any:
            result = await attribute(*args, **kwargs)
            if self._waiting > 0:
                self._waiting -= 1
                await self._barrier.wait()
            return result

        return gated


@dataclass(frozen=True)
class Kind:
    name: str
    create: Callable[[str], tuple[str, dict[str, Any]]]  # agent url -> (collection url, body)
    item: Callable[[str, dict[str, Any]], str]  # (agent url, created body) -> item url
    read: str  # the ConfigStore method a PATCH reads the object with
    first: tuple[str, Any]  # two fields two concurrent PATCHes change, and their new values
    second: tuple[str, Any]


def _scenario_body() -> dict[str, Any]:
    a, b = str(uuid4()), str(uuid4())
    return {
        "name": "returns",
        "entry_step_id": a,
        "entry_condition_text": "wants to return something",
        "steps": [
            {"id": a, "name": "ask", "transitions": [{"to_step_id": b, "condition_text": "gave the order"}]},
            {"id": b, "name": "done", "is_terminal": True},
        ],
    }


KINDS = [
    Kind(
        "agent",
        lambda base: ("/v1/agents", {"name": f"agent {uuid4().hex[:8]}"}),
        lambda base, body: f"/v1/agents/{body['id']}",
        "get_agent",
        ("description", "first"),
        ("system_prompt", "second"),
    ),
    Kind(
        "rule",
        lambda base: (f"{base}/rules", {"name": "r", "condition_text": "refund", "action_text": "explain"}),
        lambda base, body: f"{base}/rules/{body['id']}",
        "get_rule",
        ("description", "first"),
        ("priority", 7),
    ),
    Kind(
        "scenario",
        lambda base: (f"{base}/scenarios", _scenario_body()),
        lambda base, body: f"{base}/scenarios/{body['id']}",
        "get_scenario",
        ("description", "first"),
        ("tags", ["second"]),
    ),
    Kind(
        "template",
        lambda base: (f"{base}/templates", {"name": "t", "text": "Hello"}),
        lambda base, body: f"{base}/templates/{body['id']}",
        "get_template",
        ("text", "first"),
        ("name", "second"),
    ),
    Kind(
        "variable",
        lambda base: (f"{base}/variables", {"name": "phone"}),
        lambda base, body: f"{base}/variables/{body['id']}",
        "get_variable",
        ("description", "first"),
        ("default_value", 4155551234),
    ),
    Kind(
        "tool_activation",
        lambda base: (f"{base}/tools", {"tool_id": "lookup_order"}),
        lambda base, body: f"{base}/tools/{body['tool_id']}",
        "get_tool_activation",
        ("enabled", False),
        ("policy_overrides", {"timeout_s": 5}),
    ),
]
by_kind = pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])


async def _created(api: ApiHarness, kind: Kind) -> tuple[str, httpx.Response]:
    agent = await api.client.post(
        "/v1/agents", json={"name": f"owner {uuid4().hex[:8]}"}, headers=api.headers
    )
    base = f"/v1/agents/{agent.json()['id']}"
    url, body = kind.create(base)
    if kind.name == "tool_activation":  # an activation names a defined tool
        await define_tool(api.client, api.headers, body["tool_id"])
    created = await api.client.post(url, json=body, headers=api.headers)
    assert created.status_code == 201, created.text
    return kind.item(base, created.json()), created


@contextlib.contextmanager
def gated(api: ApiHarness, method: str) -> Iterator[None]:
    """Route the app's ConfigStore through ``GatedReads`` on ``method`` for the block."""
    real = api.services.config_store
    api.services.config_store = GatedReads(real, method)  # type: ignore[assignment]
    try:
        yield
    finally:
        api.services.config_store = real


async def _race(*requests: Any) -> list[httpx.Response]:
    async with asyncio.timeout(RACE_TIMEOUT_SECONDS):
        return list(await asyncio.gather(*requests))


@by_kind
async def test_every_config_object_carries_its_revision_as_etag(api: ApiHarness, kind: Kind) -> None:
    url, created = await _created(api, kind)
    assert (created.json()["revision"], created.headers["etag"]) == (1, '"1"')
    fetched = await api.client.get(url, headers=api.headers)
    assert fetched.json() == created.json() and fetched.headers["etag"] == '"1"'
    field, value = kind.first
    patched = await api.client.patch(url, json={field: value}, headers=api.headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["revision"], patched.headers["etag"], patched.json()[field]) == (2, '"2"', value)


@by_kind
async def test_concurrent_patches_of_different_fields_both_land(api: ApiHarness, kind: Kind) -> None:
    url, _ = await _created(api, kind)
    (first, first_value), (second, second_value) = kind.first, kind.second
    with gated(api, kind.read):
        responses = await _race(
            api.client.patch(url, json={first: first_value}, headers=api.headers),
            api.client.patch(url, json={second: second_value}, headers=api.headers),
        )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    final = (await api.client.get(url, headers=api.headers)).json()
    assert (final[first], final[second], final["revision"]) == (first_value, second_value, 3)


async def test_many_concurrent_patches_of_an_agent_all_land(api: ApiHarness) -> None:
    """Ungated: whatever the interleaving, every PATCH's field survives (several rounds)."""
    url, _ = await _created(api, KINDS[0])
    fields = {
        "description": "d",
        "system_prompt": "p",
        "default_model": "m",
        "temperature": 1.5,
        "max_tokens": 9,
    }
    for round_number in range(3):
        changes = {
            field: value if isinstance(value, float | int) else f"{value}{round_number}"
            for field, value in fields.items()
        }
        changes["max_tokens"] = 10 + round_number
        responses = await _race(
            *(api.client.patch(url, json={f: v}, headers=api.headers) for f, v in changes.items())
        )
        assert [r.status_code for r in responses] == [200] * len(changes)
        final = (await api.client.get(url, headers=api.headers)).json()
        assert {field: final[field] for field in changes} == changes
        assert final["revision"] == 1 + len(changes) * (round_number + 1)


@by_kind
async def test_if_match_admits_only_the_current_revision(api: ApiHarness, kind: Kind) -> None:
    url, _ = await _created(api, kind)
    (first, first_value), (second, second_value) = kind.first, kind.second
    assert (await api.client.patch(url, json={first: first_value}, headers=api.headers)).status_code == 200
    before = (await api.client.get(url, headers=api.headers)).json()

    for stale in ('"1"', 'W/"2"', "2", 'garbage"'):  # old, weak, unquoted, malformed
        refused = await api.client.patch(
            url, json={second: second_value}, headers={**api.headers, "If-Match": stale}
        )
        assert refused.status_code == 412, (stale, refused.text)
        assert refused.json()["error"]["code"] == "precondition_failed"
        assert refused.headers["etag"] == '"2"'
    assert (await api.client.get(url, headers=api.headers)).json() == before  # nothing changed

    accepted = await api.client.patch(
        url, json={second: second_value}, headers={**api.headers, "If-Match": '"7", "2"'}
    )
    assert accepted.status_code == 200 and accepted.headers["etag"] == '"3"'
    assert accepted.json()[second] == second_value
    anything = await api.client.patch(
        url, json={first: first_value}, headers={**api.headers, "If-Match": "*"}
    )
    assert anything.status_code == 200 and anything.json()["revision"] == 4


@by_kind
async def test_of_two_patches_with_one_if_match_exactly_one_lands(api: ApiHarness, kind: Kind) -> None:
    url, _ = await _created(api, kind)
    (first, first_value), (second, second_value) = kind.first, kind.second
    headers = {**api.headers, "If-Match": '"1"'}
    with gated(api, kind.read):  # both pass the If-Match check before either writes
        responses = await _race(
            api.client.patch(url, json={first: first_value}, headers=headers),
            api.client.patch(url, json={second: second_value}, headers=headers),
        )
    assert sorted(r.status_code for r in responses) == [200, 412]
    final = (await api.client.get(url, headers=api.headers)).json()
    assert final["revision"] == 2
    winner = next(r for r in responses if r.status_code == 200).json()
    assert (final[first], final[second]) == (winner[first], winner[second])


async def test_a_flow_change_raced_with_an_edit_keeps_the_new_flow_and_version(api: ApiHarness) -> None:
    """The issue's race: a flow-changing PATCH against a description PATCH must never leave the
    scenario at version 1 with the old steps; every round, the version only goes up."""
    url, created = await _created(api, KINDS[2])
    scenario = created.json()
    for round_number in range(1, 4):
        new_step = str(uuid4())
        steps = [
            {"id": step["id"], "name": step["name"], "is_terminal": step["is_terminal"], "transitions": []}
            for step in scenario["steps"]
        ] + [{"id": new_step, "name": f"added in round {round_number}"}]
        with gated(api, "get_scenario"):
            flow, edit = await _race(
                api.client.patch(url, json={"steps": steps}, headers=api.headers),
                api.client.patch(url, json={"description": f"round {round_number}"}, headers=api.headers),
            )
        assert (flow.status_code, edit.status_code) == (200, 200), (flow.text, edit.text)
        scenario = (await api.client.get(url, headers=api.headers)).json()
        assert scenario["version"] == 1 + round_number
        assert scenario["description"] == f"round {round_number}"
        assert [step["id"] for step in scenario["steps"]] == [step["id"] for step in steps]
        archived = await api.services.config_store.get_archived_scenario(
            api.tenant_id, UUID(scenario["id"]), round_number
        )
        assert archived is not None and archived.version == round_number
