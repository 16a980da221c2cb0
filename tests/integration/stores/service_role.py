"""Fixtures for running as a service role that owns nothing (import them into a test module).

- ``owner_dsn`` -> ``str``: a fresh database at head; its tables belong to the migrating admin role.
- ``service_role`` -> ``ServiceRole``: a fresh login role (no privileges yet) and the test
  database's DSN as that role; dropped again after the test (roles are cluster-wide).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import asyncpg
import pytest

from tests.support import DatabaseFactory

__all__ = ["ServiceRole", "admin_execute", "owner_dsn", "service_role"]


@dataclass
class ServiceRole:
    name: str
    dsn: str  # the test database, as this role


def dsn_as(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


async def admin_execute(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
async def owner_dsn(database_factory: DatabaseFactory) -> str:
    return await database_factory()


@pytest.fixture
async def service_role(owner_dsn: str) -> AsyncIterator[ServiceRole]:
    name, password = f"focal_service_{uuid4().hex[:8]}", uuid4().hex
    await admin_execute(owner_dsn, f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    yield ServiceRole(name, dsn_as(owner_dsn, name, password))
    await admin_execute(owner_dsn, f"DROP OWNED BY {name}", f"DROP ROLE {name}")
