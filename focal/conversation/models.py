"""Live conversation state: the session a customer has with an agent."""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field

from focal.models import MAX_INT4, FocalModel, JsonDict, utc_now


class Channel(StrEnum):
    WEB = "WEB"
    API = "API"
    WHATSAPP = "WHATSAPP"
    SLACK = "SLACK"
    EMAIL = "EMAIL"
    SMS = "SMS"
    VOICE = "VOICE"


class SessionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"
    CLOSED = "CLOSED"


class SessionMode(StrEnum):
    """Who answers the customer: the agent (``AUTO``) or a person (``MANUAL``, after a handoff).

    In MANUAL mode a customer's message is recorded as a turn without any LLM call, and operators
    answer with ``POST /v1/sessions/{id}/messages``."""

    AUTO = "AUTO"
    MANUAL = "MANUAL"


class StepVisit(FocalModel):
    """One entry into a scenario step, kept in ``Session.step_history``."""

    step_id: UUID
    step_name: str
    step_content_hash: str
    entered_at: AwareDatetime = Field(default_factory=utc_now)
    turn_number: int = Field(ge=0, le=MAX_INT4)
    transition_reason: str | None = None


class Session(FocalModel):
    """A conversation between one customer and one agent on one channel.

    ``version`` is the optimistic-concurrency counter: a save succeeds only when the stored
    version equals this one (0 for a new session), and the stored copy gets ``version + 1``.
    """

    session_id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    customer_profile_id: UUID | None = None
    channel: Channel
    user_channel_id: str = Field(min_length=1, max_length=255)
    status: SessionStatus = SessionStatus.ACTIVE
    mode: SessionMode = SessionMode.AUTO  # sessions stored before modes existed read as AUTO
    config_version: int = Field(default=1, ge=1, le=MAX_INT4)
    variables: JsonDict = Field(default_factory=dict)
    # When each variable was last set (by a turn or an operator): resolver caches expire by it.
    variables_set_at: dict[str, AwareDatetime] = Field(default_factory=dict)
    active_scenario_id: UUID | None = None
    active_scenario_version: int | None = Field(default=None, le=MAX_INT4)
    current_step_id: UUID | None = None
    step_history: list[StepVisit] = Field(default_factory=list)
    rule_fires: dict[str, int] = Field(default_factory=dict)  # rule id (str) -> fire count
    rule_last_fire_turn: dict[str, int] = Field(default_factory=dict)  # rule id (str) -> turn number
    turn_count: int = Field(default=0, ge=0, le=MAX_INT4)
    pending_migration: JsonDict | None = None
    version: int = Field(default=0, ge=0, le=MAX_INT4)
    created_at: AwareDatetime = Field(default_factory=utc_now)
    last_activity_at: AwareDatetime = Field(default_factory=utc_now)

    def current_step_hash(self) -> str | None:
        """The content hash of the step the session is in, from the latest visit."""
        if self.current_step_id is None:
            return None
        for visit in reversed(self.step_history):
            if visit.step_id == self.current_step_id:
                return visit.step_content_hash
        return None
