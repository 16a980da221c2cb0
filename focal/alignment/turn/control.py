"""Session control by people: operator replies, the session's mode, closing it.

- ``post_operator_message``: an operator's reply becomes the session's next turn, with an empty
  ``user_message``, the text as ``assistant_response`` and ``context_extracted.source =
  "human_agent"`` (plus the optional ``author``). It is in the audit trail like any turn, in the
  LLM history of later turns (``engine.py`` builds it from the trail), and in memory as an agent
  episode (metadata ``source: human_agent``). Allowed in either mode (an operator may step into
  an AUTO conversation without taking it over); refused on a CLOSED session (409). Written
  exactly like a turn: every record checked first (``checks.py``), then the session under its
  version, the record, the event and the episode (``persist.py``). A concurrent turn that saved
  first makes it re-read and take the next number (bounded), never a 409 for the operator.
- ``set_mode`` and ``close``: the session saved under the version the caller read
  (``StaleRevisionError`` when it changed since: the API turns that into If-Match's 412, or
  re-reads and retries without If-Match), then a ``session_mode_changed`` / ``session_closed``
  audit event. Setting the mode a session already has, or closing a closed session, writes
  nothing. A CLOSED session's mode cannot change (409); a later chat naming it is a 409 too
  (``engine.py``), and a chat without ``session_id`` opens a new session.
- ``set_variables``: an operator's edit of the session's variables under the version they were
  read at (``StaleRevisionError``, a 409, when a turn or another edit saved since), then a
  ``variables_updated`` event naming the variables (never their values).

Every change is checked whole before its first write. When the session is saved but its audit
event then fails, the error is logged (``session_event_failed``, naming the event) and raised:
the change stands, its event is missing, as ``persist.py`` reports for turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from focal.alignment.turn.checks import TurnChecks
from focal.alignment.turn.models import MAX_MESSAGE_CHARS, StepTimer
from focal.alignment.turn.persist import TurnStores, TurnWrites, persist_turn
from focal.alignment.turn.records import TurnDraft, refused_as_invalid_data
from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.checks import check_event
from focal.audit.stores.store import AuditStore
from focal.conversation.models import Session, SessionMode, SessionStatus
from focal.conversation.stores.session_codec import checked_for_save
from focal.conversation.stores.store import SessionStore
from focal.errors import (
    ConcurrentTurnError,
    ConflictError,
    InvalidDataError,
    NotFoundError,
    StaleRevisionError,
)
from focal.logging import get_logger
from focal.memory.stores.store import MemoryStore
from focal.models import utc_now
from focal.providers.embedding.base import EmbeddingProvider
from focal.validation import check_text

__all__ = [
    "CLOSED_EVENT",
    "HUMAN_AGENT_MESSAGE_EVENT",
    "MODE_CHANGED_EVENT",
    "VARIABLES_UPDATED_EVENT",
    "OperatorReply",
    "SessionControl",
]

HUMAN_AGENT_MESSAGE_EVENT = "human_agent_message"
MODE_CHANGED_EVENT = "session_mode_changed"
CLOSED_EVENT = "session_closed"
VARIABLES_UPDATED_EVENT = "variables_updated"
MAX_REPLY_ATTEMPTS = 10  # an operator reply re-reads this often while turns keep saving first

_log = get_logger("focal.turn")


@dataclass(frozen=True)
class OperatorReply:
    session: Session  # as saved
    record: TurnRecord


class SessionControl:
    """Operator actions on sessions; holds no per-session state."""

    def __init__(
        self,
        *,
        session_store: SessionStore,
        audit_store: AuditStore,
        memory_store: MemoryStore,
        embedder: EmbeddingProvider,
    ) -> None:
        self._sessions = session_store
        self._audit = audit_store
        self._stores = TurnStores(session_store, audit_store, memory_store)
        self._embedder = embedder
        self._checks = TurnChecks(memory_dimensions=memory_store.embedding_dimensions)

    async def get(self, tenant_id: UUID, session_id: UUID) -> Session:
        session = await self._sessions.get(tenant_id, session_id)
        if session is None:
            raise NotFoundError(f"session {session_id} not found")
        return session

    # --- operator replies ---------------------------------------------------------------------

    async def post_operator_message(
        self, tenant_id: UUID, session_id: UUID, text: str, *, author: str | None = None
    ) -> OperatorReply:
        text = text.strip()
        if not text:
            raise InvalidDataError("text is empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise InvalidDataError(f"text is longer than {MAX_MESSAGE_CHARS} characters")
        check_text(text, "text")  # named as the caller sent it, not as the turn record stores it
        before = await self.get(tenant_id, session_id)
        _refuse_closed(before)
        (embedding,) = await self._embedder.embed_batch([text])
        for _ in range(MAX_REPLY_ATTEMPTS):
            writes = self._reply_writes(before, text, author, embedding)
            self._checks.writes(writes)
            try:
                saved = await persist_turn(self._stores, writes, before, StepTimer())
            except ConcurrentTurnError:
                before = await self.get(tenant_id, session_id)  # a turn saved first: renumber
                _refuse_closed(before)
                continue
            return OperatorReply(session=saved, record=writes.record)
        raise ConflictError(
            f"session {session_id} was saved by other writers during each of {MAX_REPLY_ATTEMPTS} attempts"
        )

    def _reply_writes(
        self, before: Session, text: str, author: str | None, embedding: list[float]
    ) -> TurnWrites:
        session = Session.model_validate_json(before.model_dump_json())
        session.turn_count = before.turn_count + 1
        draft = TurnDraft(
            tenant_id=before.tenant_id,
            agent_id=before.agent_id,
            session_id=before.session_id,
            turn_id=uuid4(),
            turn_number=session.turn_count,
            message="",
            message_embedding=[],
            embedding_model=self._embedder.model_id,
        )
        who: dict[str, Any] = {"source": "human_agent", "author": author, "mode": before.mode.value}
        record = draft.record(text, context=dict(who))
        with refused_as_invalid_data("an audit event"):
            event = AuditEvent(
                tenant_id=before.tenant_id,
                session_id=before.session_id,
                turn_id=draft.turn_id,
                event_type=HUMAN_AGENT_MESSAGE_EVENT,
                event_data={"turn_number": draft.turn_number, "author": author},
            )
        episode = draft.episode(text, embedding, "agent", before.customer_profile_id)
        episode = episode.model_copy(update={"metadata": {**episode.metadata, "source": "human_agent"}})
        return TurnWrites(session=session, record=record, events=[event], episodes=[episode])

    # --- mode and status ----------------------------------------------------------------------

    async def set_mode(self, session: Session, mode: SessionMode) -> Session:
        """``session`` (as read) in ``mode``; see the module docstring."""
        _refuse_closed(session)
        if session.mode is mode:
            return session
        return await self._change(
            session, {"mode": mode}, MODE_CHANGED_EVENT, {"from": session.mode.value, "to": mode.value}
        )

    async def close(self, session: Session) -> Session:
        if session.status is SessionStatus.CLOSED:
            return session
        return await self._change(
            session, {"status": SessionStatus.CLOSED}, CLOSED_EVENT, {"mode": session.mode.value}
        )

    # --- variables ----------------------------------------------------------------------------

    async def set_variables(self, session: Session, version: int, values: Mapping[str, Any]) -> Session:
        """``session`` (as read) with ``values`` set (``None`` removes one), saved only if the
        stored session is still at ``version``."""
        now = utc_now()
        variables, set_at = dict(session.variables), dict(session.variables_set_at)
        for name, value in values.items():
            if value is None:
                variables.pop(name, None)
                set_at.pop(name, None)
            else:
                variables[name] = value
                set_at[name] = now
        updated = session.model_copy(
            update={"variables": variables, "variables_set_at": set_at, "version": version}
        )
        data = {"names": sorted(values), "source": "operator"}
        return await self._write(updated, _event(session, VARIABLES_UPDATED_EVENT, data))

    async def _change(
        self, session: Session, change: dict[str, Any], event_type: str, data: dict[str, Any]
    ) -> Session:
        event = _event(session, event_type, {"version": session.version + 1, **data})
        return await self._write(session.model_copy(update=change), event)

    async def _write(self, updated: Session, event: AuditEvent) -> Session:
        """The session under its version check, then its event; see the module docstring."""
        checked_for_save(updated)  # every check before the first write
        check_event(event)
        try:
            saved = await self._sessions.save(updated)
        except ConflictError as exc:
            raise StaleRevisionError(str(exc)) from exc
        try:
            await self._audit.save_event(event)
        except Exception as exc:  # the session changed; say which event is missing, as persist.py does
            _log.error(
                "session_event_failed",
                tenant_id=str(updated.tenant_id),
                session_id=str(updated.session_id),
                event_type=event.event_type,
                error=repr(exc),
            )
            raise
        return saved


def _event(session: Session, event_type: str, data: dict[str, Any]) -> AuditEvent:
    with refused_as_invalid_data("an audit event"):
        return AuditEvent(
            tenant_id=session.tenant_id,
            session_id=session.session_id,
            event_type=event_type,
            event_data=data,
        )


def _refuse_closed(session: Session) -> None:
    if session.status is SessionStatus.CLOSED:
        raise ConflictError(f"session {session.session_id} is closed")
