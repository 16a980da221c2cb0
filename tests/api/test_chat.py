"""``POST /v1/agents/{agent_id}/chat`` over HTTP, on the in-memory stores and offline providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest
import pytest_asyncio

from focal.api.app import create_app
from focal.bootstrap import build_memory_services
from focal.conversation.models import Channel, SessionStatus
from focal.demo import DEMO_CONVERSATION, load_demo_agent
from focal.demo_shop import DemoShop
from focal.errors import InvalidResponseError, ProviderUnavailableError
from tests.api.conftest import ApiHarness, asgi_client, bearer, memory_settings
from tests.unit.turn.support import RecordingLLM

DIMENSIONS = 1536  # the hashing embedder's default: few collisions, so matches are lexical


@pytest_asyncio.fixture
async def chat_api() -> AsyncIterator[ApiHarness]:
    settings = memory_settings(embedding={"provider": "hashing", "dimensions": DIMENSIONS})
    services = build_memory_services(settings)
    app = create_app(settings, services=services)
    tenant_id = uuid4()
    async with asgi_client(app) as client:
        yield ApiHarness(app, client, services, tenant_id, bearer(tenant_id))


def _body(message: str, **extra: Any) -> dict[str, Any]:
    return {"channel": "WEB", "user_channel_id": "visitor-1", "message": message, **extra}


async def _written(api: ApiHarness, agent_id: UUID) -> tuple[object, ...]:
    services, tenant = api.services, api.tenant_id
    sessions = await services.session_store.list_by_agent(tenant, agent_id)
    turns = await services.audit_store.list_turns_by_tenant(tenant)
    events = await services.audit_store.list_events(tenant)
    query = await services.embedding_provider.embed("anything")
    episodes = await services.memory_store.vector_search_episodes(
        query, tenant, agent_id, min_score=-1.0, limit=1000
    )
    return (
        [(s.session_id, s.version) for s in sessions],
        [t.id for t in turns],
        [e.id for e in events],
        sorted(str(e.id) for e, _ in episodes),
    )


async def test_chat_with_an_agent_configured_over_the_api(chat_api: ApiHarness):
    client, headers = chat_api.client, chat_api.headers
    agent = (await client.post("/v1/agents", json={"name": "shop"}, headers=headers)).json()
    rule = await client.post(
        f"/v1/agents/{agent['id']}/rules",
        json={
            "name": "shipping",
            "condition_text": "how much shipping cost",
            "action_text": "Shipping is free above 50 EUR.",
        },
        headers=headers,
    )
    assert rule.status_code == 201, rule.text

    first = await client.post(
        f"/v1/agents/{agent['id']}/chat", json=_body("  How much is shipping?  "), headers=headers
    )
    assert first.status_code == 200, first.text
    data = first.json()
    assert set(data) == {
        "session_id",
        "turn_id",
        "turn_number",
        "response",
        "matched_rules",
        "scenario",
        "template_id",
        "usage",
        "latency_ms",
        "session_mode",
    }
    assert data["session_mode"] == "AUTO"
    assert data["turn_number"] == 1 and data["response"] == "Shipping is free above 50 EUR."
    assert [(m["rule_id"], m["name"]) for m in data["matched_rules"]] == [(rule.json()["id"], "shipping")]
    assert data["scenario"] is None and data["template_id"] is None
    assert data["usage"]["total_tokens"] > 0 and data["latency_ms"] > 0

    second = await client.post(
        f"/v1/agents/{agent['id']}/chat", json=_body("thanks", session_id=data["session_id"]), headers=headers
    )
    assert (second.status_code, second.json()["turn_number"], second.json()["session_id"]) == (
        200,
        2,
        data["session_id"],
    )
    turns = await client.get(f"/v1/sessions/{data['session_id']}/turns", headers=headers)
    assert [t["user_message"] for t in turns.json()["items"]] == ["How much is shipping?", "thanks"]


async def test_demo_conversation_over_http(demo_shop: DemoShop, chat_api: ApiHarness):
    agent = await load_demo_agent(chat_api.services, chat_api.tenant_id, demo_shop)
    session_id = None
    steps = []
    for message in DEMO_CONVERSATION:
        body = _body(message, session_id=session_id) if session_id else _body(message)
        response = await chat_api.client.post(
            f"/v1/agents/{agent.id}/chat", json=body, headers=chat_api.headers
        )
        assert response.status_code == 200, response.text
        session_id = response.json()["session_id"]
        scenario = response.json()["scenario"]
        steps.append(scenario["step_name"] if scenario else None)
    assert steps[2:6] == [
        "Ask for the order number",
        "Ask for the reason",
        "Confirm the return",
        "Return registered",
    ]
    # the label was really created in the shop, by the tool the model called at the last step
    assert [label["order_number"] for label in demo_shop.labels.values()] == ["FD-10234"]
    turns = await chat_api.client.get(f"/v1/sessions/{session_id}/turns", headers=chat_api.headers)
    executed = [t["tools_executed"] for t in turns.json()["items"]]
    assert [[(c["name"], c["status"]) for c in calls] for calls in executed][3:6] == [
        [("demo_lookup_order", "ok")],
        [],
        [("demo_create_return_label", "ok")],
    ]
    variables = await chat_api.client.get(f"/v1/sessions/{session_id}/variables", headers=chat_api.headers)
    assert variables.json()["variables"]["order"]["item"] == "electric kettle"


@pytest.mark.parametrize(
    "body",
    [
        _body("   "),
        _body(""),
        _body("x" * 16_001),
        _body("hi", unexpected="field"),
        _body("hi", channel="CARRIER_PIGEON"),
        _body("hi", session_id="not-a-uuid"),
        {"channel": "WEB", "message": "hi"},
        _body("hi", user_channel_id="  "),
    ],
)
async def test_bad_bodies_are_422_and_write_nothing(
    demo_shop: DemoShop, chat_api: ApiHarness, body: dict[str, Any]
):
    agent = await load_demo_agent(chat_api.services, chat_api.tenant_id, demo_shop)
    response = await chat_api.client.post(f"/v1/agents/{agent.id}/chat", json=body, headers=chat_api.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert await _written(chat_api, agent.id) == ([], [], [], [])


async def test_unknown_foreign_and_disabled_agents_and_sessions(demo_shop: DemoShop, chat_api: ApiHarness):
    client, headers, services = chat_api.client, chat_api.headers, chat_api.services
    agent = await load_demo_agent(services, chat_api.tenant_id, demo_shop)
    other_tenant = uuid4()
    foreign_agent = await load_demo_agent(services, other_tenant, demo_shop)
    foreign_turn = await client.post(
        f"/v1/agents/{foreign_agent.id}/chat", json=_body("hello"), headers=bearer(other_tenant)
    )
    assert foreign_turn.status_code == 200
    mine = (await client.post(f"/v1/agents/{agent.id}/chat", json=_body("hello"), headers=headers)).json()
    before = await _written(chat_api, agent.id)

    assert (
        await client.post(f"/v1/agents/{uuid4()}/chat", json=_body("hi"), headers=headers)
    ).status_code == 404
    assert (
        await client.post(f"/v1/agents/{foreign_agent.id}/chat", json=_body("hi"), headers=headers)
    ).status_code == 404
    foreign_session = _body("hi", session_id=foreign_turn.json()["session_id"])
    response = await client.post(f"/v1/agents/{agent.id}/chat", json=foreign_session, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    wrong_identity = _body("hi", session_id=mine["session_id"], user_channel_id="someone-else")
    assert (
        await client.post(f"/v1/agents/{agent.id}/chat", json=wrong_identity, headers=headers)
    ).status_code == 422
    assert (await client.post(f"/v1/agents/{agent.id}/chat", json=_body("hi"))).status_code == 401

    session = await services.session_store.get(chat_api.tenant_id, UUID(mine["session_id"]))
    assert session is not None
    session.status = SessionStatus.CLOSED
    saved = await services.session_store.save(session)
    before = ([(saved.session_id, saved.version)], *before[1:])
    closed_body = _body("hi", session_id=mine["session_id"])
    response = await client.post(f"/v1/agents/{agent.id}/chat", json=closed_body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict")

    await services.config_store.save_agent(agent.model_copy(update={"enabled": False}))
    response = await client.post(f"/v1/agents/{agent.id}/chat", json=_body("hi"), headers=headers)
    assert response.status_code == 409 and "disabled" in response.json()["error"]["message"]
    assert await _written(chat_api, agent.id) == before


@pytest.mark.parametrize(
    ("error", "status"),
    [(ProviderUnavailableError("vendor down"), 503), (InvalidResponseError("garbage"), 502)],
)
async def test_provider_failure_without_fallback_is_5xx_and_saves_nothing(
    chat_api: ApiHarness, error: Exception, status: int
):
    client, headers = chat_api.client, chat_api.headers
    agent = (await client.post("/v1/agents", json={"name": "no fallback"}, headers=headers)).json()
    chat_api.services.llm_provider = RecordingLLM(fail_with=error)  # type: ignore[arg-type]

    response = await client.post(f"/v1/agents/{agent['id']}/chat", json=_body("hello"), headers=headers)

    assert response.status_code == status, response.text
    assert await _written(chat_api, UUID(agent["id"])) == ([], [], [], [])
    profile = await chat_api.services.profile_store.get_by_channel_identity(
        chat_api.tenant_id, Channel.WEB, "visitor-1"
    )
    assert profile is None


async def test_fallback_template_answers_over_http(demo_shop: DemoShop, chat_api: ApiHarness):
    agent = await load_demo_agent(chat_api.services, chat_api.tenant_id, demo_shop)
    chat_api.services.llm_provider = RecordingLLM(fail_with=ProviderUnavailableError("vendor down"))
    response = await chat_api.client.post(
        f"/v1/agents/{agent.id}/chat", json=_body("hello"), headers=chat_api.headers
    )
    assert response.status_code == 200
    assert response.json()["response"].startswith("Sorry, I cannot answer right now.")
    assert response.json()["template_id"] is not None


async def test_concurrent_turns_on_one_session_one_gets_409(chat_api: ApiHarness):
    client, headers = chat_api.client, chat_api.headers
    agent = (await client.post("/v1/agents", json={"name": "racy"}, headers=headers)).json()
    url = f"/v1/agents/{agent['id']}/chat"
    first = (await client.post(url, json=_body("hello"), headers=headers)).json()
    llm = RecordingLLM()
    llm.rendezvous = 2  # both turns reach the LLM before either saves its session
    chat_api.services.llm_provider = llm

    responses = await asyncio.gather(
        client.post(url, json=_body("one", session_id=first["session_id"]), headers=headers),
        client.post(url, json=_body("two", session_id=first["session_id"]), headers=headers),
    )

    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = next(r.json() for r in responses if r.status_code == 200)
    turns = (await client.get(f"/v1/sessions/{first['session_id']}/turns", headers=headers)).json()["items"]
    assert [t["id"] for t in turns] == [first["turn_id"], winner["turn_id"]]


async def test_a_tenant_id_in_the_body_is_422_and_writes_nothing_for_either_tenant(
    demo_shop: DemoShop, chat_api: ApiHarness
):
    """The tenant comes from the token only: a body naming another tenant is refused outright."""
    services, tenant = chat_api.services, chat_api.tenant_id
    agent = await load_demo_agent(services, tenant, demo_shop)
    other_tenant = uuid4()
    other_agent = await load_demo_agent(services, other_tenant, demo_shop)

    for agent_id in (agent.id, other_agent.id):
        response = await chat_api.client.post(
            f"/v1/agents/{agent_id}/chat",
            json=_body("hello", tenant_id=str(other_tenant)),
            headers=chat_api.headers,
        )
        assert response.status_code == 422, response.text
        assert "tenant_id" in response.text

    assert await _written(chat_api, agent.id) == ([], [], [], [])
    for owner in (tenant, other_tenant):
        assert await services.audit_store.list_turns_by_tenant(owner) == []
        assert await services.audit_store.list_events(owner) == []
        assert await services.profile_store.get_by_channel_identity(owner, Channel.WEB, "visitor-1") is None
        assert await services.session_store.get_by_channel(owner, Channel.WEB, "visitor-1") is None
    assert await services.session_store.list_by_agent(other_tenant, other_agent.id) == []


async def test_a_message_no_store_can_keep_is_422_before_the_llm_and_writes_nothing(chat_api: ApiHarness):
    agent = (await chat_api.client.post("/v1/agents", json={"name": "nul"}, headers=chat_api.headers)).json()
    llm = RecordingLLM()
    chat_api.services.llm_provider = llm
    url = f"/v1/agents/{agent['id']}/chat"
    first = await chat_api.client.post(url, json=_body("hello"), headers=chat_api.headers)
    before = await _written(chat_api, UUID(agent["id"]))

    response = await chat_api.client.post(url, json=_body("hello\x00again"), headers=chat_api.headers)

    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_data")
    assert "NUL" in response.json()["error"]["message"]
    assert len(llm.calls) == 1  # only the first turn reached the model
    assert await _written(chat_api, UUID(agent["id"])) == before
    following = await chat_api.client.post(url, json=_body("hello again"), headers=chat_api.headers)
    assert (
        following.json()["turn_number"] == 2 and following.json()["session_id"] == first.json()["session_id"]
    )
