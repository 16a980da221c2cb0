"""SessionStore contract: every backend behaves like the in-memory reference.

One fixture, ``store``, builds each backend; adding a backend is one more entry in ``BACKENDS`` and
one more branch in the fixture. Redis servers start only when a Redis param runs. Every test works
in its own random tenant(s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.alignment.models import ScopeFilter
from focal.conversation.models import Channel, Session, SessionMode, SessionStatus, StepVisit
from focal.conversation.stores.inmemory import InMemorySessionStore
from focal.conversation.stores.redis import RedisSessionStore
from focal.conversation.stores.store import SessionStore
from focal.errors import ConflictError, InvalidDataError
from tests.integration.stores.redis_cluster import redis_cluster_client, redis_cluster_nodes
from tests.support import new_tenant

__all__ = ["redis_cluster_client", "redis_cluster_nodes"]  # fixtures used via getfixturevalue

BACKENDS = [
    "inmemory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    """Synchronous on purpose: ``getfixturevalue`` of an async fixture fails inside a running loop."""
    prefix = f"contract-{uuid4().hex[:8]}"
    if request.param == "inmemory":
        yield InMemorySessionStore()
    elif request.param == "redis":
        yield RedisSessionStore(request.getfixturevalue("redis_client"), key_prefix=prefix)
    elif request.param == "redis-cluster":
        yield RedisSessionStore(request.getfixturevalue("redis_cluster_client"), key_prefix=prefix)
    else:  # pragma: no cover - a param without a factory is a bug in this module
        raise AssertionError(f"no factory for backend {request.param}")


def session(tenant_id: UUID, **fields: Any) -> Session:
    values: dict[str, Any] = {
        "agent_id": uuid4(),
        "channel": Channel.WEB,
        "user_channel_id": f"u-{uuid4().hex}",
    }
    values.update(fields)
    return Session(tenant_id=tenant_id, **values)


def at_step(
    tenant_id: UUID, scenario_id: UUID, version: int, step_hash: str, step_name: str = "ask", **fields: Any
) -> Session:
    step_id = uuid4()
    visit = StepVisit(step_id=step_id, step_name=step_name, step_content_hash=step_hash, turn_number=1)
    return session(
        tenant_id,
        active_scenario_id=scenario_id,
        active_scenario_version=version,
        current_step_id=step_id,
        step_history=[visit],
        **fields,
    )


def ids(sessions: list[Session]) -> list[UUID]:
    return [s.session_id for s in sessions]


# --- save / get ---------------------------------------------------------------------------


async def test_save_new_session_returns_stored_copy_with_version_one(store: SessionStore) -> None:
    tenant = new_tenant()
    original = session(tenant, variables={"name": "Ada", "nested": {"n": [1, 2]}}, turn_count=3)
    before = datetime.now(UTC)
    saved = await store.save(original)
    assert saved.version == 1
    assert before <= saved.last_activity_at <= datetime.now(UTC)
    assert saved.model_dump(exclude={"version", "last_activity_at"}) == original.model_dump(
        exclude={"version", "last_activity_at"}
    )
    assert original.version == 0  # the caller's object is not changed
    assert await store.get(tenant, original.session_id) == saved


async def test_save_increments_version_and_keeps_changes(store: SessionStore) -> None:
    tenant = new_tenant()
    first = await store.save(session(tenant))
    first.turn_count = 5
    first.status = SessionStatus.IDLE
    second = await store.save(first)
    assert second.version == 2
    assert second.last_activity_at >= first.last_activity_at
    stored = await store.get(tenant, first.session_id)
    assert stored == second
    assert stored is not None and stored.turn_count == 5 and stored.status == SessionStatus.IDLE


async def test_mode_defaults_to_auto_and_is_kept_on_every_read_path(store: SessionStore) -> None:
    tenant = new_tenant()
    first = await store.save(session(tenant))
    assert first.mode is SessionMode.AUTO
    manual = await store.save(first.model_copy(update={"mode": SessionMode.MANUAL}))
    assert manual.mode is SessionMode.MANUAL
    stored = await store.get(tenant, first.session_id)
    assert stored is not None and stored.mode is SessionMode.MANUAL
    by_channel = await store.get_by_channel(tenant, first.channel, first.user_channel_id)
    assert by_channel is not None and by_channel.mode is SessionMode.MANUAL
    assert [s.mode for s in await store.list_by_agent(tenant, first.agent_id)] == [SessionMode.MANUAL]
    assert await store.get(new_tenant(), first.session_id) is None


async def test_get_unknown_or_other_tenant_returns_none(store: SessionStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    saved = await store.save(session(tenant))
    assert await store.get(tenant, uuid4()) is None
    assert await store.get(other, saved.session_id) is None


async def test_stale_version_conflicts_and_changes_nothing(store: SessionStore) -> None:
    tenant = new_tenant()
    first = await store.save(session(tenant))
    second = await store.save(first.model_copy(update={"turn_count": 1}))
    stale = first.model_copy(update={"turn_count": 99})
    with pytest.raises(ConflictError):
        await store.save(stale)
    assert await store.get(tenant, first.session_id) == second


async def test_new_session_with_nonzero_version_conflicts_and_writes_nothing(store: SessionStore) -> None:
    tenant = new_tenant()
    orphan = session(tenant, version=4)
    with pytest.raises(ConflictError):
        await store.save(orphan)
    assert await store.get(tenant, orphan.session_id) is None
    assert await store.list_by_agent(tenant, orphan.agent_id) == []


async def test_saving_over_another_tenants_session_id_conflicts(store: SessionStore) -> None:
    owner, intruder = new_tenant(), new_tenant()
    saved = await store.save(session(owner))
    for version in (0, saved.version):
        clash = session(intruder, session_id=saved.session_id, version=version)
        with pytest.raises(ConflictError):
            await store.save(clash)
    assert await store.get(owner, saved.session_id) == saved
    assert await store.get(intruder, saved.session_id) is None
    assert await store.list_by_agent(intruder, saved.agent_id) == []


async def test_fifty_concurrent_saves_of_one_version_exactly_one_wins(store: SessionStore) -> None:
    tenant = new_tenant()
    base = await store.save(session(tenant))
    attempts = [base.model_copy(update={"turn_count": n}) for n in range(50)]
    results = await asyncio.gather(*(store.save(a) for a in attempts), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Session)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 49 and all(isinstance(e, ConflictError) for e in losers)
    stored = await store.get(tenant, base.session_id)
    assert stored == winners[0] and stored is not None and stored.version == 2


# --- copy semantics and bad input -----------------------------------------------------------


async def test_returned_and_saved_objects_are_copies(store: SessionStore) -> None:
    tenant = new_tenant()
    original = session(tenant, variables={"items": [1]})
    saved = await store.save(original)
    snapshot = saved.model_copy(deep=True)
    original.variables["items"].append(2)
    saved.variables["items"].append(3)
    saved.turn_count = 7
    fetched = await store.get(tenant, original.session_id)
    assert fetched == snapshot
    assert fetched is not None
    fetched.variables["items"].append(4)
    listed = await store.list_by_agent(tenant, original.agent_id)
    listed[0].variables["new"] = True
    assert await store.get(tenant, original.session_id) == snapshot


async def test_variables_round_trip_as_json(store: SessionStore) -> None:
    tenant = new_tenant()
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # Models refuse non-JSON variables; model_copy skips validation, so the store must still cope.
    saved = await store.save(
        session(tenant).model_copy(update={"variables": {"when": moment, "n": 1.5, "ok": None}})
    )
    fetched = await store.get(tenant, saved.session_id)
    assert fetched is not None and fetched.variables == {"when": "2026-01-02T03:04:05Z", "n": 1.5, "ok": None}
    assert saved == fetched


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda s: Session.model_construct(**{**dict(s), "turn_count": -1}), id="invalid-field"),
        pytest.param(lambda s: s.model_copy(update={"variables": {"x": object()}}), id="not-json"),
        pytest.param(
            lambda s: s.model_copy(update={"created_at": datetime(2026, 1, 1)}), id="naive-created-at"
        ),
        # JSON has no NaN: pydantic would write null, and the value read back would differ.
        pytest.param(lambda s: s.model_copy(update={"variables": {"x": float("nan")}}), id="nan-variable"),
        pytest.param(lambda s: s.model_copy(update={"variables": {"x": [float("inf")]}}), id="inf-variable"),
        pytest.param(lambda s: s.model_copy(update={"variables": {"\ud800": 1}}), id="surrogate-key"),
        pytest.param(lambda s: s.model_copy(update={"variables": {"x": "a\ud800"}}), id="surrogate-value"),
        pytest.param(lambda s: s.model_copy(update={"variables": {"x": "a\x00b"}}), id="nul-value"),
    ],
)
async def test_bad_input_raises_invalid_data_and_changes_nothing(store: SessionStore, break_it: Any) -> None:
    tenant = new_tenant()
    saved = await store.save(session(tenant))
    with pytest.raises(InvalidDataError):
        await store.save(break_it(saved))
    assert await store.get(tenant, saved.session_id) == saved
    fresh = session(tenant)
    with pytest.raises(InvalidDataError):
        await store.save(break_it(fresh))
    assert await store.get(tenant, fresh.session_id) is None
    assert ids(await store.list_by_agent(tenant, saved.agent_id)) == [saved.session_id]


@pytest.mark.parametrize("text", ["\ud800", "a\x00b"])
async def test_lookups_by_text_no_session_can_hold_are_invalid_data(store: SessionStore, text: str) -> None:
    tenant = new_tenant()
    await store.save(session(tenant))
    with pytest.raises(InvalidDataError):
        await store.get_by_channel(tenant, Channel.WEB, text)
    with pytest.raises(InvalidDataError):
        await store.find_sessions_by_step_hash(tenant, uuid4(), 1, text)


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_list_limits_out_of_range_raise(store: SessionStore, limit: int) -> None:
    tenant = new_tenant()
    saved = await store.save(session(tenant, customer_profile_id=uuid4()))
    assert saved.customer_profile_id is not None
    with pytest.raises(InvalidDataError):
        await store.list_by_agent(tenant, saved.agent_id, limit=limit)
    with pytest.raises(InvalidDataError):
        await store.list_by_customer(tenant, saved.customer_profile_id, limit=limit)
    assert await store.list_by_agent(tenant, saved.agent_id, limit=1000) == [saved]


# --- delete -------------------------------------------------------------------------------


async def test_delete_removes_session_from_every_read_path(store: SessionStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    scenario = uuid4()
    saved = await store.save(at_step(tenant, scenario, 1, "h1", customer_profile_id=uuid4()))
    assert saved.customer_profile_id is not None
    assert await store.delete(other, saved.session_id) is False
    assert await store.get(tenant, saved.session_id) == saved
    assert await store.delete(tenant, saved.session_id) is True
    assert await store.delete(tenant, saved.session_id) is False
    assert await store.get(tenant, saved.session_id) is None
    assert await store.list_by_agent(tenant, saved.agent_id) == []
    assert await store.list_by_customer(tenant, saved.customer_profile_id) == []
    assert await store.get_by_channel(tenant, saved.channel, saved.user_channel_id) is None
    assert await store.find_sessions_by_step_hash(tenant, scenario, 1, "h1") == []


async def test_deleted_session_id_can_be_created_again(store: SessionStore) -> None:
    tenant = new_tenant()
    first = await store.save(session(tenant))
    await store.delete(tenant, first.session_id)
    again = await store.save(session(tenant, session_id=first.session_id))
    assert again.version == 1


# --- get_by_channel -------------------------------------------------------------------------


async def test_get_by_channel_returns_most_recently_saved(store: SessionStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    older = await store.save(session(tenant, channel=Channel.SMS, user_channel_id="+100"))
    newer = await store.save(session(tenant, channel=Channel.SMS, user_channel_id="+100"))
    await store.save(session(tenant, channel=Channel.WHATSAPP, user_channel_id="+100"))
    await store.save(session(other, channel=Channel.SMS, user_channel_id="+100"))
    assert await store.get_by_channel(tenant, Channel.SMS, "+100") == newer
    resaved = await store.save(older)
    assert await store.get_by_channel(tenant, Channel.SMS, "+100") == resaved
    assert await store.get_by_channel(tenant, Channel.SMS, "+999") is None
    assert await store.get_by_channel(tenant, Channel.EMAIL, "+100") is None
    await store.delete(tenant, resaved.session_id)
    assert await store.get_by_channel(tenant, Channel.SMS, "+100") == newer
    assert await store.get_by_channel(new_tenant(), Channel.SMS, "+100") is None


def clock_at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """This process's clock reads ``moment`` for the stores (as in a process whose clock is off)."""
    for module in ("focal.conversation.stores.inmemory", "focal.conversation.stores.redis"):
        monkeypatch.setattr(f"{module}.utc_now", lambda: moment)


