"""Two ``focal serve`` processes on one PostgreSQL and one Redis serve interchangeably.

The design (service.md, "Running") promises that no state lives in a process, so any process can
serve any request of any session. Two real OS processes share a fresh database and the session
Redis (own key prefix); the test writes through one and reads through the other, alternates the
turns of one conversation between them, races turns of one session across them (the loser of the
session's version check gets 409 and leaves no trace), sends one ``Idempotency-Key`` to both (one
turn, one LLM call: the LLM is the OpenAI SDK against a loopback fake that counts requests), hands
a session to a person through one process and receives the signed webhook on a loopback receiver,
then SIGTERMs both and expects exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio

from focal.api.auth import mint_token
from tests.support import DatabaseFactory
from tests.unit.providers.fake_vendor import FakeVendor, FakeVendorServer, Reply, openai_completion
from tests.webhook_receiver import WebhookReceiver, payload, serve_receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

DIMENSIONS = 1536  # the hashing embedder's default dimension, which the serve processes use
JWT_SECRET = "two-processes-secret-long-enough-for-hs256-0123456789abcdefghijklmnop"
START_DEADLINE_SECONDS = 60.0  # two interpreters importing FastAPI & co. on a loaded 2-core machine
STOP_DEADLINE_SECONDS = 30.0
RACE_ROUNDS = 4
REQUEST_TIMEOUT_SECONDS = 30.0


class ServeProcess:
    """One ``focal serve --port 0`` on external servers; stdout and stderr go to ``output``."""

    def __init__(self, env: dict[str, str], output: Path, cwd: Path, extra_args: Sequence[str] = ()) -> None:
        self.url = ""  # known once the banner names the port the server picked
        self.output = output
        self._log = open(output, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "focal.cli", "serve", "--port", "0", *extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,  # external servers: nothing may be written to a data directory, keep any stray here
        )

    def _banner_url(self) -> str:
        for line in self.output.read_text().splitlines():
            if line.startswith("Focal is serving on "):
                return line.split()[4]
        return ""

    async def poll_ready(self, client: httpx.AsyncClient) -> bool:
        """One look: True once ``/ready`` answers 200; fails the test if the process died."""
        if self.process.poll() is not None:
            pytest.fail(f"focal serve exited with {self.process.returncode}:\n{self.output.read_text()}")
        self.url = self.url or self._banner_url()
        if not self.url:
            return False
        try:
            return (await client.get(f"{self.url}/ready", timeout=2.0)).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL and fail if it does not stop within the deadline)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"focal serve did not stop within {STOP_DEADLINE_SECONDS}s of SIGTERM")
        finally:
            self._log.close()

    def kill(self) -> None:
        """Teardown safety net: no process outlives the test, whatever failed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def fake_vendor() -> Iterator[FakeVendor]:
    """The OpenAI API both processes call (a loopback fake that records every request)."""
    vendor = FakeVendor()
    server = FakeVendorServer(vendor)
    server.start()
    try:
        yield vendor
    finally:
        server.stop()


