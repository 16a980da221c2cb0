"""The demo's shop service: a tiny order and returns API the demo agent's tools really call.

``focal demo`` starts it in the same process and event loop as the API, on a free loopback port
(``serve_demo_shop``), and points the demo agent's tools at it. It keeps its state in memory:

- ``GET /orders/{order_number}``: the order (``DEMO_ORDERS``), or 404;
- ``POST /returns`` with ``{"order_number", "return_reason"}``: creates the order's return label
  (201), or returns the one it already has (200), or 404 for an unknown order;
- ``GET /returns``: every label created, to see what the agent did.

Every request needs the header ``X-Shop-Key`` with the shop's key (401 otherwise): the demo's
tool definitions carry it as their write-only secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from focal.errors import ConfigurationError
from focal.net import tcp_listener

__all__ = ["DEMO_ORDERS", "KEY_HEADER", "DemoShop", "serve_demo_shop"]

KEY_HEADER = "X-Shop-Key"
DEMO_ORDERS: dict[str, dict[str, Any]] = {
    "FD-10234": {"order_number": "FD-10234", "item": "electric kettle", "delivered_on": "2024-05-02"},
    "FD-10235": {"order_number": "FD-10235", "item": "toaster", "delivered_on": "2024-05-06"},
    "FD-10236": {"order_number": "FD-10236", "item": "hand blender", "delivered_on": "2024-05-09"},
}
_START_TIMEOUT_SECONDS = 10.0


class DemoShop:
    """The shop's state and its ASGI app. ``url`` is set while it is served."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.orders = {number: dict(order) for number, order in DEMO_ORDERS.items()}
        self.labels: dict[str, dict[str, Any]] = {}  # by order number
        self.url: str | None = None
        self.app = Starlette(
            routes=[
                Route("/orders/{order_number}", self._order),
                Route("/returns", self._create_label, methods=["POST"]),
                Route("/returns", self._labels, methods=["GET"]),
            ]
        )

    def _refused(self, request: Request) -> Response | None:
        if not secrets.compare_digest(request.headers.get(KEY_HEADER, ""), self.api_key):
            return JSONResponse({"error": f"missing or wrong {KEY_HEADER}"}, status_code=401)
        return None

    async def _order(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        order = self.orders.get(request.path_params["order_number"])
        if order is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        return JSONResponse(order)

    async def _create_label(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        number = body.get("order_number") if isinstance(body, dict) else None
        if number not in self.orders:
            return JSONResponse({"error": "no such order"}, status_code=404)
        if number in self.labels:
            return JSONResponse(self.labels[number])
        label = {
            "label_id": f"RL-{len(self.labels) + 1:05d}",
            "order_number": number,
            "return_reason": str(body.get("return_reason") or ""),
            "item": self.orders[number]["item"],
        }
        self.labels[number] = label
        return JSONResponse(label, status_code=201)

    async def _labels(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        return JSONResponse({"items": list(self.labels.values())})


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (``focal serve``'s own server)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_demo_shop(shop: DemoShop, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``shop`` on a free port of ``host`` in this event loop; yields (and sets) its URL."""
    listener = tcp_listener(host, 0)
    port = int(listener.getsockname()[1])
    config = uvicorn.Config(shop.app, log_config=None, access_log=False, lifespan="off", server_header=False)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(_START_TIMEOUT_SECONDS):
            while not server.started:
                if task.done():
                    break
                await asyncio.sleep(0.01)  # uvicorn offers no start event; bounded by the timeout
        if not server.started:
            raise ConfigurationError(f"the demo shop could not start on {host}:{port}")
        shop.url = f"http://{host}:{port}"
        yield shop.url
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        listener.close()
        shop.url = None
