"""Human handoff at the end of a turn: a matched rule with ``requests_handoff`` hands the session
to a person.

The turn answers as usual (its EXCLUSIVE template, or the LLM); then, before anything is written:

- ``handoff_rules`` picks the matched rules that request it (none: nothing below happens);
- the session's mode becomes ``MANUAL`` (saved with the turn, under its version: a turn that loses
  the version race hands nothing over);
- the turn gets a ``handoff_requested`` audit event naming the rules (``with_handoff_event``).

After the turn is persisted (its session and record: a failure of the later appends does not
stop it, since the session is MANUAL anyway), ``notify_handoff`` emits the
``session.handoff_requested`` event to the ``EventSink`` (the webhook dispatcher): it writes the
deliveries and returns; the sending
happens in the background. A failure there is logged and never fails or undoes the turn, which
is already recorded. None of this depends on how the answer reaches the customer (a JSON body or
a stream): it runs on the records, before and after persistence.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol
from uuid import UUID

from focal.alignment.models import Rule
from focal.alignment.turn.persist import TurnWrites
from focal.alignment.turn.retrieval import RuleMatch
from focal.audit.models import AuditEvent
from focal.conversation.models import Session, SessionMode
from focal.logging import get_logger
from focal.models import JsonDict

__all__ = [
    "HANDOFF_AUDIT_EVENT",
    "HANDOFF_WEBHOOK_EVENT",
    "EventSink",
    "handoff_rules",
    "notify_handoff",
    "with_handoff_event",
]

HANDOFF_AUDIT_EVENT = "handoff_requested"
HANDOFF_WEBHOOK_EVENT = "session.handoff_requested"

_log = get_logger("focal.turn")


class EventSink(Protocol):
    """Where events for the outside world go (``focal.webhooks.dispatcher.WebhookDispatcher``)."""

    async def emit(
        self, tenant_id: UUID, event_type: str, data: JsonDict, *, session_id: UUID | None = None
    ) -> Any: ...


def handoff_rules(matches: list[RuleMatch]) -> list[Rule]:
    """The matched rules that request a handoff, in match order."""
    return [match.rule for match in matches if match.rule.requests_handoff]


def hand_over(session: Session, rules: list[Rule]) -> None:
    """Switch the turn's working copy of the session to MANUAL when a rule asks for it."""
    if rules:
        session.mode = SessionMode.MANUAL


def with_handoff_event(writes: TurnWrites, rules: list[Rule]) -> TurnWrites:
    """``writes`` plus the ``handoff_requested`` audit event of the turn (unchanged without rules)."""
    if not rules:
        return writes
    record = writes.record
    event = AuditEvent(
        tenant_id=record.tenant_id,
        session_id=record.session_id,
        turn_id=record.id,
        event_type=HANDOFF_AUDIT_EVENT,
        event_data={
            "turn_number": record.turn_number,
            "rules": [{"rule_id": str(rule.id), "name": rule.name} for rule in rules],
        },
    )
    return replace(writes, events=[*writes.events, event])


def handoff_data(writes: TurnWrites, rules: list[Rule]) -> JsonDict:
    """The ``data`` of the ``session.handoff_requested`` event."""
    session, record = writes.session, writes.record
    return {
        "session_id": str(session.session_id),
        "agent_id": str(session.agent_id),
        "channel": session.channel.value,
        "user_channel_id": session.user_channel_id,
        "customer_profile_id": str(session.customer_profile_id) if session.customer_profile_id else None,
        "turn_id": str(record.id),
        "turn_number": record.turn_number,
        "message": record.user_message,
        "response": record.assistant_response,
        "rules": [{"rule_id": str(rule.id), "name": rule.name} for rule in rules],
    }


async def notify_handoff(sink: EventSink | None, writes: TurnWrites, rules: list[Rule]) -> None:
    """Emit ``session.handoff_requested`` for a persisted turn; logs instead of raising."""
    if sink is None or not rules:
        return
    record = writes.record
    try:
        await sink.emit(
            record.tenant_id, HANDOFF_WEBHOOK_EVENT, handoff_data(writes, rules), session_id=record.session_id
        )
    except Exception as exc:  # the turn is recorded; its handoff_requested audit event remains
        _log.error(
            "handoff event not emitted",
            tenant_id=str(record.tenant_id),
            session_id=str(record.session_id),
            turn_id=str(record.id),
            error=repr(exc),
        )