def _environment(database_url: str, redis_url: str, llm_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FOCAL_")}
    env.update(
        FOCAL_DATABASE_URL=database_url,
        FOCAL_REDIS_URL=redis_url,
        FOCAL_REDIS__KEY_PREFIX=f"twoproc{uuid4().hex[:8]}",
        FOCAL_AUTH__JWT_SECRET=JWT_SECRET,
        FOCAL_EMBEDDING__PROVIDER="hashing",
        FOCAL_EMBEDDING__DIMENSIONS=str(DIMENSIONS),
        FOCAL_LLM__PROVIDER="openai",
        FOCAL_LLM__BASE_URL=llm_url,
        FOCAL_LLM__MODEL="gpt-fake",
        OPENAI_API_KEY="sk-fake-key-for-the-loopback-vendor",
        FOCAL_WEBHOOKS__ALLOW_HTTP="true",  # the receiver is a loopback http server
        FOCAL_WEBHOOKS__BACKOFF_BASE_SECONDS="0.05",
        FOCAL_LOGGING__LEVEL="WARNING",
    )
    return env


@pytest_asyncio.fixture(loop_scope="session")
async def two_processes(
    database_factory: DatabaseFactory, redis_url: str, tmp_path: Path, fake_vendor: FakeVendor
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    """Processes A and B, both answering ``/ready``; stopped (and their exit codes checked) by the test."""
    env = _environment(await database_factory(dimensions=DIMENSIONS), redis_url, fake_vendor.openai_url)
    first = ServeProcess(env, tmp_path / "a.log", tmp_path)
    second = ServeProcess(env, tmp_path / "b.log", tmp_path)
    try:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + START_DEADLINE_SECONDS
            pending = [first, second]
            while pending:
                if time.monotonic() > deadline:
                    logs = "\n".join(p.output.read_text() for p in pending)
                    pytest.fail(f"focal serve not ready after {START_DEADLINE_SECONDS}s:\n{logs}")
                pending = [p for p in pending if not await p.poll_ready(client)]
                if pending:
                    await asyncio.sleep(0.1)  # polling interval, bounded by the deadline above
        yield first, second
    finally:
        for process in (first, second):  # a no-op for one the test stopped; SIGKILL after a failure
            process.kill()


def _json(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def test_two_serve_processes_are_interchangeable(
    two_processes: tuple[ServeProcess, ServeProcess], tmp_path: Path, fake_vendor: FakeVendor
) -> None:
    first, second = two_processes
    assert first.url != second.url
    headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, uuid4(), 600)}"}
    async with (
        httpx.AsyncClient(base_url=first.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as a,
        httpx.AsyncClient(base_url=second.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as b,
    ):
        # Configuration: written through A, read and changed through B, the change seen through A.
        agent = _json(await a.post("/v1/agents", json={"name": "shop"}), 201)
        rules_path = f"/v1/agents/{agent['id']}/rules"
        rule_body = {
            "name": "shipping",
            "condition_text": "shipping cost parcel",
            "action_text": "Shipping is free.",
        }
        rule = _json(await a.post(rules_path, json=rule_body), 201)
        assert (_json(await b.get(f"/v1/agents/{agent['id']}")))["name"] == "shop"
        assert (_json(await b.get(f"{rules_path}/{rule['id']}")))["name"] == "shipping"
        _json(await b.patch(f"/v1/agents/{agent['id']}", json={"name": "shop-renamed"}))
        rule_patch = {"name": "refunds", "condition_text": "refund policy returns"}
        _json(await b.patch(f"{rules_path}/{rule['id']}", json=rule_patch))
        assert (_json(await a.get(f"/v1/agents/{agent['id']}")))["name"] == "shop-renamed"
        seen = _json(await a.get(f"{rules_path}/{rule['id']}"))
        assert (seen["name"], seen["condition_text"]) == ("refunds", "refund policy returns")

        # One conversation, its turns alternating between the processes.
        chat_path = f"/v1/agents/{agent['id']}/chat"
        message = {"channel": "WEB", "user_channel_id": "alternating-user"}
        turn1 = _json(await a.post(chat_path, json={**message, "message": "your refund policy returns?"}))
        # A matches the rule as B re-embedded it (the old condition shares no word with the message).
        assert [(m["rule_id"], m["name"]) for m in turn1["matched_rules"]] == [(rule["id"], "refunds")]
        session_id = turn1["session_id"]
        turn2 = _json(await b.post(chat_path, json={**message, "message": "hi", "session_id": session_id}))
        turn3 = _json(await a.post(chat_path, json={**message, "message": "ok", "session_id": session_id}))
        assert [t["turn_number"] for t in (turn1, turn2, turn3)] == [1, 2, 3]
        assert {t["session_id"] for t in (turn1, turn2, turn3)} == {session_id}
        assert len({t["turn_id"] for t in (turn1, turn2, turn3)}) == 3
        listed = _json(await b.get(f"/v1/sessions/{session_id}/turns"))
        assert [t["turn_number"] for t in listed["items"]] == [1, 2, 3]
        assert [t["id"] for t in listed["items"]] == [t["turn_id"] for t in (turn1, turn2, turn3)]

        # Races: one turn of the same session sent to A and to B at once. Whether a pair overlaps is
        # up to the scheduler, so assert only what holds either way: every answer is 200 or a 409
        # "conflict"; at least one of each pair wins; the winners' turn numbers continue the
        # sequence without gap or repeat; the losers left no trace.
        won: list[int] = []
        conflicts = 0
        for round_number in range(RACE_ROUNDS):
            body = {**message, "message": f"race {round_number}", "session_id": session_id}
            pair = await asyncio.gather(a.post(chat_path, json=body), b.post(chat_path, json=body))
            assert {r.status_code for r in pair} <= {200, 409}, [r.text for r in pair]
            assert any(r.status_code == 200 for r in pair), [r.text for r in pair]
            for response in pair:
                if response.status_code == 409:
                    conflicts += 1
                    assert response.json()["error"]["code"] == "conflict", response.text
                else:
                    assert response.json()["session_id"] == session_id
                    won.append(response.json()["turn_number"])
        assert sorted(won) == list(range(4, 4 + len(won)))
        total = 3 + len(won)
        assert len(won) + conflicts == 2 * RACE_ROUNDS
        for client in (a, b):
            session = _json(await client.get(f"/v1/sessions/{session_id}"))
            assert session["turn_count"] == total
            listed = _json(await client.get(f"/v1/sessions/{session_id}/turns"))
            assert [t["turn_number"] for t in listed["items"]] == list(range(1, total + 1))
            assert listed["total"] == total

        await _one_idempotency_key_for_both(a, b, chat_path, fake_vendor)
        await _handoff_through_one_process_is_seen_by_the_other(a, b, agent["id"])

    # Both stop cleanly on SIGTERM (uvicorn's graceful shutdown, then pools and clients closed).
    codes = await asyncio.gather(asyncio.to_thread(first.stop), asyncio.to_thread(second.stop))
    assert codes == [0, 0], first.output.read_text() + second.output.read_text()
    # Run from tmp_path on external servers, neither process created a data directory there.
    assert not await asyncio.to_thread((tmp_path / ".focal").exists)


def _completions_with(vendor: FakeVendor, text: str) -> int:
    """How many chat completions the vendor was asked for with ``text`` in the prompt."""
    return sum(
        1
        for request in list(vendor.requests)
        if request.path == "/v1/chat/completions" and text in json.dumps(request.body)
    )


async def _one_idempotency_key_for_both(
    a: httpx.AsyncClient, b: httpx.AsyncClient, chat_path: str, vendor: FakeVendor
) -> None:
    """The same key sent to both processes at once, then again to each: one turn, one LLM call."""
    # The vendor takes a second to answer, so the duplicate arrives while the first is running.
    vendor.enqueue(Reply(body=openai_completion("Exactly once."), delay=1.0))
    body = {"channel": "WEB", "user_channel_id": "idempotent-user", "message": "charge my card once"}
    key = {"Idempotency-Key": f"channel-msg-{uuid4().hex}"}
    pair = await asyncio.gather(
        a.post(chat_path, json=body, headers=key), b.post(chat_path, json=body, headers=key)
    )
    fresh = [r for r in pair if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1, [(r.status_code, r.text) for r in pair]
    for response in pair:
        if response is not fresh[0]:  # still running, or already done and replayed
            assert (response.status_code, response.headers.get("idempotent-replayed")) in {
                (409, None),
                (200, "true"),
            }
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "idempotency_in_progress"
    for client in (a, b, a):
        again = await client.post(chat_path, json=body, headers=key)
        assert (again.status_code, again.content, again.headers["idempotent-replayed"]) == (
            200, fresh[0].content, "true",
        )  # fmt: skip
    other_body = await b.post(chat_path, json={**body, "message": "charge twice"}, headers=key)
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    assert _completions_with(vendor, "charge my card once") == 1
    session_id = fresh[0].json()["session_id"]
    turns = _json(await b.get(f"/v1/sessions/{session_id}/turns"))
    assert [t["user_message"] for t in turns["items"]] == ["charge my card once"]


async def _handoff_through_one_process_is_seen_by_the_other(
    a: httpx.AsyncClient, b: httpx.AsyncClient, agent_id: str
) -> None:
    """A webhook registered through A; the handoff turn on B; the signed delivery arrives; the
    MANUAL session is answered by an operator through A and given back to the agent through B."""
    receiver = WebhookReceiver()
    with serve_receiver(receiver) as url:
        hook = _json(
            await a.post("/v1/webhooks", json={"url": url, "event_types": ["session.handoff_requested"]}), 201
        )
        receiver.secret = hook["secret"]
        rule = {
            "name": "human",
            "condition_text": "speak with a human operator",
            "action_text": "Tell them a person will take over.",
            "requests_handoff": True,
        }
        _json(await a.post(f"/v1/agents/{agent_id}/rules", json=rule), 201)
        chat = {"channel": "WEB", "user_channel_id": "handoff-user"}
        turn = _json(
            await b.post(
                f"/v1/agents/{agent_id}/chat", json={**chat, "message": "speak with a human operator"}
            )
        )
        assert turn["session_mode"] == "MANUAL"
        deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        while not receiver.snapshot():
            assert time.monotonic() < deadline, "the handoff webhook never arrived"
            await asyncio.sleep(0.05)  # polling interval, bounded by the deadline
    (delivered,) = receiver.snapshot()
    assert delivered.signature_error is None
    assert payload(delivered)["data"]["turn_id"] == turn["turn_id"]
    deliveries = _json(await a.get(f"/v1/webhooks/{hook['id']}/deliveries"))
    assert [(d["status"], d["attempts"]) for d in deliveries["items"]] == [("DELIVERED", 1)]

    session_id = turn["session_id"]
    waiting = await a.post(
        f"/v1/agents/{agent_id}/chat", json={**chat, "message": "hello?", "session_id": session_id}
    )
    assert (waiting.status_code, waiting.json()["turn_number"]) == (202, 2)
    _json(await a.post(f"/v1/sessions/{session_id}/messages", json={"text": "Hi, a person here."}), 201)
    assert _json(await b.patch(f"/v1/sessions/{session_id}", json={"mode": "AUTO"}))["mode"] == "AUTO"
    back = _json(
        await a.post(
            f"/v1/agents/{agent_id}/chat", json={**chat, "message": "thanks", "session_id": session_id}
        )
    )
    assert (back["turn_number"], back["session_mode"]) == (4, "AUTO")
