"""Session (de)serialisation and ordering shared by every SessionStore backend.

Both backends push a session through the same JSON round trip on the way in and out, so they
validate the same way and return equal objects for equal input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from focal.conversation.models import Session
from focal.errors import InvalidDataError
from focal.validation import check_storable, check_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_micros(moment: datetime) -> int:
    """Exact integer microseconds since the epoch (also exact as a Redis sorted-set score)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def serialize_session(session: Session) -> str:
    """The session as JSON; a value that cannot be JSON-encoded is an ``InvalidDataError``."""
    try:
        return session.model_dump_json()
    except (PydanticSerializationError, AttributeError, TypeError, ValueError) as exc:
        raise InvalidDataError(f"session {session.session_id} cannot be serialised: {exc}") from exc


def parse_session(payload: str | bytes) -> Session:
    """A session from JSON, fully validated; invalid content is an ``InvalidDataError``."""
    try:
        return Session.model_validate_json(payload)
    except ValidationError as exc:
        raise InvalidDataError(f"invalid session: {exc}") from exc


def normalized_copy(session: Session) -> Session:
    """A deep, validated copy of ``session`` as any backend would store it."""
    return parse_session(serialize_session(session))


def checked_for_save(session: Session) -> Session:
    """The validated copy a backend stores; refuses what later reads could not compute with.

    Every value must survive JSON as it is (``check_storable``: no NaN, which pydantic would turn
    into ``null``, no lone surrogate, keys included, no NUL). ``created_at`` must be
    timezone-aware: session age (scope filters, Redis max age) is computed against aware UTC time,
    and a naive value would fail there, long after the write.
    """
    check_storable(session, f"session {session.session_id}")
    return require_aware_created_at(normalized_copy(session))


def check_lookup_text(value: str, what: str) -> None:
    """A text a lookup compares: what no session can hold is refused like a stored value would be
    (the Redis backend would otherwise fail to encode it into a key)."""
    check_text(value, what)


def require_aware_created_at(session: Session) -> Session:
    if session.created_at.tzinfo is None:
        raise InvalidDataError(f"session {session.session_id}: created_at must be timezone-aware")
    return session


def next_last_activity(session: Session, now: datetime) -> datetime:
    """``last_activity_at`` for a save of ``session`` happening at ``now`` (this process's clock).

    Never earlier than the activity of the version being replaced: when that one is at or after
    ``now`` (it was saved by a process whose clock runs ahead of ours), the new value is one
    microsecond after it. Last activity then grows with every version of a session, so the lists
    ordered by it agree with the order of the saves, whatever the writers' clocks.
    """
    previous = session.last_activity_at
    if (
        isinstance(session.version, int)
        and session.version > 0
        and isinstance(previous, datetime)
        and previous.tzinfo is not None
        and previous >= now
    ):
        return previous + timedelta(microseconds=1)
    return now


def activity_order_key(session: Session) -> tuple[int, UUID]:
    """Sort key for ``last_activity_at`` descending, then ``session_id`` ascending."""
    return (-epoch_micros(session.last_activity_at), session.session_id)


def is_at_step(session: Session, scenario_id: UUID, scenario_version: int, step_content_hash: str) -> bool:
    """True when the session currently sits in that step of that scenario version."""
    return (
        session.active_scenario_id == scenario_id
        and session.active_scenario_version == scenario_version
        and session.current_step_hash() == step_content_hash
    )
