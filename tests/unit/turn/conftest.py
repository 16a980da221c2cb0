"""Fixtures for the turn-pipeline unit tests: a fresh in-memory stack per test."""

from __future__ import annotations

from uuid import UUID

import pytest

from tests.support import new_tenant
from tests.unit.turn.support import RecordingLLM, TurnStack


@pytest.fixture
def llm() -> RecordingLLM:
    return RecordingLLM()


@pytest.fixture
def stack(llm: RecordingLLM) -> TurnStack:
    return TurnStack(llm=llm)


@pytest.fixture
def tenant() -> UUID:
    return new_tenant()
