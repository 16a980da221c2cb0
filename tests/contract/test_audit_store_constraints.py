"""AuditStore contract: a turn record's hard-constraint fields (revision 0008) on every backend."""

from __future__ import annotations

from uuid import uuid4

import pytest

from focal.audit.models import CheckedConstraint, ConstraintFailure
from focal.audit.stores.store import AuditStore
from focal.errors import InvalidDataError
from tests.contract.audit_backends import (
    audit_store_fixture,  # noqa: F401 - the parametrised fixture
    make_turn,
)
from tests.support import new_tenant


async def test_constraint_fields_round_trip_and_default_to_empty(store: AuditStore) -> None:
    tenant, rule_id = new_tenant(), uuid4()
    checked = [
        CheckedConstraint(rule_id=rule_id, name="no refunds", patterns=2, judged=True),
        CheckedConstraint(rule_id=uuid4(), name="polite"),
    ]
    failed = [
        ConstraintFailure(
            rule_id=rule_id,
            name="no refunds",
            attempt=1,
            source="llm",
            reasons=["matches the forbidden pattern '(?i)full refund'", "the judge found: promises € 💶"],
        )
    ]
    turn = make_turn(tenant, constraints_checked=checked, constraints_failed=failed)
    plain = make_turn(tenant)
    await store.save_turn(turn)
    await store.save_turn(plain)

    assert await store.get_turn(tenant, turn.id) == turn
    stored_plain = await store.get_turn(tenant, plain.id)
    assert stored_plain is not None
    assert (stored_plain.constraints_checked, stored_plain.constraints_failed) == ([], [])
    listed = await store.list_turns_by_session(tenant, turn.session_id)
    assert listed == [turn]
    assert await store.get_turn(new_tenant(), turn.id) is None  # tenant isolation


async def test_unstorable_constraint_text_is_refused(store: AuditStore) -> None:
    tenant = new_tenant()
    failure = ConstraintFailure(rule_id=uuid4(), name="x", attempt=1, source="llm", reasons=["nul \x00 here"])
    turn = make_turn(tenant, constraints_failed=[failure])
    with pytest.raises(InvalidDataError):
        await store.save_turn(turn)
    assert await store.get_turn(tenant, turn.id) is None
