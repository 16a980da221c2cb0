"""The AuditStore backends of the contract suite, and builders for valid test records.

Every ``tests/contract/test_audit_store*.py`` module imports ``audit_store_fixture`` and runs each
test against every backend; a new backend is one more param and factory entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.inmemory import InMemoryAuditStore
from focal.audit.stores.store import AuditStore

BACKENDS = ["inmemory", pytest.param("postgres", marks=pytest.mark.postgres)]


def _postgres(request: pytest.FixtureRequest) -> AuditStore:
    from focal.audit.stores.postgres import PostgresAuditStore

    return PostgresAuditStore(request.getfixturevalue("pg_pool"))


FACTORIES: dict[str, Callable[[pytest.FixtureRequest], AuditStore]] = {
    "inmemory": lambda request: InMemoryAuditStore(),
    "postgres": _postgres,
}


@pytest.fixture(params=BACKENDS, name="store")
def audit_store_fixture(request: pytest.FixtureRequest) -> AuditStore:
    return FACTORIES[request.param](request)


def make_turn(tenant_id: UUID, session_id: UUID | None = None, turn_number: int = 1, **kw: Any) -> TurnRecord:
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "agent_id": uuid4(),
        "session_id": session_id or uuid4(),
        "turn_number": turn_number,
        "user_message": f"hello {turn_number}",
        "assistant_response": "hi there",
    }
    values.update(kw)
    return TurnRecord(**values)


def make_event(tenant_id: UUID, **kw: Any) -> AuditEvent:
    values: dict[str, Any] = {"tenant_id": tenant_id, "event_type": "rule_fired", "event_data": {"n": 1}}
    values.update(kw)
    return AuditEvent(**values)


__all__ = ["BACKENDS", "audit_store_fixture", "make_event", "make_turn"]
