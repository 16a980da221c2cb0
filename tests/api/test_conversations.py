"""Sessions, turns, profiles and memory search over HTTP (data seeded through the stores)."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from focal.audit.models import TurnRecord
from focal.conversation.models import Channel, Session
from focal.memory.models import Episode
from tests.api.conftest import ApiHarness, bearer


@pytest.fixture
async def agent_id(api: ApiHarness) -> UUID:
    response = await api.client.post("/v1/agents", json={"name": "talker"}, headers=api.headers)
    return UUID(response.json()["id"])


async def _session(api: ApiHarness, agent_id: UUID, user: str = "u1", turns: int = 0) -> Session:
    session = await api.services.session_store.save(
        Session(tenant_id=api.tenant_id, agent_id=agent_id, channel=Channel.WEB, user_channel_id=user)
    )
    for number in range(1, turns + 1):
        await api.services.audit_store.save_turn(
            TurnRecord(
                tenant_id=api.tenant_id,
                agent_id=agent_id,
                session_id=session.session_id,
                turn_number=number,
                user_message=f"question {number}",
                assistant_response=f"answer {number}",
            )
        )
    return session


async def test_session_get_list_delete(api: ApiHarness, agent_id: UUID) -> None:
    first = await _session(api, agent_id, "u1")
    second = await _session(api, agent_id, "u2")
    got = await api.client.get(f"/v1/sessions/{first.session_id}", headers=api.headers)
    assert got.status_code == 200
    assert (got.json()["user_channel_id"], got.json()["version"]) == ("u1", first.version)

    listing = (await api.client.get(f"/v1/agents/{agent_id}/sessions", headers=api.headers)).json()
    assert [item["session_id"] for item in listing["items"]] == [
        str(second.session_id),
        str(first.session_id),
    ]
    closed = (
        await api.client.get(f"/v1/agents/{agent_id}/sessions?status=CLOSED", headers=api.headers)
    ).json()
    assert closed["items"] == []
    assert (
        await api.client.get(f"/v1/agents/{agent_id}/sessions?status=NOPE", headers=api.headers)
    ).status_code == 422

    assert (
        await api.client.delete(f"/v1/sessions/{first.session_id}", headers=api.headers)
    ).status_code == 204
    assert (await api.client.get(f"/v1/sessions/{first.session_id}", headers=api.headers)).status_code == 404
    assert (
        await api.client.delete(f"/v1/sessions/{first.session_id}", headers=api.headers)
    ).status_code == 404
    assert await api.services.session_store.get(api.tenant_id, second.session_id) is not None


async def test_turns_are_paged_in_order(api: ApiHarness, agent_id: UUID) -> None:
    session = await _session(api, agent_id, turns=5)
    page = (
        await api.client.get(f"/v1/sessions/{session.session_id}/turns?limit=2&offset=2", headers=api.headers)
    ).json()
    assert [turn["turn_number"] for turn in page["items"]] == [3, 4]
    assert (page["limit"], page["offset"], page["total"]) == (2, 2, 0)  # turn_count is the pipeline's
    assert page["items"][0]["user_message"] == "question 3"
    missing = await api.client.get(f"/v1/sessions/{uuid4()}/turns", headers=api.headers)
    assert missing.status_code == 404


async def test_turns_outlive_the_session(api: ApiHarness, agent_id: UUID) -> None:
    session = await _session(api, agent_id, turns=2)
    await api.client.delete(f"/v1/sessions/{session.session_id}", headers=api.headers)
    page = (await api.client.get(f"/v1/sessions/{session.session_id}/turns", headers=api.headers)).json()
    assert [turn["turn_number"] for turn in page["items"]] == [1, 2]
    assert page["total"] is None


async def test_sessions_and_turns_are_tenant_isolated(api: ApiHarness, agent_id: UUID) -> None:
    session = await _session(api, agent_id, turns=1)
    intruder = bearer(uuid4())
    for method, path in (
        ("GET", f"/v1/sessions/{session.session_id}"),
        ("DELETE", f"/v1/sessions/{session.session_id}"),
        ("GET", f"/v1/sessions/{session.session_id}/turns"),
        ("GET", f"/v1/agents/{agent_id}/sessions"),
    ):
        assert (await api.client.request(method, path, headers=intruder)).status_code == 404, path
    assert await api.services.session_store.get(api.tenant_id, session.session_id) is not None


async def test_profile_reads_fields_channels_and_merge(api: ApiHarness) -> None:
    store = api.services.profile_store
    alice = await store.get_or_create(api.tenant_id, Channel.WEB, "alice-web")
    duplicate = await store.get_or_create(api.tenant_id, Channel.SMS, "+100")

    got = (await api.client.get(f"/v1/profiles/{alice.id}", headers=api.headers)).json()
    assert got["channel_identities"][0]["channel_user_id"] == "alice-web"
    by_channel = await api.client.get(
        "/v1/profiles/by-channel",
        params={"channel": "WEB", "user_channel_id": "alice-web"},
        headers=api.headers,
    )
    assert by_channel.json()["id"] == str(alice.id)
    unknown = await api.client.get(
        "/v1/profiles/by-channel", params={"channel": "WEB", "user_channel_id": "nobody"}, headers=api.headers
    )
    assert unknown.status_code == 404

    field_url = f"/v1/profiles/{alice.id}/fields/city"
    first = await api.client.put(field_url, json={"value": "Lyon"}, headers=api.headers)
    assert first.status_code == 200 and first.json()["field_value"] == "Lyon"
    await api.client.put(
        field_url, json={"value": "Paris", "source": "EXTRACTED", "confidence": 0.8}, headers=api.headers
    )
    history = (await api.client.get(f"{field_url}/history", headers=api.headers)).json()["items"]
    assert [(f["field_value"], f["valid_to"] is None) for f in history] == [("Lyon", False), ("Paris", True)]
    bad = await api.client.put(field_url, json={"value": "X", "confidence": 2}, headers=api.headers)
    assert bad.status_code == 422
    assert len((await api.client.get(f"{field_url}/history", headers=api.headers)).json()["items"]) == 2

    linked = await api.client.post(
        f"/v1/profiles/{alice.id}/channels",
        json={"channel": "EMAIL", "channel_user_id": "a@x.io"},
        headers=api.headers,
    )
    assert linked.status_code == 200 and linked.json()["profile_id"] == str(alice.id)
    taken = await api.client.post(
        f"/v1/profiles/{duplicate.id}/channels",
        json={"channel": "EMAIL", "channel_user_id": "a@x.io"},
        headers=api.headers,
    )
    assert taken.status_code == 409

    merged = await api.client.post(
        f"/v1/profiles/{alice.id}/merge", json={"source_id": str(duplicate.id)}, headers=api.headers
    )
    assert merged.status_code == 200
    identities = {i["channel_user_id"] for i in merged.json()["channel_identities"]}
    assert identities == {"alice-web", "+100", "a@x.io"}
    resolved = await api.client.get(f"/v1/profiles/{duplicate.id}", headers=api.headers)
    assert resolved.json()["id"] == str(alice.id)
    into_itself = await api.client.post(
        f"/v1/profiles/{alice.id}/merge", json={"source_id": str(alice.id)}, headers=api.headers
    )
    assert into_itself.status_code == 422


async def test_profiles_are_tenant_isolated(api: ApiHarness) -> None:
    profile = await api.services.profile_store.get_or_create(api.tenant_id, Channel.WEB, "secret-user")
    intruder = bearer(uuid4())
    for method, path, kwargs in (
        ("GET", f"/v1/profiles/{profile.id}", {}),
        ("GET", "/v1/profiles/by-channel?channel=WEB&user_channel_id=secret-user", {}),
        ("PUT", f"/v1/profiles/{profile.id}/fields/city", {"json": {"value": "x"}}),
        ("GET", f"/v1/profiles/{profile.id}/fields/city/history", {}),
        ("POST", f"/v1/profiles/{profile.id}/channels", {"json": {"channel": "SMS", "channel_user_id": "1"}}),
        ("POST", f"/v1/profiles/{profile.id}/merge", {"json": {"source_id": str(uuid4())}}),
    ):
        response = await api.client.request(method, path, headers=intruder, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, path
    unchanged = await api.services.profile_store.get_by_customer_id(api.tenant_id, profile.id)
    assert unchanged is not None and unchanged.fields == {} and len(unchanged.channel_identities) == 1


async def test_memory_search_vector_and_text(api: ApiHarness, agent_id: UUID) -> None:
    provider = api.services.embedding_provider
    customer, other_customer = uuid4(), uuid4()
    for content, profile in (
        ("my parcel arrived damaged", customer),
        ("I love the blue sweater", customer),
        ("my parcel is lost", other_customer),
    ):
        await api.services.memory_store.add_episode(
            Episode(
                tenant_id=api.tenant_id,
                agent_id=agent_id,
                customer_profile_id=profile,
                content=content,
                embedding=await provider.embed(content),
                embedding_model=provider.model_id,
            )
        )
    url = f"/v1/agents/{agent_id}/memory/search"
    vector = await api.client.post(
        url, json={"query": "damaged parcel", "customer_profile_id": str(customer)}, headers=api.headers
    )
    items = vector.json()["items"]
    assert items[0]["content"] == "my parcel arrived damaged"
    assert {item["customer_profile_id"] for item in items} == {str(customer)}
    assert items[0]["score"] > 0 and "embedding" not in items[0]

    text = await api.client.post(
        url, json={"query": "parcel", "mode": "text", "limit": 5}, headers=api.headers
    )
    assert {item["content"] for item in text.json()["items"]} == {
        "my parcel arrived damaged",
        "my parcel is lost",
    }
    assert all(item["score"] is None for item in text.json()["items"])

    bad_mode = await api.client.post(url, json={"query": "x", "mode": "fuzzy"}, headers=api.headers)
    assert bad_mode.status_code == 422
    too_many = await api.client.post(url, json={"query": "x", "limit": 1000}, headers=api.headers)
    assert too_many.status_code == 422
    blank = await api.client.post(url, json={"query": "   "}, headers=api.headers)
    assert blank.status_code == 422


@pytest.mark.parametrize("offset", [0, 1, 50])
async def test_turns_of_an_unknown_session_are_404_at_any_offset(
    api: ApiHarness, agent_id: UUID, offset: int
) -> None:
    known = await _session(api, agent_id, turns=2)
    missing = await api.client.get(f"/v1/sessions/{uuid4()}/turns?offset={offset}", headers=api.headers)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    foreign = await api.client.get(
        f"/v1/sessions/{known.session_id}/turns?offset={offset}", headers=bearer(uuid4())
    )
    assert foreign.status_code == 404
    # A known session past its last turn is an empty page, not a 404; so is a deleted session's.
    past_the_end = await api.client.get(
        f"/v1/sessions/{known.session_id}/turns?offset=5", headers=api.headers
    )
    assert (past_the_end.status_code, past_the_end.json()["items"]) == (200, [])
    await api.client.delete(f"/v1/sessions/{known.session_id}", headers=api.headers)
    deleted = await api.client.get(f"/v1/sessions/{known.session_id}/turns?offset=1", headers=api.headers)
    assert deleted.status_code == 200 and [t["turn_number"] for t in deleted.json()["items"]] == [2]


async def test_channel_identities_are_normalised_alike_by_chat_and_profile_routes(
    api: ApiHarness, agent_id: UUID
) -> None:
    client, headers = api.client, api.headers
    chat = await client.post(
        f"/v1/agents/{agent_id}/chat",
        json={"channel": "WEB", "user_channel_id": "  visitor-7\t", "message": "hello"},
        headers=headers,
    )
    assert chat.status_code == 200, chat.text
    for spelling in ("visitor-7", " visitor-7 ", "\tvisitor-7\n"):
        found = await client.get(
            "/v1/profiles/by-channel", params={"channel": "WEB", "user_channel_id": spelling}, headers=headers
        )
        assert found.status_code == 200, spelling
    profile_id = found.json()["id"]
    assert [i["channel_user_id"] for i in found.json()["channel_identities"]] == ["visitor-7"]

    linked = await client.post(
        f"/v1/profiles/{profile_id}/channels",
        json={"channel": "SMS", "channel_user_id": "  +4915100  "},
        headers=headers,
    )
    assert linked.status_code == 200 and linked.json()["channel_user_id"] == "+4915100"
    again = await client.post(
        f"/v1/profiles/{profile_id}/channels",
        json={"channel": "SMS", "channel_user_id": "+4915100"},
        headers=headers,
    )
    assert again.status_code == 200 and again.json()["id"] == linked.json()["id"]  # one identity, not two
    by_sms = await client.post(
        f"/v1/agents/{agent_id}/chat",
        json={"channel": "SMS", "user_channel_id": "+4915100", "message": "hi"},
        headers=headers,
    )
    session = (await client.get(f"/v1/sessions/{by_sms.json()['session_id']}", headers=headers)).json()
    assert session["customer_profile_id"] == profile_id

    for blank in ("   ", ""):
        refused = await client.get(
            "/v1/profiles/by-channel", params={"channel": "WEB", "user_channel_id": blank}, headers=headers
        )
        assert refused.status_code == 422
        link_blank = await client.post(
            f"/v1/profiles/{profile_id}/channels",
            json={"channel": "SMS", "channel_user_id": blank},
            headers=headers,
        )
        assert link_blank.status_code == 422
    profile = (await client.get(f"/v1/profiles/{profile_id}", headers=headers)).json()
    assert len(profile["channel_identities"]) == 2
