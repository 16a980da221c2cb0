"""Fixtures for provider tests: one loopback fake vendor per session, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from focal.providers.retry import RetryPolicy
from tests.unit.providers.fake_vendor import FAST_RETRIES, FakeVendor, FakeVendorServer


@pytest.fixture(scope="session")
def fake_vendor_server() -> Iterator[FakeVendor]:
    vendor = FakeVendor()
    server = FakeVendorServer(vendor)
    server.start()
    yield vendor
    server.stop()


@pytest.fixture
def vendor(fake_vendor_server: FakeVendor) -> FakeVendor:
    """The fake with an empty script and no recorded requests."""
    fake_vendor_server.reset()
    return fake_vendor_server


@pytest.fixture
def fast_retries() -> RetryPolicy:
    return FAST_RETRIES
