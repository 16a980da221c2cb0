"""``tcp_listener``: connections accepted by asyncio on it run with Nagle's algorithm off.

Without ``TCP_NODELAY`` a uvicorn response (headers, then body) on a kept-alive connection waits
for the client's delayed acknowledgement: about 40 ms per request. The option is checked on the
real accepted sockets, so the test cannot depend on timing.
"""

from __future__ import annotations

import asyncio
import socket

from focal.net import tcp_listener


async def _accepted_nodelay(listener: socket.socket) -> int:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accept, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        result = await asyncio.wait_for(seen, 10)
        writer.close()
    return result


async def test_connections_accepted_on_a_tcp_listener_have_nagle_off() -> None:
    assert await _accepted_nodelay(tcp_listener("127.0.0.1", 0)) == 1


async def test_the_standard_library_listener_would_leave_it_on() -> None:
    # Why tcp_listener exists: asyncio only sets TCP_NODELAY when the socket says IPPROTO_TCP.
    assert await _accepted_nodelay(socket.create_server(("127.0.0.1", 0))) == 0
