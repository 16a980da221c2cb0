"""AuditStore contract: every backend behaves like the in-memory reference.

Backends and builders live in ``audit_backends``; what every backend must keep exactly or refuse
(JSON types, unstorable text, timestamps and nesting) is in ``test_audit_store_values``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.audit.models import MatchedRule, TokenCounts
from focal.audit.stores.store import AuditStore
from focal.errors import ConflictError, InvalidDataError
from tests.contract.audit_backends import (
    audit_store_fixture,  # noqa: F401 - the parametrised fixture
    make_event,
    make_turn,
)
from tests.support import new_tenant

BASE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


# --- turns ---------------------------------------------------------------------------------------


async def test_turn_round_trips_every_field(store: AuditStore) -> None:
    tenant = new_tenant()
    turn = make_turn(
        tenant,
        turn_number=3,
        user_message="Où est ma commande ? 📦",
        assistant_response="Elle arrive demain.",
        context_extracted={"intent": "order_status", "nested": {"ids": [1, 2], "ok": True, "none": None}},
        rules_matched=[MatchedRule(rule_id=uuid4(), name="greet", score=0.875)],
        scenario_state={"step": "s1", "vars": {"x": 1.5}},
        tools_executed=[{"tool": "lookup", "args": {"q": "x"}, "ms": 12}],
        token_usage=TokenCounts(prompt_tokens=10, completion_tokens=5, total_tokens=15),
        latency_ms=42.25,
        created_at=datetime(2026, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
    )
    assert await store.save_turn(turn) == turn.id
    assert await store.get_turn(tenant, turn.id) == turn


async def test_turn_json_is_normalised_like_jsonb(store: AuditStore) -> None:
    tenant = new_tenant()
    when = datetime(2026, 5, 1, tzinfo=UTC)
    # Models refuse non-JSON payloads; model_copy skips validation, so the store must still cope.
    turn = make_turn(tenant).model_copy(update={"context_extracted": {"pair": (1, 2), "when": when}})
    await store.save_turn(turn)
    stored = await store.get_turn(tenant, turn.id)
    assert stored is not None
    assert stored.context_extracted == {"pair": [1, 2], "when": "2026-05-01T00:00:00Z"}


async def test_non_utc_timestamp_is_the_same_instant(store: AuditStore) -> None:
    tenant = new_tenant()
    created = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    turn = make_turn(tenant, created_at=created)
    await store.save_turn(turn)
    stored = await store.get_turn(tenant, turn.id)
    assert stored is not None and stored.created_at == created


async def test_get_turn_is_tenant_scoped(store: AuditStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    turn = make_turn(tenant)
    await store.save_turn(turn)
    assert await store.get_turn(other, turn.id) is None
    assert await store.get_turn(tenant, uuid4()) is None


async def test_existing_id_is_never_overwritten(store: AuditStore) -> None:
    tenant = new_tenant()
    turn = make_turn(tenant)
    await store.save_turn(turn)
    rewrite = turn.model_copy(update={"assistant_response": "rewritten", "turn_number": 2})
    with pytest.raises(ConflictError):
        await store.save_turn(rewrite)
    assert await store.get_turn(tenant, turn.id) == turn
    assert await store.list_turns_by_session(tenant, turn.session_id) == [turn]


async def test_id_of_another_tenant_is_a_conflict(store: AuditStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    turn = make_turn(tenant)
    await store.save_turn(turn)
    clash = make_turn(other, id=turn.id)
    with pytest.raises(ConflictError):
        await store.save_turn(clash)
    assert await store.get_turn(other, turn.id) is None
    assert await store.get_turn(tenant, turn.id) == turn


async def test_duplicate_turn_number_in_a_session_is_a_conflict(store: AuditStore) -> None:
    tenant = new_tenant()
    first = make_turn(tenant, turn_number=1)
    await store.save_turn(first)
    duplicate = make_turn(tenant, session_id=first.session_id, turn_number=1)
    with pytest.raises(ConflictError):
        await store.save_turn(duplicate)
    assert await store.get_turn(tenant, duplicate.id) is None
    # The same session id and number are free in another tenant.
    elsewhere = make_turn(new_tenant(), session_id=first.session_id, turn_number=1)
    assert await store.save_turn(elsewhere) == elsewhere.id


async def test_list_turns_by_session_orders_by_turn_number(store: AuditStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    session = uuid4()
    turns = {n: make_turn(tenant, session, n) for n in (3, 1, 4, 2)}
    for turn in turns.values():
        await store.save_turn(turn)
    await store.save_turn(make_turn(tenant, uuid4(), 1))  # another session
    await store.save_turn(make_turn(other, session, 5))  # same session id, another tenant
    listed = await store.list_turns_by_session(tenant, session)
    assert [t.turn_number for t in listed] == [1, 2, 3, 4]
    assert listed[0] == turns[1]
    page = await store.list_turns_by_session(tenant, session, limit=2, offset=1)
    assert [t.turn_number for t in page] == [2, 3]
    assert await store.list_turns_by_session(tenant, session, limit=1, offset=10) == []
    assert [t.turn_number for t in await store.list_turns_by_session(other, session)] == [5]
    assert await store.list_turns_by_session(new_tenant(), session) == []


async def test_list_turns_by_tenant_orders_by_created_at_desc_then_id(store: AuditStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    turns = [make_turn(tenant, turn_number=1, created_at=BASE + timedelta(minutes=m)) for m in (0, 2, 1)]
    tied = [make_turn(tenant, turn_number=1, created_at=BASE + timedelta(minutes=3)) for _ in range(3)]
    for turn in [*turns, *tied]:
        await store.save_turn(turn)
    await store.save_turn(make_turn(other, created_at=BASE + timedelta(minutes=1)))
    expected = [*sorted(tied, key=lambda t: t.id), turns[1], turns[2], turns[0]]
    assert await store.list_turns_by_tenant(tenant) == expected
    assert await store.list_turns_by_tenant(tenant, limit=2) == expected[:2]
    assert len(await store.list_turns_by_tenant(other)) == 1


async def test_list_turns_by_tenant_window_is_half_open(store: AuditStore) -> None:
    tenant = new_tenant()
    turns = [make_turn(tenant, created_at=BASE + timedelta(minutes=m)) for m in range(4)]
    for turn in turns:
        await store.save_turn(turn)
    window = await store.list_turns_by_tenant(
        tenant, since=BASE + timedelta(minutes=1), until=BASE + timedelta(minutes=3)
    )
    assert window == [turns[2], turns[1]]
    assert await store.list_turns_by_tenant(tenant, since=BASE + timedelta(minutes=3)) == [turns[3]]
    assert await store.list_turns_by_tenant(tenant, until=BASE + timedelta(minutes=1)) == [turns[0]]
    assert await store.list_turns_by_tenant(tenant, since=BASE, until=BASE) == []


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (BASE + timedelta(minutes=1), BASE),
        (datetime(2026, 1, 1), None),  # naive
        (None, datetime(2026, 1, 1)),  # naive
    ],
)
async def test_bad_window_is_invalid(
    store: AuditStore, since: datetime | None, until: datetime | None
) -> None:
    with pytest.raises(InvalidDataError):
        await store.list_turns_by_tenant(new_tenant(), since=since, until=until)


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (-1, 0), (10, -1)])
async def test_limits_are_checked(store: AuditStore, limit: int, offset: int) -> None:
    tenant = new_tenant()
    with pytest.raises(InvalidDataError):
        await store.list_turns_by_session(tenant, uuid4(), limit=limit, offset=offset)
    if offset == 0:
        with pytest.raises(InvalidDataError):
            await store.list_turns_by_tenant(tenant, limit=limit)
        with pytest.raises(InvalidDataError):
            await store.list_events(tenant, limit=limit)


async def test_limit_bounds_are_accepted(store: AuditStore) -> None:
    tenant = new_tenant()
    turn = make_turn(tenant)
    await store.save_turn(turn)
    assert await store.list_turns_by_session(tenant, turn.session_id, limit=1000) == [turn]
    assert await store.list_turns_by_tenant(tenant, limit=1) == [turn]


@pytest.mark.parametrize(
    "bad",
    [
        {"created_at": datetime(2026, 1, 1)},  # naive timestamp
        {"user_message": "nul \x00 byte"},
        {"context_extracted": {"k": "nul \x00"}},
        {"turn_number": 2**31},
        {"latency_ms": float("inf")},
    ],
    ids=["naive", "nul-text", "nul-json", "turn-number-overflow", "infinite-latency"],
)
async def test_bad_turn_is_refused_and_writes_nothing(store: AuditStore, bad: dict[str, Any]) -> None:
    tenant = new_tenant()
    turn = make_turn(tenant).model_copy(update=bad)  # skips the model's own validation
    with pytest.raises(InvalidDataError):
        await store.save_turn(turn)
    assert await store.get_turn(tenant, turn.id) is None
    assert await store.list_turns_by_tenant(tenant) == []


async def test_turn_copies_are_detached(store: AuditStore) -> None:
    tenant = new_tenant()
    turn = make_turn(tenant, context_extracted={"a": {"b": 1}}, tools_executed=[{"t": 1}])
    expected = turn.model_copy(deep=True)
    await store.save_turn(turn)
    turn.context_extracted["a"]["b"] = 2  # frozen models still hold mutable dicts
    turn.tools_executed.append({"t": 2})
    read = await store.get_turn(tenant, turn.id)
    assert read == expected
    assert read is not None
    read.context_extracted["a"]["b"] = 3
    listed = await store.list_turns_by_session(tenant, turn.session_id)
    listed[0].tools_executed.clear()
    assert await store.get_turn(tenant, turn.id) == expected


async def test_concurrent_saves_of_one_turn_number_have_one_winner(store: AuditStore) -> None:
    tenant, session = new_tenant(), uuid4()
    candidates = [make_turn(tenant, session, 7, assistant_response=f"answer {i}") for i in range(20)]
    results = await asyncio.gather(*(store.save_turn(t) for t in candidates), return_exceptions=True)
    winners = [r for r in results if isinstance(r, UUID)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, UUID))
    stored = await store.list_turns_by_session(tenant, session)
    assert [t.id for t in stored] == winners


# --- events --------------------------------------------------------------------------------------


async def test_event_round_trips_every_field(store: AuditStore) -> None:
    tenant = new_tenant()
    event = make_event(
        tenant,
        session_id=uuid4(),
        turn_id=uuid4(),  # not a foreign key: the turn need not exist
        event_type="tool.executed",
        # A literal backslash-u0000 is text, not a NUL: it must be stored as given.
        event_data={"tool": "x", "result": [1, "two", None, {"ok": False}], "raw": "\\u0000"},
        created_at=datetime(2026, 4, 5, 6, 7, 8, 9, tzinfo=UTC),
    )
    assert await store.save_event(event) == event.id
    assert await store.get_event(tenant, event.id) == event
    bare = make_event(tenant, event_data={})
    await store.save_event(bare)
    assert await store.get_event(tenant, bare.id) == bare


async def test_get_event_is_tenant_scoped(store: AuditStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    event = make_event(tenant)
    await store.save_event(event)
    assert await store.get_event(other, event.id) is None
    assert await store.get_event(tenant, uuid4()) is None


async def test_existing_event_id_is_a_conflict(store: AuditStore) -> None:
    tenant = new_tenant()
    event = make_event(tenant)
    await store.save_event(event)
    with pytest.raises(ConflictError):
        await store.save_event(event.model_copy(update={"event_type": "changed"}))
    with pytest.raises(ConflictError):
        await store.save_event(make_event(new_tenant(), id=event.id))
    assert await store.get_event(tenant, event.id) == event


async def test_list_events_filters_and_orders(store: AuditStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    session_a, session_b = uuid4(), uuid4()
    e1 = make_event(tenant, session_id=session_a, event_type="a", created_at=BASE + timedelta(seconds=2))
    e2 = make_event(tenant, session_id=session_a, event_type="b", created_at=BASE)
    e3 = make_event(tenant, session_id=session_b, event_type="a", created_at=BASE + timedelta(seconds=1))
    e4 = make_event(tenant, session_id=None, event_type="a", created_at=BASE + timedelta(seconds=1))
    for event in (e1, e2, e3, e4):
        await store.save_event(event)
    await store.save_event(make_event(other, session_id=session_a, event_type="a", created_at=BASE))
    tied = sorted([e3, e4], key=lambda e: e.id)
    assert await store.list_events(tenant) == [e2, *tied, e1]
    assert await store.list_events(tenant, session_id=session_a) == [e2, e1]
    assert await store.list_events(tenant, event_type="a") == [*tied, e1]
    assert await store.list_events(tenant, session_id=session_a, event_type="a") == [e1]
    assert await store.list_events(tenant, limit=2) == [e2, tied[0]]
    assert len(await store.list_events(other)) == 1
    assert await store.list_events(other, event_type="b") == []
    assert await store.list_events(new_tenant(), session_id=session_a) == []


@pytest.mark.parametrize(
    "bad",
    [{"created_at": datetime(2026, 1, 1)}, {"event_data": {"k\x00": 1}}],
    ids=["naive", "nul-key"],
)
async def test_bad_event_is_refused_and_writes_nothing(store: AuditStore, bad: dict[str, Any]) -> None:
    tenant = new_tenant()
    event = make_event(tenant).model_copy(update=bad)  # skips the model's own validation
    with pytest.raises(InvalidDataError):
        await store.save_event(event)
    assert await store.get_event(tenant, event.id) is None
    assert await store.list_events(tenant) == []


async def test_event_copies_are_detached(store: AuditStore) -> None:
    tenant = new_tenant()
    event = make_event(tenant, event_data={"list": [1]})
    await store.save_event(event)
    event.event_data["list"].append(2)
    read = await store.get_event(tenant, event.id)
    assert read is not None and read.event_data == {"list": [1]}
    read.event_data["list"].append(3)
    assert (await store.list_events(tenant))[0].event_data == {"list": [1]}
