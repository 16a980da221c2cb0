"""Writing one turn: the session first (the version check decides who wins), then everything else.

Order matters. ``SessionStore.save`` is the only conditional write: it succeeds only when nobody
else saved the session since it was read. Doing it first means a turn that loses the race raises
``ConflictError`` before it has written anything, so the loser leaves no trace. The turn record,
the audit events and the two TURN episodes are then written concurrently; they are unconditional
appends with ids generated here.

Everything that can fail for reasons other than storage (the LLM, embedding the answer) happens
before this module is called, so a provider failure never leaves half a turn behind. A storage
failure after the session save can still leave the session one turn ahead of its audit trail; that
is logged with the turn id so an operator can see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.store import AuditStore
from focal.conversation.models import Session
from focal.conversation.stores.store import SessionStore
from focal.logging import get_logger
from focal.memory.models import Episode
from focal.memory.stores.store import MemoryStore


@dataclass(frozen=True)
class TurnWrites:
    """Everything a turn appends after its session save."""

    record: TurnRecord
    events: list[AuditEvent]
    episodes: list[Episode]


async def save_session_first(session_store: SessionStore, session: Session) -> Session:
    """The conditional write; ``ConflictError`` here means another turn won and nothing was written."""
    return await session_store.save(session)


async def append_turn(audit_store: AuditStore, memory_store: MemoryStore, writes: TurnWrites) -> None:
    """Append the turn record, its events and its episodes; re-raise the first failure, after all ran."""
    operations: list[Awaitable[Any]] = [audit_store.save_turn(writes.record)]
    operations += [audit_store.save_event(event) for event in writes.events]
    if writes.episodes:
        operations.append(memory_store.add_episodes(writes.episodes))
    # return_exceptions: no write is left running in the background when a sibling fails.
    outcomes = await asyncio.gather(*operations, return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        get_logger("focal.turn").error(
            "turn_append_failed",
            tenant_id=str(writes.record.tenant_id),
            session_id=str(writes.record.session_id),
            turn_id=str(writes.record.id),
            failed=len(failures),
            of=len(outcomes),
            error=repr(failures[0]),
        )
        raise failures[0]
