"""Input checks every AuditStore backend runs before it touches storage (same error everywhere)."""

from __future__ import annotations

from datetime import datetime

from focal.audit.models import AuditEvent, TurnRecord
from focal.errors import InvalidDataError
from focal.validation import check_aware, check_finite, check_int4, check_storable, check_text

__all__ = ["check_event", "check_event_filter", "check_turn", "check_window"]


def check_turn(turn: TurnRecord) -> None:
    check_aware(turn.created_at, "TurnRecord.created_at")
    check_int4(turn.turn_number, "TurnRecord.turn_number")
    check_finite(turn.latency_ms, "TurnRecord.latency_ms")
    for rule in turn.rules_matched:
        check_finite(rule.score, "TurnRecord.rules_matched[].score")
    check_storable(turn, "TurnRecord")


def check_event(event: AuditEvent) -> None:
    check_aware(event.created_at, "AuditEvent.created_at")
    check_storable(event, "AuditEvent")


def check_event_filter(event_type: str | None) -> None:
    """``list_events``'s ``event_type``: text PostgreSQL can compare (no NUL, no lone surrogate)."""
    check_text(event_type, "event_type")


def check_window(since: datetime | None, until: datetime | None) -> None:
    """``since <= created_at < until``: both aware, and ``since`` not after ``until``."""
    check_aware(since, "since")
    check_aware(until, "until")
    if since is not None and until is not None and since > until:
        raise InvalidDataError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
