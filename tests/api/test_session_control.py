"""``POST /v1/sessions/{id}/messages``, ``PATCH /v1/sessions/{id}`` and ``POST
/v1/sessions/{id}/close``: tenant isolation, If-Match on the session's version, refusals that
change nothing, and an operator's reply racing a turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

import pytest

from tests.api.conftest import bearer
from tests.api.control_support import ControlApi, control_api, history_of

__all__ = ["control_api"]  # fixture


async def _session(api: ControlApi) -> dict[str, Any]:
    agent = await api.agent()
    api.llm.enqueue("Hello!")
    turn = await api.chat(agent["id"], "hi there")
    assert turn.status_code == 200, turn.text
    session = await api.client.get(f"/v1/sessions/{turn.json()['session_id']}", headers=api.headers)
    return {"agent_id": agent["id"], **session.json()}


async def _state(api: ControlApi, session_id: str) -> tuple[Any, ...]:
    session = (await api.client.get(f"/v1/sessions/{session_id}", headers=api.headers)).json()
    events = await api.services.audit_store.list_events(api.tenant_id)
    return (
        session["version"],
        session["mode"],
        session["status"],
        len(await api.turns(session_id)),
        len(events),
    )


async def test_another_tenants_session_is_not_found_and_untouched(control_api: ControlApi) -> None:
    api = control_api
    session = await _session(api)
    before = await _state(api, session["session_id"])
    other = bearer(uuid4())
    path = f"/v1/sessions/{session['session_id']}"
    for response in (
        await api.client.post(f"{path}/messages", json={"text": "hi"}, headers=other),
        await api.client.patch(path, json={"mode": "MANUAL"}, headers=other),
        await api.client.post(f"{path}/close", headers=other),
        await api.client.post(f"/v1/sessions/{uuid4()}/messages", json={"text": "hi"}, headers=api.headers),
    ):
        assert response.status_code == 404, response.text
    assert await _state(api, session["session_id"]) == before


async def test_if_match_guards_the_mode_and_close(control_api: ControlApi) -> None:
    api = control_api
    session = await _session(api)
    path, version = f"/v1/sessions/{session['session_id']}", session["version"]
    before = await _state(api, session["session_id"])
    stale = await api.client.patch(
        path, json={"mode": "MANUAL"}, headers={**api.headers, "If-Match": f'"{version - 1}"'}
    )
    assert (stale.status_code, stale.headers["etag"]) == (412, f'"{version}"')
    stale_close = await api.client.post(f"{path}/close", headers={**api.headers, "If-Match": '"999"'})
    assert stale_close.status_code == 412
    assert await _state(api, session["session_id"]) == before
    manual = await api.client.patch(
        path, json={"mode": "MANUAL"}, headers={**api.headers, "If-Match": f'"{version}"'}
    )
    assert (manual.status_code, manual.json()["mode"], manual.json()["version"]) == (
        200,
        "MANUAL",
        version + 1,
    )
    (changed,) = await api.events("session_mode_changed")
    assert (changed.event_data["from"], changed.event_data["to"]) == ("AUTO", "MANUAL")
    same = await api.client.patch(path, json={"mode": "MANUAL"}, headers=api.headers)
    assert (same.status_code, same.json()["version"]) == (200, version + 1)  # nothing to change: no write
    assert len(await api.events("session_mode_changed")) == 1


async def test_an_operator_set_manual_mode_stops_the_llm(control_api: ControlApi) -> None:
    api = control_api
    session = await _session(api)
    await api.client.patch(
        f"/v1/sessions/{session['session_id']}", json={"mode": "MANUAL"}, headers=api.headers
    )
    calls = len(api.llm.calls)
    waiting = await api.chat(session["agent_id"], "are you there", session_id=session["session_id"])
    assert waiting.status_code == 202
    assert len(api.llm.calls) == calls


async def test_a_closed_session_refuses_replies_and_mode_changes_and_closing_again_is_a_no_op(
    control_api: ControlApi,
) -> None:
    api = control_api
    session = await _session(api)
    path = f"/v1/sessions/{session['session_id']}"
    closed = await api.client.post(f"{path}/close", headers=api.headers)
    assert (closed.status_code, closed.json()["status"]) == (200, "CLOSED")
    assert closed.headers["etag"] == f'"{closed.json()["version"]}"'
    before = await _state(api, session["session_id"])
    reply = await api.client.post(f"{path}/messages", json={"text": "hello"}, headers=api.headers)
    mode = await api.client.patch(path, json={"mode": "MANUAL"}, headers=api.headers)
    assert (reply.status_code, mode.status_code) == (409, 409)
    again = await api.client.post(f"{path}/close", headers=api.headers)
    assert (again.status_code, again.json()["version"]) == (200, closed.json()["version"])
    assert await _state(api, session["session_id"]) == before
    assert len(await api.events("session_closed")) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"text": "   "},
        {"text": ""},
        {},
        {"text": "x" * 16_001},
        {"text": "hi", "author": ""},
        {"text": "a\x00b"},
    ],
)
async def test_a_bad_reply_is_refused_and_changes_nothing(
    control_api: ControlApi, body: dict[str, Any]
) -> None:
    api = control_api
    session = await _session(api)
    before = await _state(api, session["session_id"])
    refused = await api.client.post(
        f"/v1/sessions/{session['session_id']}/messages", json=body, headers=api.headers
    )
    assert refused.status_code == 422, refused.text
    assert await _state(api, session["session_id"]) == before


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"])
async def test_a_reply_that_is_not_text_is_refused_naming_the_field_sent(
    control_api: ControlApi, text: str
) -> None:
    api = control_api
    session = await _session(api)
    refused = await api.client.post(
        f"/v1/sessions/{session['session_id']}/messages",
        content=json.dumps({"text": text}),
        headers={**api.headers, "content-type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert "text" in message and "TurnRecord" not in message and "assistant_response" not in message


async def test_an_operator_reply_in_auto_mode_is_recorded_and_seen_by_the_next_turn(
    control_api: ControlApi,
) -> None:
    api = control_api
    session = await _session(api)
    reply = await api.client.post(
        f"/v1/sessions/{session['session_id']}/messages",
        json={"text": "A human chiming in."},
        headers=api.headers,
    )
    assert (reply.status_code, reply.json()["session_mode"], reply.json()["turn_number"]) == (201, "AUTO", 2)
    api.llm.enqueue("Noted.")
    await api.chat(session["agent_id"], "ok", session_id=session["session_id"])
    assert history_of(api.llm.calls[-1]) == [
        ("user", "hi there"),
        ("assistant", "Hello!\n\nA human chiming in."),
    ]


async def test_an_operator_reply_racing_a_turn_takes_the_next_number(control_api: ControlApi) -> None:
    """The turn (held in its LLM call) loses its session save to the reply: 409, no trace; the
    reply is turn 2 (default policy: reject)."""
    api = control_api
    session = await _session(api)
    api.llm.gated = True
    api.llm.entered.clear()
    api.llm.enqueue("late answer")
    turn = asyncio.create_task(api.chat(session["agent_id"], "question", session_id=session["session_id"]))
    await api.llm.entered.wait()
    reply = await api.client.post(
        f"/v1/sessions/{session['session_id']}/messages",
        json={"text": "Operator first."},
        headers=api.headers,
    )
    assert (reply.status_code, reply.json()["turn_number"]) == (201, 2)
    api.llm.release.set()
    lost = await turn
    assert (lost.status_code, lost.json()["error"]["code"]) == (409, "conflict")
    turns = await api.turns(session["session_id"])
    assert [t["assistant_response"] for t in turns] == ["Hello!", "Operator first."]
