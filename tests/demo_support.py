"""The demo shop (``focal.demo_shop``) on a real loopback port, for tests that load the demo agent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from focal.demo_shop import DemoShop
from tests.loopback import LoopbackServer


@contextmanager
def running_demo_shop() -> Iterator[DemoShop]:
    """A fresh ``DemoShop`` served on 127.0.0.1 (its ``url`` set) until the block ends."""
    shop = DemoShop()
    with LoopbackServer(shop.app) as server:
        shop.url = server.url
        yield shop
    shop.url = None