async def test_get_by_channel_returns_the_latest_save_whatever_the_writers_clocks(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose clock ran an hour ahead saved, then closed, a session; a process with the
    right clock then starts a new session for the same identity: that one is the latest."""
    tenant = new_tenant()
    clock_at(monkeypatch, datetime.now(UTC) + timedelta(hours=1))
    old = await store.save(session(tenant, channel=Channel.SMS, user_channel_id="+100"))
    old = await store.save(old.model_copy(update={"status": SessionStatus.CLOSED}))
    monkeypatch.undo()
    new = await store.save(session(tenant, channel=Channel.SMS, user_channel_id="+100"))
    assert await store.get_by_channel(tenant, Channel.SMS, "+100") == new
    old = await store.save(old.model_copy(update={"status": SessionStatus.ACTIVE}))  # reopened: latest again
    assert await store.get_by_channel(tenant, Channel.SMS, "+100") == old
    assert await store.get_by_channel(new_tenant(), Channel.SMS, "+100") is None


async def test_last_activity_never_goes_back_from_one_version_to_the_next(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, agent = new_tenant(), uuid4()
    clock_at(monkeypatch, datetime.now(UTC) + timedelta(hours=1))
    skewed = await store.save(session(tenant, agent_id=agent))
    monkeypatch.undo()
    later = await store.save(skewed)
    assert later.last_activity_at > skewed.last_activity_at
    assert await store.get(tenant, later.session_id) == later
    other = await store.save(session(tenant, agent_id=agent))
    assert other.last_activity_at < later.last_activity_at  # the right clock is still behind
    assert await store.list_by_agent(tenant, agent) == [later, other]
    assert await store.list_by_agent(tenant, agent, limit=1) == [later]


async def test_get_by_channel_follows_a_changed_identity(store: SessionStore) -> None:
    tenant = new_tenant()
    saved = await store.save(session(tenant, channel=Channel.WEB, user_channel_id="old"))
    saved.user_channel_id = "new"
    moved = await store.save(saved)
    assert await store.get_by_channel(tenant, Channel.WEB, "old") is None
    assert await store.get_by_channel(tenant, Channel.WEB, "new") == moved


# --- lists ----------------------------------------------------------------------------------


async def test_list_by_agent_orders_by_last_activity_and_filters(store: SessionStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    agent = uuid4()
    a = await store.save(session(tenant, agent_id=agent))
    b = await store.save(session(tenant, agent_id=agent, status=SessionStatus.CLOSED))
    c = await store.save(session(tenant, agent_id=agent))
    await store.save(session(tenant))  # another agent
    await store.save(session(other, agent_id=agent))  # another tenant, same agent id
    a = await store.save(a)  # most recent activity now
    assert ids(await store.list_by_agent(tenant, agent)) == ids([a, c, b])
    assert await store.list_by_agent(tenant, agent) == [a, c, b]
    assert ids(await store.list_by_agent(tenant, agent, status=SessionStatus.ACTIVE)) == ids([a, c])
    assert ids(await store.list_by_agent(tenant, agent, status=SessionStatus.CLOSED)) == ids([b])
    assert await store.list_by_agent(tenant, agent, status=SessionStatus.IDLE) == []
    assert ids(await store.list_by_agent(tenant, agent, limit=2)) == ids([a, c])
    assert ids(await store.list_by_agent(tenant, agent, status=SessionStatus.ACTIVE, limit=1)) == ids([a])
    assert len(await store.list_by_agent(other, agent)) == 1
    assert await store.list_by_agent(new_tenant(), agent) == []


async def test_equal_last_activity_breaks_ties_on_session_id(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    moment = datetime.now(UTC)
    for module in ("focal.conversation.stores.inmemory", "focal.conversation.stores.redis"):
        monkeypatch.setattr(f"{module}.utc_now", lambda: moment)
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    saved = [
        await store.save(
            session(tenant, agent_id=agent, customer_profile_id=customer, user_channel_id="same")
        )
        for _ in range(5)
    ]
    by_id = sorted(saved, key=lambda s: s.session_id)
    assert await store.list_by_agent(tenant, agent) == by_id
    assert await store.list_by_agent(tenant, agent, limit=2) == by_id[:2]
    assert await store.list_by_customer(tenant, customer, limit=3) == by_id[:3]
    # The channel lookup follows the order of the saves, not the (equal) clock readings.
    assert await store.get_by_channel(tenant, Channel.WEB, "same") == saved[-1]


async def test_list_by_agent_drops_sessions_moved_to_another_agent(store: SessionStore) -> None:
    tenant = new_tenant()
    agent, new_agent = uuid4(), uuid4()
    saved = await store.save(session(tenant, agent_id=agent))
    saved.agent_id = new_agent
    moved = await store.save(saved)
    assert await store.list_by_agent(tenant, agent) == []
    assert await store.list_by_agent(tenant, new_agent) == [moved]


async def test_list_by_agent_pages_past_filtered_entries(store: SessionStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    active = await store.save(session(tenant, agent_id=agent))
    for _ in range(20):  # newer, all closed: more than one index page to skip
        await store.save(session(tenant, agent_id=agent, status=SessionStatus.CLOSED))
    assert await store.list_by_agent(tenant, agent, status=SessionStatus.ACTIVE, limit=1) == [active]
    assert len(await store.list_by_agent(tenant, agent, limit=1000)) == 21


async def test_list_by_customer_orders_by_last_activity(store: SessionStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    customer = uuid4()
    first = await store.save(session(tenant, customer_profile_id=customer))
    second = await store.save(session(tenant, customer_profile_id=customer, channel=Channel.EMAIL))
    await store.save(session(tenant, customer_profile_id=uuid4()))
    await store.save(session(tenant))  # no customer
    await store.save(session(other, customer_profile_id=customer))
    assert await store.list_by_customer(tenant, customer) == [second, first]
    assert ids(await store.list_by_customer(tenant, customer, limit=1)) == ids([second])
    first = await store.save(first)
    assert ids(await store.list_by_customer(tenant, customer)) == ids([first, second])
    others = await store.list_by_customer(other, customer)
    assert len(others) == 1 and others[0].tenant_id == other
    assert await store.list_by_customer(new_tenant(), customer) == []


# --- find_sessions_by_step_hash -------------------------------------------------------------


async def test_find_sessions_by_step_hash_matches_current_step_only(store: SessionStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    scenario = uuid4()
    here = [await store.save(at_step(tenant, scenario, 2, "hash-a")) for _ in range(3)]
    await store.save(at_step(tenant, scenario, 2, "hash-b"))  # other step
    await store.save(at_step(tenant, scenario, 3, "hash-a"))  # other version
    await store.save(at_step(tenant, uuid4(), 2, "hash-a"))  # other scenario
    await store.save(at_step(other, scenario, 2, "hash-a"))  # other tenant
    moved = here.pop()
    next_step = StepVisit(step_id=uuid4(), step_name="confirm", step_content_hash="hash-c", turn_number=2)
    moved.step_history.append(next_step)
    moved.current_step_id = next_step.step_id
    moved = await store.save(moved)
    found = await store.find_sessions_by_step_hash(tenant, scenario, 2, "hash-a")
    assert found == sorted(here, key=lambda s: s.session_id)
    assert await store.find_sessions_by_step_hash(tenant, scenario, 2, "hash-c") == [moved]
    assert await store.find_sessions_by_step_hash(tenant, scenario, 2, "nope") == []
    assert len(await store.find_sessions_by_step_hash(other, scenario, 2, "hash-a")) == 1


async def test_find_sessions_by_step_hash_applies_scope_filter(store: SessionStore) -> None:
    tenant, scenario = new_tenant(), uuid4()
    now = datetime.now(UTC)
    web = await store.save(at_step(tenant, scenario, 1, "h", channel=Channel.WEB))
    sms = await store.save(at_step(tenant, scenario, 1, "h", channel=Channel.SMS))
    old = await store.save(
        at_step(tenant, scenario, 1, "h", channel=Channel.WEB, created_at=now - timedelta(days=3))
    )
    named = await store.save(at_step(tenant, scenario, 1, "h", channel=Channel.SMS, step_name="other"))

    async def find(scope_filter: ScopeFilter) -> list[UUID]:
        return ids(await store.find_sessions_by_step_hash(tenant, scenario, 1, "h", scope_filter))

    def sort(*sessions: Session) -> list[UUID]:
        return sorted(s.session_id for s in sessions)

    assert await find(ScopeFilter(include_channels=[Channel.WEB])) == sort(web, old)
    assert await find(ScopeFilter(exclude_channels=[Channel.WEB])) == sort(sms, named)
    assert await find(ScopeFilter(include_step_names=["other"])) == sort(named)
    assert await find(ScopeFilter(exclude_step_names=["other"])) == sort(web, sms, old)
    assert await find(ScopeFilter(max_session_age_days=1)) == sort(web, sms, named)
    assert await find(ScopeFilter(min_session_age_days=2)) == sort(old)
    assert await find(ScopeFilter()) == sort(web, sms, old, named)
