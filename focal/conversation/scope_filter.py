"""Matching sessions against a migration plan's ``ScopeFilter`` (shared by every backend)."""

from __future__ import annotations

from datetime import datetime, timedelta

from focal.alignment.models import ScopeFilter
from focal.conversation.models import Session


def current_step_name(session: Session) -> str | None:
    """The name of the step the session is in, from its latest visit of that step."""
    for visit in reversed(session.step_history):
        if visit.step_id == session.current_step_id:
            return visit.step_name
    return None


def session_matches_scope_filter(session: Session, scope_filter: ScopeFilter | None, now: datetime) -> bool:
    """True when the session is inside the filter. Empty include lists admit everything."""
    if scope_filter is None:
        return True
    if scope_filter.include_channels and session.channel not in scope_filter.include_channels:
        return False
    if session.channel in scope_filter.exclude_channels:
        return False
    step_name = current_step_name(session)
    if scope_filter.include_step_names and step_name not in scope_filter.include_step_names:
        return False
    if step_name is not None and step_name in scope_filter.exclude_step_names:
        return False
    age = now - session.created_at
    if scope_filter.max_session_age_days is not None and age > timedelta(
        days=scope_filter.max_session_age_days
    ):
        return False
    return not (
        scope_filter.min_session_age_days is not None
        and age < timedelta(days=scope_filter.min_session_age_days)
    )
