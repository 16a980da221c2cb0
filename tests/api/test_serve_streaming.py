"""A real HTTP client reads a streamed answer from a real ``focal serve`` process.

The process runs the in-memory stores and the offline model (which streams word by word); the
client is httpx over a real socket, reading the event stream as it arrives.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from focal.api.auth import mint_token
from tests.api.sse_support import Event, read_events
from tests.api.test_two_processes import START_DEADLINE_SECONDS, ServeProcess

pytestmark = [pytest.mark.slow]

JWT_SECRET = "serve-streaming-secret-long-enough-for-hs256-0123456789abcdefghijk"


async def test_a_real_client_reads_the_event_stream_of_a_real_focal_serve(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FOCAL_")}
    env.update(
        FOCAL_AUTH__JWT_SECRET=JWT_SECRET, FOCAL_LLM__PROVIDER="offline", FOCAL_LOGGING__LEVEL="WARNING"
    )
    process = ServeProcess(env, tmp_path / "serve.log", tmp_path, extra_args=["--memory"])
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + START_DEADLINE_SECONDS
            while not await process.poll_ready(client):
                if time.monotonic() > deadline:
                    pytest.fail(f"focal serve not ready:\n{process.output.read_text()}")
                await asyncio.sleep(0.1)  # polling interval, bounded by the deadline above
            headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, uuid4(), 600)}"}
            agent = await client.post(f"{process.url}/v1/agents", json={"name": "streamer"}, headers=headers)
            assert agent.status_code == 201
            rule = {
                "name": "returns",
                "condition_text": "return an item",
                "action_text": "Items can be returned within 30 days and the label is free.",
            }
            await client.post(
                f"{process.url}/v1/agents/{agent.json()['id']}/rules", json=rule, headers=headers
            )
            message = {"channel": "WEB", "user_channel_id": "u", "message": "Can I return an item?"}
            events: list[Event] = []
            async with client.stream(
                "POST",
                f"{process.url}/v1/agents/{agent.json()['id']}/chat",
                json=message,
                headers={**headers, "Accept": "text/event-stream"},
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = [event async for event in read_events(response)]
        assert [e.name for e in events[:-1]] == ["delta"] * (len(events) - 1) and events[-1].name == "done"
        assert len(events) > 5  # word by word
        answer = events[-1].data["response"]
        assert "".join(e.data["text"] for e in events[:-1]) == answer
        assert answer == "Items can be returned within 30 days and the label is free."
        assert process.stop() == 0
    finally:
        process.kill()
