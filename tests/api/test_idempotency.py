"""``Idempotency-Key`` over HTTP (``focal/api/idempotency.py``), on the in-memory stores with a
scripted LLM: a replay answers the stored response, runs nothing, calls no LLM; what is stored and
what is released; keys per tenant and per route. Across two processes on Redis:
``tests/api/test_two_processes.py``."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

from fastapi import Request
from fastapi.responses import StreamingResponse
from redis.asyncio import Redis
from structlog.testing import capture_logs

from focal.api.app import create_app
from focal.errors import ProviderUnavailableError
from focal.idempotency.inmemory import InMemoryIdempotencyStore
from focal.idempotency.redis import RedisIdempotencyStore
from focal.providers.llm.scripted import ScriptedReply
from tests.api.conftest import asgi_client, bearer
from tests.api.control_support import ControlApi, control_api

__all__ = ["control_api"]  # fixture

KEY = {"Idempotency-Key": "msg-0001"}


async def _turn_count(api: ControlApi) -> int:
    return len(await api.services.audit_store.list_turns_by_tenant(api.tenant_id))


async def test_a_retried_chat_replays_the_first_answer_with_one_turn_and_one_llm_call(
    control_api: ControlApi,
) -> None:
    api = control_api
    agent = await api.agent()
    api.llm.enqueue("Your parcel ships today.")
    first = await api.chat(agent["id"], "where is my parcel", headers=KEY)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = await api.chat(agent["id"], "where is my parcel", headers=KEY)
        assert (again.status_code, again.content) == (200, first.content)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
    assert len(api.llm.calls) == 1
    assert await _turn_count(api) == 1
    # JSON in another key order and spacing is the same request.
    reordered = await api.client.post(
        f"/v1/agents/{agent['id']}/chat",
        content=b'{ "message": "where is my parcel", "user_channel_id": "visitor-1", "channel": "WEB" }',
        headers={**api.headers, **KEY, "content-type": "application/json"},
    )
    assert (reordered.status_code, reordered.content) == (200, first.content)


async def test_the_same_key_with_another_body_is_refused_and_changes_nothing(control_api: ControlApi) -> None:
    api = control_api
    agent = await api.agent()
    api.llm.enqueue("First answer.")
    await api.chat(agent["id"], "first message", headers=KEY)
    other = await api.chat(agent["id"], "another message", headers=KEY)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(api.llm.calls) == 1 and await _turn_count(api) == 1
    query = await api.client.post(
        f"/v1/agents/{agent['id']}/chat?x=1",
        json={"channel": "WEB", "user_channel_id": "visitor-1", "message": "first message"},
        headers={**api.headers, **KEY},
    )
    assert query.json()["error"]["code"] == "idempotency_key_reused"  # the query string counts


async def test_a_request_still_running_makes_its_duplicate_a_409(control_api: ControlApi) -> None:
    api = control_api
    agent = await api.agent()
    api.llm.gated = True
    api.llm.enqueue("Slow answer.")
    running = asyncio.create_task(api.chat(agent["id"], "slow one", headers=KEY))
    await api.llm.entered.wait()
    duplicate = await api.chat(agent["id"], "slow one", headers=KEY)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "idempotency_in_progress"
    assert duplicate.headers["retry-after"] == "1"
    api.llm.release.set()
    first = await running
    assert first.status_code == 200
    replay = await api.chat(agent["id"], "slow one", headers=KEY)
    assert (replay.content, replay.headers["idempotent-replayed"]) == (first.content, "true")
    assert len(api.llm.calls) == 1 and await _turn_count(api) == 1


async def test_a_reservation_that_expired_while_the_request_ran_is_logged(control_api: ControlApi) -> None:
    """A request longer than ``in_flight_seconds``: its key was free again before the response
    could be stored, so a retry will run it again. Nothing to replay, and the operator is told
    which setting is too short."""
    api = control_api
    agent = await api.agent()
    store = api.services.idempotency_store
    assert isinstance(store, InMemoryIdempotencyStore)
    api.llm.gated = True
    api.llm.enqueue("Slow answer.", "Run again.")
    running = asyncio.create_task(api.chat(agent["id"], "slow one", headers=KEY))
    await api.llm.entered.wait()
    store._entries.clear()  # what the reservation's expiry does while the request runs
    with capture_logs() as logs:
        api.llm.release.set()
        assert (await running).status_code == 200
    (warning,) = [entry for entry in logs if entry["event"].startswith("idempotency reservation expired")]
    assert warning["in_flight_seconds"] == 300 and warning["log_level"] == "warning"
    retry = await api.chat(agent["id"], "slow one", headers=KEY)
    assert "idempotent-replayed" not in retry.headers and await _turn_count(api) == 2


async def test_a_server_error_is_not_stored_so_the_retry_runs(control_api: ControlApi) -> None:
    api = control_api
    agent = await api.agent()
    api.llm.enqueue(ScriptedReply(error=ProviderUnavailableError("down", provider="scripted")), "Back up.")
    failed = await api.chat(agent["id"], "hello", headers=KEY)
    assert failed.status_code == 503
    retried = await api.chat(agent["id"], "hello", headers=KEY)
    assert (retried.status_code, retried.json()["response"]) == (200, "Back up.")
    assert "idempotent-replayed" not in retried.headers
    assert len(api.llm.calls) == 2 and await _turn_count(api) == 1


async def test_a_conflict_is_not_stored_so_the_retry_runs(control_api: ControlApi) -> None:
    api = control_api
    agent = await api.agent(enabled=False)
    refused = await api.chat(agent["id"], "hello", headers=KEY)
    assert refused.status_code == 409
    enabled = await api.client.patch(f"/v1/agents/{agent['id']}", json={"enabled": True}, headers=api.headers)
    assert enabled.status_code == 200
    api.llm.enqueue("Now I can answer.")
    retried = await api.chat(agent["id"], "hello", headers=KEY)
    assert (retried.status_code, retried.json()["response"]) == (200, "Now I can answer.")


async def test_a_final_client_error_is_replayed(control_api: ControlApi) -> None:
    api = control_api
    agent = await api.agent()
    body = {"channel": "WEB", "user_channel_id": "visitor-1", "message": "hi", "unknown": 1}
    first = await api.client.post(f"/v1/agents/{agent['id']}/chat", json=body, headers={**api.headers, **KEY})
    assert first.status_code == 422
    again = await api.client.post(f"/v1/agents/{agent['id']}/chat", json=body, headers={**api.headers, **KEY})
    assert (again.status_code, again.content, again.headers["idempotent-replayed"]) == (
        422,
        first.content,
        "true",
    )


async def test_a_path_whose_ids_differ_only_in_case_is_the_same_route(control_api: ControlApi) -> None:
    """The routes read a UUID in any case: a retry that writes it in capitals (another client
    library, a proxy) must get the replay, not run the turn a second time."""
    api = control_api
    agent = await api.agent()
    api.llm.enqueue("Once.")
    first = await api.chat(agent["id"], "only once", headers=KEY)
    assert first.status_code == 200
    body = {"channel": "WEB", "user_channel_id": "visitor-1", "message": "only once"}
    shouted = await api.client.post(
        f"/v1/agents/{agent['id'].upper()}/chat", json=body, headers={**api.headers, **KEY}
    )
    assert (shouted.status_code, shouted.headers.get("idempotent-replayed")) == (200, "true")
    assert shouted.content == first.content and len(api.llm.calls) == 1 and await _turn_count(api) == 1


async def test_a_created_object_is_created_once_and_replayed_with_its_etag(control_api: ControlApi) -> None:
    api = control_api
    responses = [
        await api.client.post("/v1/agents", json={"name": "once"}, headers={**api.headers, **KEY})
        for _ in range(3)
    ]
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert {r.headers["etag"] for r in responses} == {'"1"'}
    agents = await api.client.get("/v1/agents", headers=api.headers)
    assert [a["name"] for a in agents.json()["items"]] == ["once"]


async def test_keys_are_per_tenant_and_per_route(control_api: ControlApi) -> None:
    api = control_api
    other = bearer(uuid4())
    mine = await api.client.post("/v1/agents", json={"name": "a"}, headers={**api.headers, **KEY})
    theirs = await api.client.post("/v1/agents", json={"name": "a"}, headers={**other, **KEY})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"] and "idempotent-replayed" not in theirs.headers
    agent = await api.agent()
    rule = await api.client.post(
        f"/v1/agents/{agent['id']}/rules",
        json={"name": "a", "condition_text": "x", "action_text": "y"},
        headers={**api.headers, **KEY},
    )
    assert rule.status_code == 201 and "idempotent-replayed" not in rule.headers


async def test_an_invalid_key_is_refused_before_anything_runs(control_api: ControlApi) -> None:
    api = control_api
    for bad in ("", "has space", "x" * 256):
        refused = await api.client.post(
            "/v1/agents", json={"name": "a"}, headers={**api.headers, "Idempotency-Key": bad}
        )
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["code"] == "invalid_idempotency_key"
    assert (await api.client.get("/v1/agents", headers=api.headers)).json()["items"] == []


async def test_without_a_valid_token_nothing_is_reserved(control_api: ControlApi) -> None:
    api = control_api
    anonymous = await api.client.post("/v1/agents", json={"name": "a"}, headers=KEY)
    assert anonymous.status_code == 401
    created = await api.client.post("/v1/agents", json={"name": "a"}, headers={**api.headers, **KEY})
    assert created.status_code == 201 and "idempotent-replayed" not in created.headers


async def test_an_unreachable_key_store_is_a_503_and_runs_nothing(control_api: ControlApi) -> None:
    api = control_api
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry_on_error=[])
    api.services.idempotency_store = RedisIdempotencyStore(dead, operation_timeout_seconds=1)
    try:
        refused = await api.client.post("/v1/agents", json={"name": "a"}, headers={**api.headers, **KEY})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert (await api.client.get("/v1/agents", headers=api.headers)).json()["items"] == []
    finally:
        await dead.aclose()


async def test_a_streaming_route_keeps_the_body_it_chooses_for_replays(control_api: ControlApi) -> None:
    """How the SSE chat keeps its final JSON body: ``request.state.idempotency.keep``."""
    api = control_api
    app = create_app(api.services.settings, services=api.services)
    runs: list[int] = []

    @app.post("/v1/streamed")
    async def streamed(request: Request) -> StreamingResponse:
        runs.append(1)

        async def events() -> object:
            yield b"event: delta\ndata: hel\n\n"
            yield b"event: done\ndata: {}\n\n"
            request.state.idempotency.keep(200, b'{"response":"hello"}')

        return StreamingResponse(events(), media_type="text/event-stream")

    async with asgi_client(app) as client:
        first = await client.post("/v1/streamed", json={}, headers={**api.headers, **KEY})
        assert first.headers["content-type"].startswith("text/event-stream")
        replay = await client.post("/v1/streamed", json={}, headers={**api.headers, **KEY})
    assert (replay.status_code, replay.content, replay.headers["content-type"]) == (
        200, b'{"response":"hello"}', "application/json",
    )  # fmt: skip
    assert replay.headers["idempotent-replayed"] == "true"
    assert runs == [1]


class _OrderedStore(InMemoryIdempotencyStore):
    """The in-memory key store, noting in ``log`` when a response is stored or a key released."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def complete(self, *args: Any, **kwargs: Any) -> bool:
        self.log.append("stored")
        return await super().complete(*args, **kwargs)

    async def release(self, *args: Any, **kwargs: Any) -> bool:
        self.log.append("released")
        return await super().release(*args, **kwargs)


async def test_the_response_is_stored_before_the_client_gets_its_last_byte(control_api: ControlApi) -> None:
    """A client that has its response and sends the key again at once (a channel's retry racing a
    slow network) must get the replay, never ``409 idempotency_in_progress``: the key is completed
    before the end of the response is sent, not after."""
    api = control_api
    log: list[str] = []
    api.services.idempotency_store = _OrderedStore(log)
    app = create_app(api.services.settings, services=api.services)
    body = json.dumps({"name": "ordered"}).encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in {**api.headers, **KEY}.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/agents", "raw_path": b"/v1/agents",
        "root_path": "", "query_string": b"", "server": ("focal.test", 80), "client": ("127.0.0.1", 1),
        "headers": [*headers, (b"content-type", b"application/json")], "app": app,
    }  # fmt: skip
    requests = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            log.append(f"status {message['status']}")
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            log.append("last byte sent")

    await app(scope, receive, send)

    assert log == ["status 201", "stored", "last byte sent"]
