"""A webhook receiver for tests: a Starlette app served on loopback that verifies and records every
delivery it gets, and answers with the statuses it was told to (then 204).

Runs in ``LoopbackServer``'s thread, so its state is guarded by a lock; ``threading.Event``s let a
test hold a delivery (``hold``) without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from focal.webhooks.signing import WebhookSignatureError, verify
from tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    signature_error: str | None  # None: verified with the receiver's secret


@dataclass
class WebhookReceiver:
    secret: str = ""  # set once the endpoint is created (the secret is shown then)
    received: list[Received] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    hold: threading.Event | None = None  # when set up, each request waits for it
    arrived: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            try:
                verify(self.secret, headers, body, now=time.time())
                error = None
            except WebhookSignatureError as exc:
                error = str(exc)
            with self._lock:
                self.received.append(Received(headers, body, error))
                status = self.statuses.popleft() if self.statuses else 204
            self.arrived.set()
            if self.hold is not None:
                await asyncio.to_thread(self.hold.wait, 30)
            return Response(status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)


@contextmanager
def serve_receiver(receiver: WebhookReceiver) -> Iterator[str]:
    """The receiver on loopback; yields its URL (``.../hook``)."""
    with LoopbackServer(receiver.app()) as server:
        yield f"{server.url}/hook"


def payload(received: Received) -> Any:
    return json.loads(received.body)
