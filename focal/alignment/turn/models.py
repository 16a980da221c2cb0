"""Value objects of one turn: its configuration, its input, its result.

``TurnConfig`` holds the pipeline's thresholds. The defaults suit the lexical
``HashingEmbeddingProvider`` (a message sharing two or three words with a rule condition scores
roughly 0.2-0.4; text sharing no word scores about 0). A semantic embedder (OpenAI) scores related
texts higher and unrelated ones around 0.1-0.3, so deployments using one should raise the
thresholds (``FOCAL_TURN__*``); a test or an app can also pass its own ``TurnConfig``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from focal.audit.models import MatchedRule, TokenCounts
from focal.conversation.models import Channel, SessionMode
from focal.errors import InvalidDataError
from focal.settings import TurnSettings

MAX_MESSAGE_CHARS = 16_000


# The thresholds are a settings section (``FOCAL_TURN__*``); the pipeline takes the same model.
TurnConfig = TurnSettings


def normalise_channel_user_id(value: str) -> str:
    """The one normal form of a channel identity (``user_channel_id`` / ``channel_user_id``):
    surrounding whitespace removed, so " alice " and "alice" are one customer.

    Chat (``TurnRequest``) and the profile routes (``focal.api.schemas.conversations
    .ChannelUserId``) both go through this function, so a profile is found under the identity a
    conversation created it with.
    """
    return value.strip()


@dataclass(frozen=True)
class TurnRequest:
    """One customer message for one agent, in one tenant; ``user_channel_id`` is normalised
    (``normalise_channel_user_id``) on construction."""

    tenant_id: UUID
    agent_id: UUID
    channel: Channel
    user_channel_id: str
    message: str
    session_id: UUID | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_channel_id", normalise_channel_user_id(self.user_channel_id))

    def normalised_message(self) -> str:
        """The message stripped of surrounding whitespace; empty or oversized is bad input."""
        text = self.message.strip()
        if not text:
            raise InvalidDataError("message is empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise InvalidDataError(f"message is longer than {MAX_MESSAGE_CHARS} characters")
        if not self.user_channel_id:
            raise InvalidDataError("user_channel_id is empty")
        return text


class ScenarioPosition(BaseModel):
    """Where in a scenario this turn was answered from (the step after this turn's move)."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    name: str
    step_id: UUID
    step_name: str
    finished: bool = False  # the step is terminal: the session left the scenario after this turn


class TurnResult(BaseModel):
    """What one turn produced; the chat endpoint returns it almost verbatim."""

    model_config = ConfigDict(frozen=True)

    session_id: UUID
    turn_id: UUID
    turn_number: int
    response: str
    matched_rules: list[MatchedRule]
    scenario: ScenarioPosition | None
    template_id: UUID | None
    usage: TokenCounts
    latency_ms: float
    timings_ms: dict[str, float]
    new_session: bool
    # The session's mode after the turn: MANUAL once a rule handed it to a person.
    session_mode: SessionMode = SessionMode.AUTO
    # False: the message was recorded without an answer (a MANUAL session; a person answers).
    answered: bool = True


@dataclass
class StepTimer:
    """Wall-clock milliseconds per pipeline step, in the order they ran."""

    timings_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        """Time the block; a step measured twice accumulates."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            self.timings_ms[step] = round(self.timings_ms.get(step, 0.0) + elapsed_ms, 3)

    def snapshot(self) -> dict[str, float]:
        return dict(self.timings_ms)
