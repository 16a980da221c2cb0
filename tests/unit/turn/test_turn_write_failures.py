"""Infrastructure failures while a turn writes: what each leaves behind, and that a retry follows on.

The stores below fail on purpose at one write (what an unreachable database does); everything
else is the in-memory reference behaviour. See ``focal/alignment/turn/persist.py`` for the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from structlog.testing import capture_logs

from focal.alignment.models import Agent
from focal.alignment.turn import TurnEngine
from focal.alignment.turn.control import SessionControl
from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.inmemory import InMemoryAuditStore
from focal.conversation.models import Session, SessionMode
from focal.conversation.stores.inmemory import InMemorySessionStore
from focal.errors import ConflictError, StoreConnectionError
from focal.memory.models import Episode
from focal.memory.stores.inmemory import InMemoryMemoryStore
from tests.unit.turn.support import DIMENSIONS, RecordingLLM, TurnStack


class FailingAuditStore(InMemoryAuditStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next_turn = False
        self.fail_next_event = False

    async def save_event(self, event: AuditEvent) -> UUID:
        if self.fail_next_event:
            self.fail_next_event = False
            raise StoreConnectionError("audit database unreachable")
        return await super().save_event(event)

    async def save_turn(self, turn: TurnRecord) -> UUID:
        if self.fail_next_turn:
            self.fail_next_turn = False
            raise StoreConnectionError("audit database unreachable")
        return await super().save_turn(turn)


class FailingMemoryStore(InMemoryMemoryStore):
    def __init__(self) -> None:
        super().__init__(embedding_dimensions=DIMENSIONS)
        self.fail_next_batch = False

    async def add_episodes(self, episodes: Sequence[Episode]) -> list[UUID]:
        if self.fail_next_batch:
            self.fail_next_batch = False
            raise StoreConnectionError("memory database unreachable")
        return await super().add_episodes(episodes)


class FailingSessionStore(InMemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.saves_before_failure: int | None = None  # None: never fail

    async def save(self, session: Session) -> Session:
        if self.saves_before_failure is not None:
            if self.saves_before_failure == 0:
                raise StoreConnectionError("redis unreachable")
            self.saves_before_failure -= 1
        return await super().save(session)


@pytest.fixture
def failing() -> TurnStack:
    return TurnStack(
        llm=RecordingLLM(),
        audit_store=FailingAuditStore(),
        memory_store=FailingMemoryStore(),
        session_store=FailingSessionStore(),
    )


def _audit(stack: TurnStack) -> FailingAuditStore:
    assert isinstance(stack.audit_store, FailingAuditStore)
    return stack.audit_store


def _state_but_versions(state: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The stored state with the session's version and activity time left out."""
    sessions = [
        {k: v for k, v in s.items() if k not in {"version", "last_activity_at"}} for s in state["sessions"]
    ]
    return {**state, "sessions": sessions}


async def _agent(stack: TurnStack, tenant: UUID) -> Agent:
    agent = await stack.agent(tenant)
    await stack.rule(agent, "refund please", "Explain the refund policy.")
    return agent


async def _numbers(stack: TurnStack, agent: Agent, session_id: UUID) -> list[int]:
    return [r.turn_number for r in await stack.audit_store.list_turns_by_session(agent.tenant_id, session_id)]


async def test_an_unwritable_turn_record_undoes_the_session_save(failing: TurnStack, tenant: UUID):
    agent = await _agent(failing, tenant)
    first = await failing.turn(agent, "refund please")
    before = await failing.stored_state(agent, ["alice"])

    _audit(failing).fail_next_turn = True
    with capture_logs() as logs, pytest.raises(StoreConnectionError):
        await failing.turn(agent, "refund please", session_id=first.session_id)

    # The session is back as it was (fires, turn count): only its version moved on.
    assert _state_but_versions(await failing.stored_state(agent, ["alice"])) == _state_but_versions(before)
    assert [entry["event"] for entry in logs if entry["log_level"] != "info"] == ["turn_undone"]
    retry = await failing.turn(agent, "refund please", session_id=first.session_id)
    assert retry.turn_number == 2 and await _numbers(failing, agent, first.session_id) == [1, 2]
    session = await failing.session_store.get(tenant, first.session_id)
    assert session is not None and session.rule_fires == {str(retry.matched_rules[0].rule_id): 2}


async def test_a_first_turn_that_cannot_be_recorded_leaves_an_empty_session_the_retry_continues(
    failing: TurnStack, tenant: UUID
):
    agent = await _agent(failing, tenant)
    _audit(failing).fail_next_turn = True
    with pytest.raises(StoreConnectionError):
        await failing.turn(agent, "refund please")

    (opened,) = await failing.session_store.list_by_agent(tenant, agent.id)
    assert (opened.turn_count, opened.rule_fires, opened.customer_profile_id) == (0, {}, None)
    assert await failing.audit_store.list_events(tenant) == []
    retry = await failing.turn(agent, "refund please")
    assert (retry.session_id, retry.turn_number) == (opened.session_id, 1)
    assert await _numbers(failing, agent, retry.session_id) == [1]


async def test_a_turn_number_already_recorded_is_not_undone_and_the_next_turn_follows(
    failing: TurnStack, tenant: UUID
):
    """An earlier record write that reported a failure but committed: the session catches up."""
    agent = await _agent(failing, tenant)
    first = await failing.turn(agent, "refund please")
    ghost = TurnRecord(
        tenant_id=tenant,
        agent_id=agent.id,
        session_id=first.session_id,
        turn_number=2,
        user_message="refund please",
        assistant_response="committed, though the writer was told otherwise",
    )
    await failing.audit_store.save_turn(ghost)

    with pytest.raises(ConflictError):
        await failing.turn(agent, "refund please", session_id=first.session_id)
    session = await failing.session_store.get(tenant, first.session_id)
    assert session is not None and session.turn_count == 2  # agrees with the trail: no wedge

    nxt = await failing.turn(agent, "refund please", session_id=first.session_id)
    assert nxt.turn_number == 3 and await _numbers(failing, agent, first.session_id) == [1, 2, 3]


