"""Reading Server-Sent Events in tests: whole bodies, or a live stream event by event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    name: str
    data: Any


def parse_events(text: str) -> list[Event]:
    """Every event of a complete ``text/event-stream`` body; a malformed block fails the test."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"event", "data"}, f"unexpected SSE block {block!r}"
        events.append(Event(fields["event"], json.loads(fields["data"])))
    return events


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Events of a streamed response as they arrive."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            (event,) = parse_events(block + "\n\n")
            yield event


def deltas(events: list[Event]) -> list[str]:
    return [e.data["text"] for e in events if e.name == "delta"]
