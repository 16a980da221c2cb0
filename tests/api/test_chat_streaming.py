"""Streaming chat (Server-Sent Events) on the in-memory stores with a scripted model.

What a streaming client can rely on: ``delta`` events whose texts joined are exactly the recorded
answer and the ``done`` event's ``response``; ``done`` carries the body the non-streaming call
returns; a failure before any text is an ordinary error response; a failure after some text is an
``error`` event (or the FALLBACK template as the rest of the answer) and nothing half-written; a
client that goes away mid-answer leaves no trace.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from structlog.testing import capture_logs

from focal.api.schemas.chat import ChatResponse
from focal.audit.models import TurnRecord
from focal.audit.stores.inmemory import InMemoryAuditStore
from focal.errors import ProviderUnavailableError
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply
from focal.providers.llm.types import ToolCall
from tests.api.conftest import ApiHarness
from tests.api.control_support import GatedLLM
from tests.api.sse_support import Event, deltas, parse_events, read_events
from tests.loopback import serve_in_this_loop
from tests.support import until
from tests.tool_server import ToolServer
from tests.unit.turn.tool_support import API_KEY, activate, lookup_order

MESSAGE = {"channel": "WEB", "user_channel_id": "stream-user", "message": "Where is my order?"}


async def _agent(api: ApiHarness, **fields: Any) -> str:
    response = await api.client.post(
        "/v1/agents", json={"name": f"a-{uuid4().hex[:6]}", **fields}, headers=api.headers
    )
    assert response.status_code == 201
    agent_id: str = response.json()["id"]
    return agent_id


async def _fallback(api: ApiHarness, agent_id: str, text: str) -> None:
    response = await api.client.post(
        f"/v1/agents/{agent_id}/templates",
        json={"name": "sorry", "text": text, "mode": "FALLBACK"},
        headers=api.headers,
    )
    assert response.status_code == 201


def _scripted(api: ApiHarness, *replies: ScriptedReply | str) -> ScriptedLLMProvider:
    provider = ScriptedLLMProvider(replies)
    api.services.llm_provider = provider
    return provider


async def _streamed(api: ApiHarness, agent_id: str) -> list[Event]:
    """The events of one streamed chat of ``MESSAGE``, read to the end."""
    response = await api.client.post(
        f"/v1/agents/{agent_id}/chat", json={**MESSAGE, "stream": True}, headers=api.headers
    )
    return parse_events(response.text)


async def _trail(api: ApiHarness) -> tuple[list[Any], list[Any]]:
    """Every turn record and event of the harness's tenant."""
    audit = api.services.audit_store
    return (
        await audit.list_turns_by_tenant(api.tenant_id, limit=100),
        await audit.list_events(api.tenant_id, limit=100),
    )


