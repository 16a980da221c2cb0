"""Any ASGI app served by uvicorn on 127.0.0.1, for tests that need a real HTTP peer.

- ``LoopbackServer``: in a background thread with its own event loop (tool servers, webhook
  receivers, vendor fakes: apps that share nothing with the test's loop).
- ``serve_in_this_loop``: as a task of the test's own event loop, for Focal's app itself when its
  services hold clients bound to that loop (asyncpg pools, Redis clients) and the test needs a real
  socket (a client that disconnects mid-response).

The code under test talks to them over a real socket, with its real HTTP client, never a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import uvicorn

from focal.net import tcp_listener


class LoopbackServer:
    """``with LoopbackServer(app) as server: server.url``; stopped (and the port freed) on exit."""

    def __init__(self, app: Any) -> None:
        self._socket = tcp_listener("127.0.0.1", 0)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="loopback", daemon=True
        )

    def start(self, timeout: float = 10.0) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def serve_in_this_loop(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port from the running loop; yields its base URL."""
    sock = tcp_listener("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the loopback server did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
