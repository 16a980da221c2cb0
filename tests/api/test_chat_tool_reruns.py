"""Over HTTP, one customer message makes its tool calls once: when an operator's reply makes its
turn run again (``FOCAL_TURN__CONCURRENCY=enqueue``), and when the client retries it with its
``Idempotency-Key`` (JSON and streamed). On the in-memory stores and on PostgreSQL + Redis, with a
real loopback tool server that creates a new return label on every request it gets."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.providers.llm.scripted import ScriptedReply
from focal.providers.llm.types import ToolCall
from tests.api.conftest import ApiHarness
from tests.api.control_support import GatedLLM
from tests.api.sse_support import parse_events
from tests.tool_server import ToolServer
from tests.unit.turn.tool_support import activate, http_tool

RETURN = "i want to return my order"
ENQUEUE = {"concurrency": "enqueue", "enqueue_wait_seconds": 10}
LABEL = ToolCall(id="c1", name="create_label", arguments={"order_number": "FD-10234"})


@pytest.fixture
def api_overrides() -> dict[str, object]:
    return {"turn": ENQUEUE}


async def _returns_agent(api: ApiHarness, shop: ToolServer) -> str:
    """An agent whose return rule offers ``create_label`` (POST /labels on the tool server)."""
    created = await api.client.post(
        "/v1/agents", json={"name": f"shop-{uuid4().hex[:6]}"}, headers=api.headers
    )
    agent_id: str = created.json()["id"]
    tool = http_tool(
        api.tenant_id,
        "create_label",
        f"{shop.url}/labels",
        method="POST",
        parameters={"type": "object", "properties": {"order_number": {"type": "string"}}},
    )
    agent = await api.services.config_store.get_agent(api.tenant_id, UUID(agent_id))
    assert agent is not None
    await activate(api.services.config_store, agent, tool)
    rule = await api.client.post(
        f"/v1/agents/{agent_id}/rules",
        json={
            "name": "returns",
            "condition_text": RETURN,
            "action_text": "Create a return label.",
            "attached_tool_ids": ["create_label"],
        },
        headers=api.headers,
    )
    assert rule.status_code == 201, rule.text
    return agent_id


async def _chat(api: ApiHarness, agent_id: str, message: str, headers: Any = None, **extra: Any) -> Any:
    body = {"channel": "WEB", "user_channel_id": "ann", "message": message, **extra}
    return await api.client.post(
        f"/v1/agents/{agent_id}/chat", json=body, headers={**api.headers, **(headers or {})}
    )


async def test_an_operator_reply_makes_the_turn_run_again_and_the_label_is_made_once(
    backend_api: ApiHarness, shop: ToolServer
) -> None:
    api = backend_api
    agent_id = await _returns_agent(api, shop)
    llm = GatedLLM()
    api.services.llm_provider = llm
    llm.enqueue("Hello!")
    session_id = (await _chat(api, agent_id, "hello")).json()["session_id"]
    llm.gated = True
    llm.entered.clear()
    llm.enqueue(
        ScriptedReply(tool_calls=[LABEL]),
        "Never recorded: the operator answered first.",
        ScriptedReply(tool_calls=[LABEL]),
        "Your return label is ready.",
    )
    turn = asyncio.create_task(_chat(api, agent_id, RETURN, session_id=session_id))
    await llm.entered.wait()  # the turn has read the session and is asking the model
    reply = await api.client.post(
        f"/v1/sessions/{session_id}/messages", json={"text": "Operator here."}, headers=api.headers
    )
    assert reply.status_code == 201, reply.text
    llm.release.set()
    answered = await turn

    assert answered.status_code == 200, answered.text
    assert (answered.json()["turn_number"], answered.json()["response"]) == (3, "Your return label is ready.")
    assert len(llm.calls) == 5  # the turn ran twice, each run asking the model twice
    assert [label["order_number"] for label in shop.labels] == ["FD-10234"]
    turns = (await api.client.get(f"/v1/sessions/{session_id}/turns", headers=api.headers)).json()["items"]
    (executed,) = turns[-1]["tools_executed"]
    assert (executed["reused"], executed["result"]["label_id"]) == (True, "LBL-1")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_replay_by_idempotency_key_calls_no_tool(
    backend_api: ApiHarness, shop: ToolServer, stream: bool
) -> None:
    api = backend_api
    agent_id = await _returns_agent(api, shop)
    llm = GatedLLM()
    api.services.llm_provider = llm
    llm.enqueue(ScriptedReply(tool_calls=[LABEL]), "Your return label is ready.")
    key = {"Idempotency-Key": f"return-{uuid4().hex}"}
    first = await _chat(api, agent_id, RETURN, key, stream=stream)
    assert first.status_code == 200, first.text
    final = parse_events(first.text)[-1].data if stream else first.json()
    assert final["response"] == "Your return label is ready."

    for _ in range(2):
        again = await _chat(api, agent_id, RETURN, key, stream=stream)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == final

    assert len(shop.requests) == 1 and len(shop.labels) == 1
    assert len(llm.calls) == 2
