"""The manual-mode path of a turn: a customer message in a MANUAL session is recorded, not answered.

A session handed to a person (``handoff.py``, or ``PATCH /v1/sessions/{id}``) keeps taking the
customer's messages through the chat endpoint. Each becomes a turn of its own (the next turn
number, in the audit trail, in later LLM history) with an empty ``assistant_response`` and
``context_extracted.mode = "MANUAL"``; no rule is retrieved, no scenario moves, no LLM is called
(the message's embedding, computed with the session read, is kept for its memory episode). An
operator answers with ``POST /v1/sessions/{id}/messages`` (``control.py``).

The writes are the normal turn's, checked and persisted the normal way (``checks.py``, then
``persist.py``: the session first, under its version, so a concurrent writer makes this a 409
that leaves no trace). Like any turn it writes nothing when refused. The result says
``answered=False``: the chat endpoint answers 202 Accepted with the turn id, a stream would end
without text; nothing here depends on which.
"""

from __future__ import annotations

import time
from uuid import UUID, uuid4

from focal.alignment.turn.checks import TurnChecks
from focal.alignment.turn.models import StepTimer, TurnRequest, TurnResult
from focal.alignment.turn.persist import TurnStores, TurnWrites, persist_turn
from focal.alignment.turn.records import TurnDraft, refused_as_invalid_data
from focal.audit.models import AuditEvent, TokenCounts
from focal.conversation.models import Session, SessionMode, SessionStatus
from focal.profile.stores.store import ProfileStore

__all__ = ["MANUAL_MESSAGE_EVENT", "record_manual_turn"]

MANUAL_MESSAGE_EVENT = "manual_message_received"


def _writes(
    draft: TurnDraft, session: Session, profile_id: UUID, timer: StepTimer, started: float
) -> TurnWrites:
    session.customer_profile_id = profile_id
    latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
    record = draft.record(
        "",
        context={
            "mode": SessionMode.MANUAL.value,
            "source": "customer",
            "customer_profile_id": str(profile_id),
            "timings_ms": timer.snapshot(),
        },
        latency_ms=latency_ms,
    )
    with refused_as_invalid_data("an audit event"):
        event = AuditEvent(
            tenant_id=draft.tenant_id,
            session_id=draft.session_id,
            turn_id=draft.turn_id,
            event_type=MANUAL_MESSAGE_EVENT,
            event_data={"turn_number": draft.turn_number},
        )
    episode = draft.episode(draft.message, draft.message_embedding, "customer", profile_id)
    return TurnWrites(session=session, record=record, events=[event], episodes=[episode])


async def record_manual_turn(
    *,
    stores: TurnStores,
    profiles: ProfileStore,
    checks: TurnChecks,
    request: TurnRequest,
    draft: TurnDraft,
    before: Session,
    session: Session,
    timer: StepTimer,
    started: float,
) -> TurnResult:
    """Record the customer's message as turn ``draft.turn_number`` of the MANUAL ``session`` (the
    turn's working copy of ``before``); see the module docstring."""
    session.turn_count = draft.turn_number
    session.status = SessionStatus.ACTIVE
    profile_id = session.customer_profile_id
    writes = _writes(draft, session, profile_id or uuid4(), timer, started)
    with timer.measure("check_records"):
        checks.writes(writes)
    if profile_id is None:  # a session set to MANUAL before its customer had a profile
        profile = await profiles.get_or_create(request.tenant_id, request.channel, request.user_channel_id)
        writes = _writes(draft, session, profile.id, timer, started)
    saved = await persist_turn(stores, writes, before, timer)
    return TurnResult(
        session_id=saved.session_id,
        turn_id=draft.turn_id,
        turn_number=draft.turn_number,
        response="",
        matched_rules=[],
        scenario=None,
        template_id=None,
        usage=TokenCounts(),
        latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
        timings_ms=timer.snapshot(),
        new_session=False,
        session_mode=SessionMode.MANUAL,
        answered=False,
    )
