"""Writing one turn, in an order that never leaves half a turn behind when a write fails.

By the time this module runs, every record of the turn was built and passed the stores' checks
(``checks.py``), so a store refusing bad data cannot happen here. What remains are conflicts and
infrastructure failures, and the order of the writes decides what they leave behind:

1. **The session**, under its version check. ``ConcurrentTurnError`` (a ``ConflictError``) means
   another writer saved it since it was read (a concurrent turn won): nothing was written, and
   running the turn again (``ordering.py``, ``FOCAL_TURN__CONCURRENCY=enqueue``) is safe.
2. **The turn record**: the turn's place in the audit trail. If it cannot be written (the database
   is unreachable, say), the session save is undone: the session as it was before the turn is
   saved back, under the version check. The client's retry then gets the same turn number and
   the audit trail stays gap-free; the turn left no trace other than the session's version (and,
   for a first-time customer, their profile, which the retry would create anyway). If the undo
   fails too (both stores down, or another turn saved the session meanwhile) it is logged as
   ``turn_gap`` with the turn number: the session stays one turn ahead of its audit trail.
   If the record's number is already taken (``ConflictError``), an earlier write that reported a
   failure had in fact committed: the session, now at that number, agrees with the trail, so it
   is left as saved and the error is raised (409; the retry gets the next number).
3. **Events, episodes and profile fields** (values of variables marked ``persist_to_profile``),
   concurrently, and only after the record: no event or memory ever refers to a turn the audit
   trail lacks. The turn is recorded by now, so a failure here is not undone: it is logged
   (``turn_append_failed``, with the turn id) and raised, and the turn's events, memory or
   profile fields may be incomplete.

Tool calls made by the turn (``tool_loop.py``) happened before any of this: a turn that fails
here, or loses the session to a concurrent turn, has still made its calls; each is in the log
(``tool_call``), not in the audit trail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from focal.alignment.turn.models import StepTimer
from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.store import AuditStore
from focal.conversation.models import Session
from focal.conversation.stores.store import SessionStore
from focal.errors import ConcurrentTurnError, ConfigurationError, ConflictError
from focal.logging import get_logger
from focal.memory.models import Episode
from focal.memory.stores.store import MemoryStore
from focal.profile.models import ProfileField
from focal.profile.stores.store import ProfileStore

_log = get_logger("focal.turn")


@dataclass(frozen=True)
class TurnWrites:
    """Everything one turn writes: the session (the working copy) and what it appends."""

    session: Session
    record: TurnRecord
    events: list[AuditEvent]
    episodes: list[Episode]
    profile_fields: list[ProfileField] = field(default_factory=list)


@dataclass(frozen=True)
class TurnStores:
    session_store: SessionStore
    audit_store: AuditStore
    memory_store: MemoryStore
    profile_store: ProfileStore | None = None  # needed only by turns that write profile fields


async def persist_turn(
    stores: TurnStores,
    writes: TurnWrites,
    before: Session,
    timer: StepTimer,
    *,
    recorded: Callable[[], Awaitable[None]] | None = None,
) -> Session:
    """Write the turn (see the module docstring); ``before`` is the session as it was before the
    turn (for a new session: as it was opened), saved back if the turn record cannot be written.
    ``recorded`` runs once the session and the record are written, after the appends, whether
    they succeeded or not (the turn stands either way: its handoff must still be announced).
    Returns the saved session."""
    with timer.measure("save_session"):
        try:
            saved = await stores.session_store.save(writes.session)
        except ConflictError as exc:
            raise ConcurrentTurnError(str(exc)) from exc
    with timer.measure("save_record"):
        try:
            await stores.audit_store.save_turn(writes.record)
        except ConflictError:
            raise
        except Exception as exc:
            await _undo_session_save(stores.session_store, before, saved, writes.record, exc)
            raise
    with timer.measure("append_records"):
        try:
            await _append(stores, writes)
        finally:
            if recorded is not None:
                await recorded()
    return saved


async def _undo_session_save(
    session_store: SessionStore, before: Session, saved: Session, record: TurnRecord, error: Exception
) -> None:
    context = {
        "tenant_id": str(record.tenant_id),
        "session_id": str(record.session_id),
        "turn_id": str(record.id),
        "turn_number": record.turn_number,
        "error": repr(error),
    }
    try:
        await session_store.save(before.model_copy(update={"version": saved.version}))
    except Exception as undo_error:
        _log.error("turn_gap", undo_error=repr(undo_error), **context)
        return
    _log.warning("turn_undone", **context)


async def _append(stores: TurnStores, writes: TurnWrites) -> None:
    """The turn's events and episodes; re-raise the first failure, after all of them ran."""
    operations: list[Awaitable[Any]] = [stores.audit_store.save_event(event) for event in writes.events]
    if writes.episodes:
        operations.append(stores.memory_store.add_episodes(writes.episodes))
    if writes.profile_fields:
        if stores.profile_store is None:
            raise ConfigurationError(
                "profile fields to write but no profile store: pass TurnStores(profile_store=...)"
            )
        for profile_field in writes.profile_fields:
            operations.append(
                stores.profile_store.update_field(
                    profile_field.tenant_id, profile_field.profile_id, profile_field
                )
            )
    # return_exceptions: no write is left running in the background when a sibling fails.
    outcomes = await asyncio.gather(*operations, return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        _log.error(
            "turn_append_failed",
            tenant_id=str(writes.record.tenant_id),
            session_id=str(writes.record.session_id),
            turn_id=str(writes.record.id),
            failed=len(failures),
            of=len(outcomes),
            error=repr(failures[0]),
        )
        raise failures[0]
