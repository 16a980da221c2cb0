"""Human handoff end to end over HTTP: a rule hands the session to a person, a signed webhook
reaches a real receiver on loopback, MANUAL messages are recorded without the LLM, an operator
answers, the session goes back to AUTO with all of it in the LLM's history, then closes.

The app runs on the in-memory stores with a scripted LLM (every call recorded); the webhook goes
out through the real dispatcher and httpx to ``tests/webhook_receiver.py``.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from focal.errors import ProviderUnavailableError
from focal.providers.llm.scripted import ScriptedReply
from focal.webhooks.dispatcher import ATTEMPT_EVENT
from tests.api.control_support import HANDOFF_CONDITION, ControlApi, control_api, history_of
from tests.loopback import LoopbackServer
from tests.webhook_receiver import WebhookReceiver, payload, serve_receiver

__all__ = ["control_api"]  # fixture

ASK_FOR_HUMAN = "I want to talk to a human person please"


async def _endpoint(api: ControlApi, url: str, receiver: WebhookReceiver | None = None) -> dict[str, Any]:
    created = await api.client.post(
        "/v1/webhooks", json={"url": url, "event_types": ["session.handoff_requested"]}, headers=api.headers
    )
    assert created.status_code == 201, created.text
    if receiver is not None:
        receiver.secret = created.json()["secret"]
    return dict(created.json())


async def _handoff_agent(api: ControlApi, **rule: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    agent = await api.agent()
    handoff = await api.rule(
        agent["id"], condition_text=HANDOFF_CONDITION, requests_handoff=True, name="human", **rule
    )
    assert handoff["requests_handoff"] is True
    return agent, handoff


async def test_handoff_webhook_reaches_a_loopback_receiver_with_a_valid_signature(
    control_api: ControlApi,
) -> None:
    api, receiver = control_api, WebhookReceiver()
    with serve_receiver(receiver) as url:
        endpoint = await _endpoint(api, url, receiver)
        agent, rule = await _handoff_agent(api)
        api.llm.enqueue("A colleague will take over.")

        answered = await api.chat(agent["id"], ASK_FOR_HUMAN)
        assert answered.status_code == 200, answered.text
        turn = answered.json()
        assert (turn["response"], turn["session_mode"]) == ("A colleague will take over.", "MANUAL")
        assert [m["rule_id"] for m in turn["matched_rules"]] == [rule["id"]]
        assert services_webhooks(api) is not None
        await services_webhooks(api).wait_idle()

    (delivered,) = receiver.snapshot()
    assert delivered.signature_error is None  # verified with the secret shown at creation
    event = payload(delivered)
    assert delivered.headers["webhook-id"] == event["id"]
    assert event["type"] == "session.handoff_requested"
    assert event["tenant_id"] == str(api.tenant_id)
    data = event["data"]
    assert (data["session_id"], data["turn_id"], data["turn_number"]) == (
        turn["session_id"],
        turn["turn_id"],
        1,
    )
    assert (data["message"], data["response"]) == (ASK_FOR_HUMAN, "A colleague will take over.")
    assert data["rules"] == [{"rule_id": rule["id"], "name": "human"}]
    assert (data["channel"], data["user_channel_id"]) == ("WEB", "visitor-1")

    session = (await api.client.get(f"/v1/sessions/{turn['session_id']}", headers=api.headers)).json()
    assert session["mode"] == "MANUAL"
    (handoff_event,) = await api.events("handoff_requested")
    assert handoff_event.turn_id is not None and str(handoff_event.turn_id) == turn["turn_id"]
    deliveries = (
        await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=api.headers)
    ).json()
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in deliveries["items"]] == [
        ("DELIVERED", 1, 204)
    ]
    (attempt,) = await api.events(ATTEMPT_EVENT)
    assert (attempt.event_data["outcome"], attempt.event_data["status_code"]) == ("delivered", 204)
    assert str(attempt.session_id) == turn["session_id"]


def services_webhooks(api: ControlApi) -> Any:
    return api.services.webhooks


async def test_manual_mode_operator_replies_back_to_auto_and_close(control_api: ControlApi) -> None:
    api = control_api
    agent, _ = await _handoff_agent(api)
    api.llm.enqueue("A colleague will take over.")
    first = (await api.chat(agent["id"], ASK_FOR_HUMAN)).json()
    session_id = first["session_id"]

    # MANUAL: the message is recorded as turn 2, without any LLM call.
    waiting = await api.chat(agent["id"], "hello? anyone there", session_id=session_id)
    assert waiting.status_code == 202, waiting.text
    accepted = waiting.json()
    assert accepted == {
        "session_id": session_id,
        "turn_id": accepted["turn_id"],
        "turn_number": 2,
        "session_mode": "MANUAL",
        "status": "awaiting_human_agent",
    }
    assert len(api.llm.calls) == 1
    # Without session_id the identity's open session is continued, MANUAL too.
    also_waiting = await api.chat(agent["id"], "my order is 42")
    assert (also_waiting.status_code, also_waiting.json()["turn_number"]) == (202, 3)

    reply = await api.client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"text": "  Hi, Sam from support here. Order 42 ships today.  ", "author": "sam"},
        headers=api.headers,
    )
    assert reply.status_code == 201, reply.text
    assert (reply.json()["turn_number"], reply.json()["text"], reply.json()["author"]) == (
        4, "Hi, Sam from support here. Order 42 ships today.", "sam",
    )  # fmt: skip

    turns = await api.turns(session_id)
    assert [(t["turn_number"], t["user_message"], t["assistant_response"]) for t in turns] == [
        (1, ASK_FOR_HUMAN, "A colleague will take over."),
        (2, "hello? anyone there", ""),
        (3, "my order is 42", ""),
        (4, "", "Hi, Sam from support here. Order 42 ships today."),
    ]
    assert turns[1]["context_extracted"]["mode"] == "MANUAL"
    assert (turns[3]["context_extracted"]["source"], turns[3]["context_extracted"]["author"]) == (
        "human_agent", "sam",
    )  # fmt: skip
    assert [e.event_data["author"] for e in await api.events("human_agent_message")] == ["sam"]

    back = await api.client.patch(f"/v1/sessions/{session_id}", json={"mode": "AUTO"}, headers=api.headers)
    assert back.status_code == 200, back.text
    assert back.json()["mode"] == "AUTO" and back.headers["etag"] == f'"{back.json()["version"]}"'
    api.llm.enqueue("Glad Sam could help.")
    auto = await api.chat(agent["id"], "thanks a lot", session_id=session_id)
    assert (auto.status_code, auto.json()["turn_number"], auto.json()["session_mode"]) == (200, 5, "AUTO")
    # The LLM sees the whole conversation: the manual messages and the operator's reply.
    assert history_of(api.llm.calls[-1]) == [
        ("user", ASK_FOR_HUMAN),
        ("assistant", "A colleague will take over."),
        ("user", "hello? anyone there\n\nmy order is 42"),
        ("assistant", "Hi, Sam from support here. Order 42 ships today."),
    ]

    closed = await api.client.post(f"/v1/sessions/{session_id}/close", headers=api.headers)
    assert (closed.status_code, closed.json()["status"]) == (200, "CLOSED")
    refused = await api.chat(agent["id"], "one more thing", session_id=session_id)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "conflict")
    api.llm.enqueue("Sure, what is it?")
    fresh = await api.chat(agent["id"], "one more thing")  # no session_id: a new session
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["session_id"] != session_id and fresh.json()["turn_number"] == 1
    assert len(await api.turns(session_id)) == 5  # the refused chat wrote nothing


async def test_an_exclusive_template_answers_the_handoff_without_any_llm_call(
    control_api: ControlApi,
) -> None:
    api = control_api
    agent = await api.agent()
    template = await api.client.post(
        f"/v1/agents/{agent['id']}/templates",
        json={"name": "handoff", "text": "Connecting you to a person.", "mode": "EXCLUSIVE"},
        headers=api.headers,
    )
    await api.rule(
        agent["id"],
        condition_text=HANDOFF_CONDITION,
        requests_handoff=True,
        attached_template_ids=[template.json()["id"]],
    )
    answered = await api.chat(agent["id"], ASK_FOR_HUMAN)
    assert (answered.json()["response"], answered.json()["session_mode"]) == (
        "Connecting you to a person.", "MANUAL",
    )  # fmt: skip
    assert api.llm.calls == []
    assert (await api.chat(agent["id"], "still there?")).status_code == 202
    assert api.llm.calls == []


async def test_the_turn_does_not_wait_for_the_receiver(control_api: ControlApi) -> None:
    api, receiver = control_api, WebhookReceiver(hold=threading.Event())
    assert receiver.hold is not None
    with serve_receiver(receiver) as url:
        endpoint = await _endpoint(api, url, receiver)
        agent, _ = await _handoff_agent(api)
        api.llm.enqueue("A colleague will take over.")
        try:
            answered = await api.chat(agent["id"], ASK_FOR_HUMAN)
            # The turn answered while the delivery (if it even arrived yet) is held by the receiver.
            assert answered.status_code == 200
            listed = (
                await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=api.headers)
            ).json()
            assert [(d["status"], d["attempts"]) for d in listed["items"]] == [("PENDING", 0)]
        finally:
            receiver.hold.set()
        await services_webhooks(api).wait_idle()
    listed = (await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=api.headers)).json()
    assert [(d["status"], d["attempts"]) for d in listed["items"]] == [("DELIVERED", 1)]


async def test_failed_attempts_are_retried_with_backoff_and_each_is_recorded(control_api: ControlApi) -> None:
    api, receiver = control_api, WebhookReceiver()
    receiver.statuses.extend([500, 503])
    with serve_receiver(receiver) as url:
        endpoint = await _endpoint(api, url, receiver)
        agent, _ = await _handoff_agent(api)
        api.llm.enqueue("ok")
        await api.chat(agent["id"], ASK_FOR_HUMAN)
        await services_webhooks(api).wait_idle()
    received = receiver.snapshot()
    assert len(received) == 3 and all(r.signature_error is None for r in received)
    assert len({r.body for r in received}) == 1  # every attempt sends the same event
    assert len({r.headers["webhook-id"] for r in received}) == 1
    attempts = await api.events(ATTEMPT_EVENT)
    assert [
        (a.event_data["attempt"], a.event_data["status_code"], a.event_data["outcome"]) for a in attempts
    ] == [
        (1, 500, "retrying"),
        (2, 503, "retrying"),
        (3, 204, "delivered"),
    ]
    (delivery,) = (
        await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=api.headers)
    ).json()["items"]
    assert (delivery["status"], delivery["attempts"]) == ("DELIVERED", 3)


async def test_an_unreachable_receiver_fails_after_the_last_attempt_and_the_turn_stands(
    control_api: ControlApi,
) -> None:
    api = control_api
    with LoopbackServer(WebhookReceiver().app()) as gone:
        url = f"{gone.url}/hook"
    endpoint = await _endpoint(api, url)  # nothing listens there any more
    agent, _ = await _handoff_agent(api)
    api.llm.enqueue("ok")
    answered = await api.chat(agent["id"], ASK_FOR_HUMAN)
    assert (answered.status_code, answered.json()["session_mode"]) == (200, "MANUAL")
    await services_webhooks(api).wait_idle()
    (delivery,) = (
        await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=api.headers)
    ).json()["items"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("FAILED", 3, None)
    assert "ConnectError" in delivery["last_error"]
    outcomes = [a.event_data["outcome"] for a in await api.events(ATTEMPT_EVENT)]
    assert outcomes == ["retrying", "retrying", "failed"]


async def test_a_refused_handoff_turn_writes_nothing_and_sends_nothing(control_api: ControlApi) -> None:
    api, receiver = control_api, WebhookReceiver()
    with serve_receiver(receiver) as url:
        endpoint = await _endpoint(api, url, receiver)
        agent, _ = await _handoff_agent(api)
        api.llm.enqueue(ScriptedReply(error=ProviderUnavailableError("down", provider="scripted")))
        failed = await api.chat(agent["id"], ASK_FOR_HUMAN)
        assert failed.status_code == 503
        await services_webhooks(api).wait_idle()
    assert receiver.snapshot() == []
    assert await api.services.session_store.list_by_agent(api.tenant_id, UUID(agent["id"])) == []
    assert await api.events("handoff_requested") == []
    listed = (await api.client.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=api.headers)).json()
    assert listed["items"] == []


async def test_without_endpoints_the_handoff_still_switches_the_mode(control_api: ControlApi) -> None:
    api = control_api
    agent, _ = await _handoff_agent(api)
    api.llm.enqueue("ok")
    answered = await api.chat(agent["id"], ASK_FOR_HUMAN)
    assert answered.json()["session_mode"] == "MANUAL"
    assert len(await api.events("handoff_requested")) == 1
    assert (await api.chat(agent["id"], "hi")).status_code == 202


async def test_turning_the_flag_off_over_the_api_stops_handing_over(control_api: ControlApi) -> None:
    api = control_api
    agent, rule = await _handoff_agent(api)
    changed = await api.client.patch(
        f"/v1/agents/{agent['id']}/rules/{rule['id']}",
        json={"requests_handoff": False},
        headers={**api.headers, "If-Match": f'"{rule["revision"]}"'},
    )
    assert (changed.status_code, changed.json()["requests_handoff"]) == (200, False)
    api.llm.enqueue("I can help with that myself.")
    answered = await api.chat(agent["id"], ASK_FOR_HUMAN)
    assert (answered.status_code, answered.json()["session_mode"]) == (200, "AUTO")
    assert await api.events("handoff_requested") == []
