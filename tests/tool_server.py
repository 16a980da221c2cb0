"""A real loopback HTTP tool server for tests: a small shop API that records every request.

``ToolServer`` serves (``LoopbackServer``) a Starlette app with:

- ``GET /orders/{number}``: the order as JSON (404 for an unknown one); requires the header
  ``X-Api-Key: <api_key>`` when ``api_key`` is set (401 otherwise);
- ``POST /labels``: creates a return label from the JSON body, 201 with ``{"label_id": ...}``;
- ``GET /slow``: answers only once ``release`` is set (for timeouts; the test sets it at the end);
- ``GET /together/{n}``: answers once ``n`` requests to it are in flight (proves calls run
  concurrently: sequential calls would each wait until their tool's timeout);
- ``GET /echo-key``: 200 with the API key it received in the body (a server leaking the secret);
- ``GET /weird``: JSON with NUL characters and a NaN, which no store could keep as it is.

Requests are recorded (method, path, query, headers, JSON body) in ``requests``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.loopback import LoopbackServer

ORDERS = {
    "FD-10234": {"order_number": "FD-10234", "item": "kettle", "status": "delivered"},
    "FD-10235": {"order_number": "FD-10235", "item": "toaster", "status": "shipped"},
}


class ToolServer:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.labels: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._arrived: dict[int, int] = {}
        self._arrivals: asyncio.Condition | None = None
        self._server = LoopbackServer(self._app())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ToolServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.stop()

    def release(self) -> None:
        """Let the ``/slow`` requests answer."""
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def _app(self) -> Starlette:
        async def record(request: Request) -> dict[str, Any]:
            self._loop = asyncio.get_running_loop()
            if self._release is None:
                self._release = asyncio.Event()
            body = await request.body()
            seen = {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": json.loads(body) if body else None,
            }
            self.requests.append(seen)
            return seen

        def authorised(seen: dict[str, Any]) -> bool:
            return self.api_key is None or seen["headers"].get("x-api-key") == self.api_key

        async def order(request: Request) -> Response:
            seen = await record(request)
            if not authorised(seen):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            found = ORDERS.get(request.path_params["number"])
            if found is None:
                return JSONResponse({"error": "no such order"}, status_code=404)
            return JSONResponse(found)

        async def labels(request: Request) -> Response:
            seen = await record(request)
            if not authorised(seen):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            label = {"label_id": f"LBL-{len(self.labels) + 1}", **(seen["json"] or {})}
            self.labels.append(label)
            return JSONResponse(label, status_code=201)

        async def slow(request: Request) -> Response:
            await record(request)
            assert self._release is not None
            await self._release.wait()
            return JSONResponse({"late": True})

        async def together(request: Request) -> Response:
            await record(request)
            wanted = int(request.path_params["n"])
            if self._arrivals is None:
                self._arrivals = asyncio.Condition()
            async with self._arrivals:
                self._arrived[wanted] = self._arrived.get(wanted, 0) + 1
                self._arrivals.notify_all()
                await asyncio.wait_for(self._arrivals.wait_for(lambda: self._arrived[wanted] >= wanted), 10)
            return JSONResponse({"together": wanted, "query": dict(request.query_params)})

        async def echo_key(request: Request) -> Response:
            seen = await record(request)
            return JSONResponse({"you_sent": seen["headers"].get("x-api-key")})

        async def weird(request: Request) -> Response:
            await record(request)
            return Response('{"text": "a\\u0000b", "score": NaN}', media_type="application/json")

        return Starlette(
            routes=[
                Route("/orders/{number}", order),
                Route("/labels", labels, methods=["POST"]),
                Route("/slow", slow),
                Route("/together/{n:int}", together),
                Route("/echo-key", echo_key),
                Route("/weird", weird),
            ]
        )
