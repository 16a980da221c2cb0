"""AuditStore contract, values: what is saved is what is read, with its type, on every backend;
what no backend can store is an ``InvalidDataError`` before any write, and conflicts read alike.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from focal.audit.stores.store import AuditStore
from focal.errors import ConflictError, InvalidDataError
from tests.contract.audit_backends import (
    audit_store_fixture,  # noqa: F401 - the parametrised fixture
    make_event,
    make_turn,
)
from tests.contract.storable_values import (
    LONE_SURROGATE,
    NUL,
    TYPED_JSON,
    UNSTORABLE_TIMESTAMPS,
    nested,
    typed,
)
from tests.support import new_tenant

DRIVER_WORDS = ("duplicate key", "violates", "DETAIL", "Key (", "Error:")


# --- JSON keeps its types ------------------------------------------------------------------------


async def test_turn_json_keeps_its_types(store: AuditStore) -> None:
    tenant = new_tenant()
    turn = make_turn(
        tenant,
        context_extracted=TYPED_JSON,
        scenario_state={"state": TYPED_JSON},
        tools_executed=[{"result": TYPED_JSON, "ms": 1e16}],
    )
    await store.save_turn(turn)
    by_id = await store.get_turn(tenant, turn.id)
    [by_session] = await store.list_turns_by_session(tenant, turn.session_id)
    [by_tenant] = await store.list_turns_by_tenant(tenant)
    for read in (by_id, by_session, by_tenant):
        assert read is not None
        assert typed(read.context_extracted) == typed(TYPED_JSON)
        assert typed(read.scenario_state) == typed({"state": TYPED_JSON})
        assert typed(read.tools_executed) == typed([{"result": TYPED_JSON, "ms": 1e16}])


async def test_event_data_keeps_its_types(store: AuditStore) -> None:
    tenant = new_tenant()
    event = make_event(tenant, event_data=TYPED_JSON)
    await store.save_event(event)
    by_id = await store.get_event(tenant, event.id)
    [listed] = await store.list_events(tenant)
    assert by_id is not None
    assert typed(by_id.event_data) == typed(listed.event_data) == typed(TYPED_JSON)


# --- unstorable values: InvalidDataError, nothing written -----------------------------------------

BAD_TURN_CHANGES: dict[str, dict[str, Any]] = {
    "surrogate-message": {"user_message": f"hi {LONE_SURROGATE}"},
    "nul-response": {"assistant_response": f"a{NUL}b"},
    "surrogate-in-json": {"context_extracted": {"k": LONE_SURROGATE}},
    "surrogate-json-key": {"scenario_state": {LONE_SURROGATE: 1}},
    "nested-2000": {"context_extracted": {"deep": nested(2000)}},
    "nan-in-json": {"scenario_state": {"x": math.nan}},
    "infinity-in-tools": {"tools_executed": [{"ms": math.inf}]},
    **{f"created-at-{name}": {"created_at": moment} for name, moment in UNSTORABLE_TIMESTAMPS.items()},
}


@pytest.mark.parametrize("change", BAD_TURN_CHANGES.values(), ids=BAD_TURN_CHANGES.keys())
async def test_unstorable_turn_is_refused_and_writes_nothing(
    store: AuditStore, change: dict[str, Any]
) -> None:
    tenant = new_tenant()
    # model_copy(update=...) skips validation, as model_construct does: the store must re-check.
    turn = make_turn(tenant).model_copy(update=change)
    with pytest.raises(InvalidDataError):
        await store.save_turn(turn)
    assert await store.get_turn(tenant, turn.id) is None
    assert await store.list_turns_by_tenant(tenant) == []


BAD_EVENT_CHANGES: dict[str, dict[str, Any]] = {
    "surrogate-type": {"event_type": f"fired{LONE_SURROGATE}"},
    "nul-type": {"event_type": f"fired{NUL}"},
    "surrogate-in-json": {"event_data": {"k": [LONE_SURROGATE]}},
    "nested-2000": {"event_data": {"deep": nested(2000)}},
    "nan-in-json": {"event_data": {"x": -math.inf}},
    **{f"created-at-{name}": {"created_at": moment} for name, moment in UNSTORABLE_TIMESTAMPS.items()},
}


@pytest.mark.parametrize("change", BAD_EVENT_CHANGES.values(), ids=BAD_EVENT_CHANGES.keys())
async def test_unstorable_event_is_refused_and_writes_nothing(
    store: AuditStore, change: dict[str, Any]
) -> None:
    tenant = new_tenant()
    event = make_event(tenant).model_copy(update=change)
    with pytest.raises(InvalidDataError):
        await store.save_event(event)
    assert await store.get_event(tenant, event.id) is None
    assert await store.list_events(tenant) == []


@pytest.mark.parametrize("bad", [LONE_SURROGATE, f"a{NUL}b"], ids=["lone-surrogate", "nul"])
async def test_event_type_filter_refuses_unstorable_text(store: AuditStore, bad: str) -> None:
    with pytest.raises(InvalidDataError):
        await store.list_events(new_tenant(), event_type=bad)


@pytest.mark.parametrize("moment", UNSTORABLE_TIMESTAMPS.values(), ids=UNSTORABLE_TIMESTAMPS.keys())
async def test_turn_window_refuses_timestamps_without_a_utc_instant(store: AuditStore, moment: Any) -> None:
    for window in ({"since": moment}, {"until": moment}):
        with pytest.raises(InvalidDataError):
            await store.list_turns_by_tenant(new_tenant(), **window)


# --- conflicts read like the in-memory reference (no driver text) ---------------------------------


async def test_conflict_messages_are_the_reference_ones(store: AuditStore) -> None:
    tenant = new_tenant()
    turn, event = make_turn(tenant, turn_number=4), make_event(tenant)
    await store.save_turn(turn)
    await store.save_event(event)
    same_number = make_turn(tenant, session_id=turn.session_id, turn_number=4)
    cases = [
        (store.save_turn(turn), f"turn record {turn.id} already exists"),
        (store.save_turn(same_number), f"session {turn.session_id} already has turn number 4"),
        (store.save_event(event), f"audit event {event.id} already exists"),
    ]
    for call, message in cases:
        with pytest.raises(ConflictError) as caught:
            await call
        assert str(caught.value) == message
        assert not any(word in str(caught.value) for word in DRIVER_WORDS)
    assert await store.list_turns_by_session(tenant, turn.session_id) == [turn]
    assert await store.get_turn(tenant, same_number.id) is None
    assert [e.id for e in await store.list_events(tenant)] == [event.id]
