"""Helpers of the Redis session store tests: factories, bounded polling, a fault-injecting proxy.

``ReplyDroppingProxy`` sits between a client and one real Redis node on loopback. Armed with a
marker (bytes of one command, e.g. a script's SHA), it forwards the next request containing it to
the server as usual but withholds the server's reply, and everything after it on that connection:
the server has executed the command (a write committed) while the client sees a socket timeout.
That is the ambiguous failure a network partition or a stalled proxy produces; nothing in the
client or the server is replaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.conversation.models import Channel, Session, StepVisit
from focal.conversation.stores.redis import RedisSessionStore
from focal.db.embedded import LOOPBACK

POLL_DEADLINE_SECONDS = 10.0


@pytest.fixture(params=["standalone", "cluster"])
def any_client(request: pytest.FixtureRequest) -> Any:
    """A standalone client or a cluster client, for tier and index behaviour that must hold on
    both (on a cluster a save runs three scripts: the tenant's tick, the session's slot, then the
    tenant's indexes). The importing module must also import the cluster fixtures."""
    name = "redis_client" if request.param == "standalone" else "redis_cluster_client"
    return request.getfixturevalue(name)


def make_store(client: Any, **options: Any) -> RedisSessionStore:
    return RedisSessionStore(client, key_prefix=f"it-{uuid4().hex[:8]}", **options)


def session(tenant_id: UUID, **fields: Any) -> Session:
    values: dict[str, Any] = {
        "agent_id": uuid4(),
        "channel": Channel.WEB,
        "user_channel_id": f"u-{uuid4().hex}",
    }
    values.update(fields)
    return Session(tenant_id=tenant_id, **values)


def with_step(tenant_id: UUID, **fields: Any) -> Session:
    step = StepVisit(step_id=uuid4(), step_name="ask", step_content_hash="h1", turn_number=0)
    values: dict[str, Any] = {
        "active_scenario_id": uuid4(),
        "active_scenario_version": 1,
        "current_step_id": step.step_id,
        "step_history": [step],
        "customer_profile_id": uuid4(),
    }
    values.update(fields)
    return session(tenant_id, **values)


def index_keys(store: RedisSessionStore, s: Session) -> list[str]:
    """The agent, customer, channel and step indexes of a session made by ``with_step``."""
    assert s.customer_profile_id and s.active_scenario_id and s.active_scenario_version
    step_hash = s.current_step_hash()
    assert step_hash
    return [
        store.keys.agent(s.tenant_id, s.agent_id),
        store.keys.customer(s.tenant_id, s.customer_profile_id),
        store.keys.channel(s.tenant_id, s.channel, s.user_channel_id),
        store.keys.step(s.tenant_id, s.active_scenario_id, s.active_scenario_version, step_hash),
    ]


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + POLL_DEADLINE_SECONDS
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {POLL_DEADLINE_SECONDS}s waiting for {what}")
        await asyncio.sleep(0.05)


class ReplyDroppingProxy:
    """A TCP proxy to ``upstream`` that can lose the reply to one command (see the module doc)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.dropped = asyncio.Event()  # set once a reply reached the proxy and was withheld
        self._marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return LOOPBACK, int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host, port = self.address
        return f"redis://{host}:{port}/0"

    def drop_reply_to(self, marker: bytes) -> None:
        """Withhold the reply to the next request containing ``marker`` (once)."""
        self.dropped.clear()
        self._marker = marker

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        withhold = False

        async def requests() -> None:
            nonlocal withhold
            while data := await client_reader.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    withhold = True
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def replies() -> None:
            while data := await upstream_reader.read(65536):
                if withhold:
                    self.dropped.set()  # the server answered: the command ran
                    continue
                client_writer.write(data)
                await client_writer.drain()

        try:
            pumps = [asyncio.create_task(requests()), asyncio.create_task(replies())]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]
