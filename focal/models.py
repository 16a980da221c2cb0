"""Pieces shared by every domain's models."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (every stored timestamp uses it)."""
    return datetime.now(UTC)


class FocalModel(BaseModel):
    """Base for stored models: validated on assignment, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FrozenFocalModel(BaseModel):
    """Base for immutable records (audit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
