"""Session (de)serialisation and ordering shared by every SessionStore backend.

Both backends push a session through the same JSON round trip on the way in and out, so they
validate the same way and return equal objects for equal input.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from focal.conversation.models import Session
from focal.errors import InvalidDataError
from focal.validation import MAX_JSON_DEPTH, check_storable, check_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(moment: datetime) -> int:
    """Exact integer microseconds since the epoch (also exact as a Redis sorted-set score)."""
    return (moment - _EPOCH) // _MICROSECOND


def check_session_storable(session: Session) -> None:
    """``check_storable`` for a session: same refusals, same messages, about a quarter of the cost.

    Every save runs it, and the generic walk (a field name formatted and six ``isinstance`` tests
    per value) cost more than encoding and decoding the session together. A quick walk first
    proves the common case, a session holding nothing ``check_storable`` could refuse; anything it
    is not sure about (a NaN, a non-ASCII string, a naive or year-1 timestamp, an unexpected type,
    deep nesting) goes to ``check_storable`` itself, which decides and words the error.
    """
    if not _plain_model(session, 0):
        check_storable(session, f"session {session.session_id}")


# Values ``check_storable`` accepts without looking inside (``bool`` is a subclass of ``int``
# but ``type()`` tells them apart, so both are listed).
_PLAIN_TYPES = frozenset({int, bool, type(None), UUID})
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")  # as ``focal.validation``


def _plain_text(text: str) -> bool:
    return "\x00" not in text if text.isascii() else _UNSTORABLE_CHARACTER.search(text) is None


def _plain_model(model: BaseModel, depth: int) -> bool:
    """True only if ``check_storable`` would accept ``model`` at this depth (nested models do not
    add a level, as there). Walks ``__dict__``, which holds every field set on the model (a
    field ``model_construct`` left out reads as ``None`` there, which passes anyway)."""
    for value in model.__dict__.values():
        kind = type(value)  # the commonest cases inline: this runs for every field of every save
        if kind in _PLAIN_TYPES or (kind is str and value.isascii() and "\x00" not in value):
            continue
        if not _plain(value, depth):
            return False
    return True


def _plain(value: Any, depth: int) -> bool:
    """True only if ``check_storable`` would accept ``value`` at this depth; the common types are
    tested first and exactly (``type() is``), anything unusual is left to ``check_storable``."""
    kind = type(value)
    if kind is str:
        return ("\x00" not in value) if value.isascii() else _plain_text(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind is dict:
        if depth >= MAX_JSON_DEPTH:
            return False
        return all(_plain(key, depth + 1) and _plain(item, depth + 1) for key, item in value.items())
    if kind is list:
        if depth >= MAX_JSON_DEPTH:
            return False
        return all(_plain(item, depth + 1) for item in value)
    if kind is float:
        return math.isfinite(value)
    if kind is datetime:
        # ``check_aware``: aware, and a UTC instant exists; offsets are under a day, so any year
        # but the first and the last has one.
        return value.utcoffset() is not None and 1 < value.year < 9999
    if isinstance(value, BaseModel):
        return _plain_model(value, depth)
    if isinstance(value, str):  # the StrEnum fields
        return _plain_text(value)
    return False  # tuples, sets, subclasses, anything else: ``check_storable`` decides


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
    check_session_storable(session)
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