async def test_memory_failing_after_the_record_keeps_the_turn_and_the_trail_gap_free(
    failing: TurnStack, tenant: UUID
):
    agent = await _agent(failing, tenant)
    first = await failing.turn(agent, "refund please")
    assert isinstance(failing.memory_store, FailingMemoryStore)
    failing.memory_store.fail_next_batch = True

    with capture_logs() as logs, pytest.raises(StoreConnectionError):
        await failing.turn(agent, "refund please", session_id=first.session_id)

    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["turn_append_failed"]
    assert await _numbers(failing, agent, first.session_id) == [1, 2]  # the turn is recorded
    events = await failing.audit_store.list_events(tenant, session_id=first.session_id)
    records = await failing.audit_store.list_turns_by_session(tenant, first.session_id)
    assert {e.turn_id for e in events} == {r.id for r in records}
    nxt = await failing.turn(agent, "refund please", session_id=first.session_id)
    assert nxt.turn_number == 3 and await _numbers(failing, agent, first.session_id) == [1, 2, 3]


async def test_record_and_undo_both_failing_is_logged_as_a_gap(failing: TurnStack, tenant: UUID):
    agent = await _agent(failing, tenant)
    first = await failing.turn(agent, "refund please")
    assert isinstance(failing.session_store, FailingSessionStore)
    failing.session_store.saves_before_failure = 1  # the turn's save works, the undo does not
    _audit(failing).fail_next_turn = True

    with capture_logs() as logs, pytest.raises(StoreConnectionError, match="audit"):
        await failing.turn(agent, "refund please", session_id=first.session_id)

    gaps = [entry for entry in logs if entry["event"] == "turn_gap"]
    assert len(gaps) == 1 and gaps[0]["turn_number"] == 2 and gaps[0]["session_id"] == str(first.session_id)
    assert await failing.audit_store.list_events(tenant, session_id=first.session_id) == [
        e for e in await failing.audit_store.list_events(tenant) if e.turn_id == first.turn_id
    ]


class RecordingSink:
    """An ``EventSink`` that keeps what it was given (the webhook dispatcher's place)."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    async def emit(
        self, tenant_id: UUID, event_type: str, data: dict[str, Any], *, session_id: UUID | None = None
    ) -> list[Any]:
        self.emitted.append((event_type, data))
        return []


async def test_a_recorded_handoff_turn_emits_its_webhook_even_when_its_memory_fails(
    failing: TurnStack, tenant: UUID
):
    """The turn is recorded and its session is MANUAL, so a person must hear of it: a failure of
    the writes after the record (memory here) must not swallow the handoff event too."""
    agent = await failing.agent(tenant)
    await failing.rule(agent, "talk to a human", "A colleague takes over.", requests_handoff=True)
    sink = RecordingSink()
    engine = TurnEngine(
        config_store=failing.config_store,
        session_store=failing.session_store,
        memory_store=failing.memory_store,
        audit_store=failing.audit_store,
        profile_store=failing.profile_store,
        llm_provider=failing.llm,
        embedding_provider=failing.embedder,
        event_sink=sink,
    )
    assert isinstance(failing.memory_store, FailingMemoryStore)
    failing.memory_store.fail_next_batch = True

    with pytest.raises(StoreConnectionError):
        await failing.turn(agent, "talk to a human", engine=engine)

    (session,) = await failing.session_store.list_by_agent(tenant, agent.id)
    (record,) = await failing.audit_store.list_turns_by_session(tenant, session.session_id)
    assert session.mode is SessionMode.MANUAL  # handed over, and recorded
    assert [(kind, data["turn_id"]) for kind, data in sink.emitted] == [
        ("session.handoff_requested", str(record.id))
    ]


@pytest.mark.parametrize("change", ["variables", "mode", "close"])
async def test_an_operator_change_whose_event_cannot_be_written_stands_and_is_logged(
    failing: TurnStack, tenant: UUID, change: str
):
    """The session is saved first; when its audit event then fails, the change stands (a retry
    under the old version would be a 409), the error is raised and the missing event is logged."""
    agent = await _agent(failing, tenant)
    first = await failing.turn(agent, "refund please")
    control = SessionControl(
        session_store=failing.session_store,
        audit_store=failing.audit_store,
        memory_store=failing.memory_store,
        embedder=failing.embedder,
    )
    session = await control.get(tenant, first.session_id)
    events_before = await failing.audit_store.list_events(tenant, session_id=first.session_id)
    act = {
        "variables": lambda: control.set_variables(session, session.version, {"order": "FD-1"}),
        "mode": lambda: control.set_mode(session, SessionMode.MANUAL),
        "close": lambda: control.close(session),
    }[change]

    _audit(failing).fail_next_event = True
    with capture_logs() as logs, pytest.raises(StoreConnectionError):
        await act()

    stored = await control.get(tenant, first.session_id)
    assert stored.version == session.version + 1
    assert await failing.audit_store.list_events(tenant, session_id=first.session_id) == events_before
    (logged,) = [entry for entry in logs if entry["event"] == "session_event_failed"]
    expected = {"variables": "variables_updated", "mode": "session_mode_changed", "close": "session_closed"}
    assert (logged["event_type"], logged["session_id"]) == (expected[change], str(first.session_id))
