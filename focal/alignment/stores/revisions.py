"""Revisions (optimistic concurrency) shared by the ConfigStore backends: argument checks and the
errors that explain a refused write the same way everywhere. Semantics: ``config_store``."""

from __future__ import annotations

from typing import Any

from focal.errors import ConflictError, InvalidDataError, NotFoundError, StaleRevisionError
from focal.validation import check_int4

__all__ = ["checked_expected_revision", "lower_version", "missing_row", "stale_revision"]


def checked_expected_revision(expected_revision: int | None) -> int | None:
    """None, or a revision a row can have (an int >= 1 that fits an ``integer`` column)."""
    if expected_revision is None:
        return None
    if not isinstance(expected_revision, int) or isinstance(expected_revision, bool):
        raise InvalidDataError(f"expected_revision must be an integer, got {expected_revision!r}")
    check_int4(expected_revision, "expected_revision")
    if expected_revision < 1:
        raise InvalidDataError(f"expected_revision must be >= 1, got {expected_revision}")
    return expected_revision


def missing_row(kind: str, row_id: Any) -> NotFoundError:
    """A conditional update of a row that is not live in the caller's tenant."""
    return NotFoundError(f"{kind} {row_id} not found")


def stale_revision(kind: str, row_id: Any, stored: int, expected: int) -> StaleRevisionError:
    return StaleRevisionError(
        f"{kind} {row_id} is at revision {stored}, not {expected}: it changed since it was read"
    )


def lower_version(scenario_id: Any, stored: int, saved: int) -> ConflictError:
    return ConflictError(
        f"scenario {scenario_id} is at version {stored}; a save cannot take it back to version {saved}"
    )
