"""Fixtures for the turn-pipeline unit tests: a fresh in-memory stack per test; a real loopback
tool server (``shop``, from tests/conftest.py) and an executor on a real httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from uuid import UUID

import httpx
import pytest
import pytest_asyncio

from focal.demo_shop import DemoShop
from focal.tools.http import HttpToolExecutor
from tests.demo_support import running_demo_shop
from tests.support import new_tenant
from tests.unit.turn.support import RecordingLLM, TurnStack


@pytest.fixture
def llm() -> RecordingLLM:
    return RecordingLLM()


@pytest.fixture
def stack(llm: RecordingLLM) -> TurnStack:
    return TurnStack(llm=llm)


@pytest.fixture
def tenant() -> UUID:
    return new_tenant()


@pytest_asyncio.fixture
async def executor() -> AsyncIterator[HttpToolExecutor]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield HttpToolExecutor(client)


@pytest.fixture(scope="session")
def demo_shop_server() -> Iterator[DemoShop]:
    with running_demo_shop() as shop:
        yield shop


@pytest.fixture
def demo_shop(demo_shop_server: DemoShop) -> DemoShop:
    """The demo shop, its labels cleared."""
    demo_shop_server.labels.clear()
    return demo_shop_server