@pytest.mark.parametrize("ask", ["body", "accept"])
async def test_deltas_then_done_with_the_body_of_the_plain_call(api: ApiHarness, ask: str) -> None:
    agent_id = await _agent(api)
    _scripted(api, ScriptedReply(text="Your order ships today.", chunks=["Your order ", "ships ", "today."]))
    body = {**MESSAGE, "stream": True} if ask == "body" else MESSAGE
    headers = {**api.headers, "Accept": "text/event-stream"} if ask == "accept" else api.headers

    response = await api.client.post(f"/v1/agents/{agent_id}/chat", json=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    assert [e.name for e in events] == ["delta", "delta", "delta", "done"]
    # trailing whitespace is held back until text follows it: the pieces join to the recorded answer
    assert deltas(events) == ["Your order", " ships", " today."]
    done = events[-1].data
    assert done["response"] == "".join(deltas(events)) == "Your order ships today."
    assert set(done) == set(ChatResponse.model_fields)  # the body of the non-streaming call
    turns, _ = await _trail(api)
    assert [(str(t.id), t.assistant_response) for t in turns] == [(done["turn_id"], done["response"])]


async def test_streamed_text_is_trimmed_like_the_recorded_answer(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    _scripted(api, ScriptedReply(text="  \nHello  there \n ", chunks=["  \n", "Hello ", " there", " \n "]))

    events = await _streamed(api, agent_id)

    assert "".join(deltas(events)) == events[-1].data["response"] == "Hello  there"


async def test_an_exclusive_template_is_one_delta_and_no_model_call(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    template = await api.client.post(
        f"/v1/agents/{agent_id}/templates",
        json={"name": "hours", "text": "We are open 9 to 5.", "mode": "EXCLUSIVE"},
        headers=api.headers,
    )
    await api.client.post(
        f"/v1/agents/{agent_id}/rules",
        json={
            "name": "hours",
            "condition_text": "where is my order",
            "action_text": "Tell the opening hours.",
            "attached_template_ids": [template.json()["id"]],
        },
        headers=api.headers,
    )
    provider = _scripted(api)  # no reply queued: any model call would fail the test

    events = await _streamed(api, agent_id)

    assert [e.name for e in events] == ["delta", "done"]
    assert deltas(events) == ["We are open 9 to 5."]
    assert provider.calls == []


async def test_a_failure_before_any_text_is_an_ordinary_error_response(api: ApiHarness) -> None:
    unknown = await api.client.post(
        f"/v1/agents/{uuid4()}/chat", json={**MESSAGE, "stream": True}, headers=api.headers
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"

    agent_id = await _agent(api)
    _scripted(api, ScriptedReply(error=ProviderUnavailableError("down", provider="scripted")))
    failed = await api.client.post(
        f"/v1/agents/{agent_id}/chat", json={**MESSAGE, "stream": True}, headers=api.headers
    )
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "service_unavailable"
    assert await _trail(api) == ([], [])


async def test_a_failure_mid_stream_without_fallback_is_an_error_event_and_writes_nothing(
    api: ApiHarness,
) -> None:
    agent_id = await _agent(api)
    _scripted(
        api,
        ScriptedReply(
            text="Half an answer",
            fail_after_chunks=1,
            error=ProviderUnavailableError("cut", provider="scripted"),
        ),
    )

    events = await _streamed(api, agent_id)

    assert [e.name for e in events] == ["delta", "error"]
    assert events[-1].data["status"] == 503
    assert events[-1].data["error"]["code"] == "service_unavailable"
    assert await _trail(api) == ([], [])
    sessions = await api.services.session_store.list_by_agent(api.tenant_id, UUID(agent_id))
    assert sessions == []


async def test_a_failure_mid_stream_is_completed_by_the_fallback_template(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    await _fallback(api, agent_id, "Sorry, please try again in a minute.")
    _scripted(
        api,
        ScriptedReply(
            text="Your order is on",
            chunks=["Your order ", "is on"],
            fail_after_chunks=1,
            error=ProviderUnavailableError("cut", provider="scripted"),
        ),
    )

    events = await _streamed(api, agent_id)

    assert deltas(events) == ["Your order", "\n\nSorry, please try again in a minute."]
    done = events[-1]
    assert done.name == "done"
    assert done.data["response"] == "Your order\n\nSorry, please try again in a minute."
    assert done.data["template_id"] is not None
    turns, events_recorded = await _trail(api)
    assert [t.assistant_response for t in turns] == [done.data["response"]]
    assert "provider_error" in {e.event_type for e in events_recorded}


async def test_text_no_store_can_keep_is_never_sent(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    _scripted(api, ScriptedReply(text="ok\x00no", chunks=["ok", "\x00no"]))

    events = await _streamed(api, agent_id)

    assert deltas(events) == ["ok"]
    assert events[-1].name == "error" and events[-1].data["status"] == 502
    assert await _trail(api) == ([], [])


async def test_a_client_that_disconnects_mid_answer_leaves_no_trace(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    hold = asyncio.Event()  # the rest of the answer never comes while the client is connected
    provider = _scripted(api, ScriptedReply(text="one two three", hold=hold))

    async with serve_in_this_loop(api.app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream(
            "POST", f"/v1/agents/{agent_id}/chat", json={**MESSAGE, "stream": True}, headers=api.headers
        ) as response:
            first = await anext(read_events(response))
            assert first.name == "delta" and first.data["text"] == "one"
        # leaving the block closed the connection mid-answer
        for _ in range(500):
            if provider.streams_closed_early:
                break
            await asyncio.sleep(0.01)
    assert provider.streams_closed_early == 1  # the model call was cancelled, not left running
    hold.set()
    assert await _trail(api) == ([], [])
    assert await api.services.session_store.list_by_agent(api.tenant_id, UUID(agent_id)) == []
    assert (
        await api.services.profile_store.get_by_channel_identity(api.tenant_id, "WEB", "stream-user") is None
    )  # type: ignore[arg-type]


async def test_a_streamed_tool_turn_hands_out_every_request_and_calls_the_tool_once(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    await api.client.post(
        f"/v1/agents/{agent_id}/rules",
        json={
            "name": "orders",
            "condition_text": "where is my order",
            "action_text": "Look the order up.",
            "attached_tool_ids": ["lookup_order"],
        },
        headers=api.headers,
    )
    shop = ToolServer(api_key=API_KEY).start()
    try:
        agent = await api.services.config_store.get_agent(api.tenant_id, UUID(agent_id))
        assert agent is not None
        await activate(api.services.config_store, agent, lookup_order(api.tenant_id, shop.url))
        call = ToolCall(id="c1", name="lookup_order", arguments={"order_number": "FD-10234"})
        _scripted(api, ScriptedReply(text="Let me look.", tool_calls=[call]), "It was delivered.")

        events = await _streamed(api, agent_id)

        assert shop.paths() == ["/orders/FD-10234"]
    finally:
        shop.stop()
    assert "".join(deltas(events)) == events[-1].data["response"] == "Let me look.\n\nIt was delivered."
    turns, _ = await _trail(api)
    assert [t.tools_executed[0]["status"] for t in turns] == ["ok"]


async def _no_refund_promises(api: ApiHarness, agent_id: str) -> None:
    """A hard constraint with a pattern check: streams of the agent are buffered until it passed."""
    rule = await api.client.post(
        f"/v1/agents/{agent_id}/rules",
        json={
            "name": "no refunds",
            "condition_text": "refund policy",
            "action_text": "Never promise a refund.",
            "is_hard_constraint": True,
            "forbid_patterns": ["(?i)refund"],
        },
        headers=api.headers,
    )
    assert rule.status_code == 201


async def test_an_answer_checked_by_a_hard_constraint_is_handed_out_once_it_passed(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    await _no_refund_promises(api, agent_id)
    provider = _scripted(
        api,
        ScriptedReply(text="You get a full refund today.", chunks=["You get ", "a full refund", " today."]),
        ScriptedReply(text="Your order ships today.", chunks=["Your order ", "ships today."]),
    )

    events = await _streamed(api, agent_id)

    # buffered: nothing of the violating first answer was sent, the compliant one in one piece
    assert deltas(events) == ["Your order ships today."]
    assert events[-1].data["response"] == "Your order ships today."
    assert [c.operation for c in provider.calls] == ["generate", "generate"]


async def test_a_retried_streamed_turn_with_an_idempotency_key_gets_the_done_body(api: ApiHarness) -> None:
    agent_id = await _agent(api)
    provider = _scripted(api, ScriptedReply(text="Shipped today.", chunks=["Shipped ", "today."]))
    headers = {**api.headers, "Idempotency-Key": "msg-42"}
    path, body = f"/v1/agents/{agent_id}/chat", {**MESSAGE, "stream": True}

    first = await api.client.post(path, json=body, headers=headers)
    again = await api.client.post(path, json=body, headers=headers)

    done = parse_events(first.text)[-1].data
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"].startswith("application/json")
    assert again.json() == done
    assert len(provider.calls) == 1
    turns, _ = await _trail(api)
    assert len(turns) == 1


async def test_a_stream_cut_off_by_the_client_is_not_replayed_for_its_idempotency_key(
    api: ApiHarness,
) -> None:
    """The turn of a stream the client left was cancelled and wrote nothing: a retry with the same
    key must run it, not replay the half stream the first request got."""
    agent_id = await _agent(api)
    hold = asyncio.Event()
    provider = _scripted(api, ScriptedReply(text="one two three", hold=hold), "Shipped today.")
    headers = {**api.headers, "Idempotency-Key": "cut-off-1"}
    path, body = f"/v1/agents/{agent_id}/chat", {**MESSAGE, "stream": True}

    async with serve_in_this_loop(api.app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", path, json=body, headers=headers) as response:
            first = await anext(read_events(response))
            assert first.name == "delta" and first.data["text"] == "one"
        for _ in range(500):
            if provider.streams_closed_early:
                break
            await asyncio.sleep(0.01)
        assert provider.streams_closed_early == 1
        hold.set()
        for _ in range(500):  # the first request's key is released or kept once its app call ends
            again = await client.post(path, json=body, headers=headers)
            if again.status_code != 409:
                break
            await asyncio.sleep(0.01)

    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    events = parse_events(again.text)
    assert events[-1].name == "done" and events[-1].data["response"] == "Shipped today."
    turns, _ = await _trail(api)
    assert [t.assistant_response for t in turns] == ["Shipped today."]


class _GatedTurnRecords(InMemoryAuditStore):
    """The in-memory audit store, whose turn-record writes wait for ``release`` (``entered`` is set
    as one arrives): a test can act while a turn is being written."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True  # False: writes pass at once
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def save_turn(self, turn: TurnRecord) -> UUID:
        if self.armed:
            self.entered.set()
            await self.release.wait()
        return await super().save_turn(turn)


async def test_a_client_that_leaves_while_the_turn_is_written_gets_it_replayed_for_its_key(
    api: ApiHarness,
) -> None:
    """Once the answer is complete the turn is written whole, even if the client has gone: so its
    Idempotency-Key must keep that turn. A retry gets the recorded answer, not a second turn (a
    second LLM call, a second answer in the trail)."""
    agent_id = await _agent(api)
    audit = _GatedTurnRecords()
    api.services.audit_store = audit
    provider = _scripted(api, ScriptedReply(text="Shipped today.", chunks=["Shipped ", "today."]), "Again.")
    headers = {**api.headers, "Idempotency-Key": "left-while-writing"}
    path, body = f"/v1/agents/{agent_id}/chat", {**MESSAGE, "stream": True}

    async with serve_in_this_loop(api.app) as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", path, json=body, headers=headers) as response:
            first = await anext(read_events(response))
            assert first.name == "delta" and first.data["text"] == "Shipped"
            await audit.entered.wait()  # the answer is complete and the turn is being written
        # leaving the block closed the connection before the done event
        audit.release.set()
        for _ in range(500):  # the first request holds its key until its turn is written
            again = await client.post(path, json=body, headers=headers)
            if again.status_code != 409:
                break
            await asyncio.sleep(0.01)

    turns = await audit.list_turns_by_tenant(api.tenant_id, limit=100)
    assert [t.assistant_response for t in turns] == ["Shipped today."]
    assert len(provider.calls) == 1
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["turn_id"] == str(turns[0].id)
    assert again.json()["response"] == "Shipped today."


async def test_a_client_that_leaves_before_the_first_piece_leaves_no_trace(api: ApiHarness) -> None:
    """A stream checked by a hard constraint sends nothing until the whole answer passed; a client
    that gives up while it is generated must cancel the turn like one that leaves mid-answer,
    not get a turn written (and paid for) that nobody receives."""
    agent_id = await _agent(api)
    await _no_refund_promises(api, agent_id)
    llm = GatedLLM(["Your order ships today.", "Your order ships today."])
    llm.gated = True
    api.services.llm_provider = llm
    headers = {**api.headers, "Idempotency-Key": "left-before-text"}
    path, body = f"/v1/agents/{agent_id}/chat", {**MESSAGE, "stream": True}

    async with serve_in_this_loop(api.app) as url, httpx.AsyncClient(base_url=url) as client:

        async def read_all() -> None:
            async with client.stream("POST", path, json=body, headers=headers) as response:
                async for _ in response.aiter_bytes():
                    pass

        reader = asyncio.ensure_future(read_all())
        await llm.entered.wait()  # the answer is being generated; nothing was sent yet
        reader.cancel()  # the client gives up: its connection closes
        await asyncio.gather(reader, return_exceptions=True)
        llm.gated = False  # the retry's call answers at once; the first one stays held
        for _ in range(500):  # the key is released once the first turn is cancelled
            again = await client.post(path, json=body, headers=headers)
            if again.status_code != 409:
                break
            await asyncio.sleep(0.01)
        llm.release.set()

    turns, _ = await _trail(api)
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    done = parse_events(again.text)[-1]
    assert done.name == "done"
    assert [t.id for t in turns] == [UUID(done.data["turn_id"])]  # the retry's turn only


async def test_a_manual_session_message_is_recorded_whole_when_its_streaming_client_leaves(
    api: ApiHarness,
) -> None:
    """A MANUAL session's message has no answer to wait for: once it is being written, a client
    that leaves must not cut the writes in half (a session counting a turn that has no record)."""
    agent_id = await _agent(api)
    audit = _GatedTurnRecords()
    audit.armed = False
    api.services.audit_store = audit
    _scripted(api, "Hello.")
    opened = await api.client.post(f"/v1/agents/{agent_id}/chat", json=MESSAGE, headers=api.headers)
    session_id = opened.json()["session_id"]
    manual = await api.client.patch(
        f"/v1/sessions/{session_id}", json={"mode": "MANUAL"}, headers=api.headers
    )
    assert manual.status_code == 200
    audit.armed = True
    headers = {**api.headers, "Idempotency-Key": "manual-left"}
    path, body = f"/v1/agents/{agent_id}/chat", {**MESSAGE, "stream": True}

    async with serve_in_this_loop(api.app) as url, httpx.AsyncClient(base_url=url) as client:

        async def read_all() -> None:
            async with client.stream("POST", path, json=body, headers=headers) as response:
                await response.aread()

        reader = asyncio.ensure_future(read_all())
        await audit.entered.wait()  # the session is saved, its turn record is being written
        with capture_logs() as logs:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await until(lambda: any(log["event"] == "streaming client left before any text" for log in logs))
        audit.release.set()
        for _ in range(500):  # the first request holds its key until its turn is written
            again = await client.post(path, json=body, headers=headers)
            if again.status_code != 409:
                break
            await asyncio.sleep(0.01)

    session = await api.services.session_store.get(api.tenant_id, UUID(session_id))
    assert session is not None
    turns = await audit.list_turns_by_session(api.tenant_id, UUID(session_id), limit=10)
    assert [t.turn_number for t in turns] == [1, 2] and session.turn_count == 2
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["turn_id"] == str(turns[1].id)
