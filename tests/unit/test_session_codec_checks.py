"""``check_session_storable`` (every session save runs it) refuses exactly what ``check_storable``
refuses, with the same message, and decides plain sessions without the generic walk."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from focal.conversation.models import Channel, Session, StepVisit
from focal.conversation.stores import session_codec
from focal.conversation.stores.redis_keys import SessionKeys
from focal.conversation.stores.session_codec import check_session_storable
from focal.errors import InvalidDataError
from focal.validation import MAX_JSON_DEPTH, check_storable
from tests.contract.storable_values import UNSTORABLE_TIMESTAMPS, nested


def _session(**fields: Any) -> Session:
    steps = [
        StepVisit(step_id=uuid4(), step_name=f"step-{i}", step_content_hash=f"{i:064x}", turn_number=i)
        for i in range(3)
    ]
    values: dict[str, Any] = {
        "tenant_id": uuid4(),
        "agent_id": uuid4(),
        "customer_profile_id": uuid4(),
        "channel": Channel.WEB,
        "user_channel_id": "user-1",
        "variables": {"name": "Ada", "items": ["tea", 2, 2.5, None, True], "deep": {"k": [1]}},
        "variables_set_at": {"name": datetime.now(UTC)},
        "active_scenario_id": uuid4(),
        "active_scenario_version": 2,
        "current_step_id": steps[-1].step_id,
        "step_history": steps,
        "rule_fires": {str(uuid4()): 1},
        "turn_count": 3,
    }
    return Session(**{**values, **fields})


def _with(**update: Any) -> Callable[[], Session]:
    """A session changed without validation, as ``model_copy(update=...)`` allows."""
    return lambda: _session().model_copy(update=update)


def _step_with(**update: Any) -> Callable[[], Session]:
    def build() -> Session:
        base = _session()
        steps = [visit.model_copy(update=update) for visit in base.step_history]
        return base.model_copy(update={"step_history": steps})

    return build


CASES: dict[str, Callable[[], Session]] = {
    # accepted
    "plain": _session,
    "non-ascii text": lambda: _session(user_channel_id="Zoë 😀", variables={"é": "ü"}),
    "literal backslash-u0000": lambda: _session(variables={"k": "\\u0000"}),
    "year-1 and year-9999 in UTC": lambda: _session(
        created_at=datetime(1, 1, 1, tzinfo=UTC),
        variables_set_at={"x": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)},
    ),
    "offset timestamps": lambda: _session(
        created_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    ),
    "nesting at the limit": lambda: _session(variables={"k": nested(MAX_JSON_DEPTH - 1)}),
    "tuple in variables": _with(variables={"t": ("a", 1)}),
    "aware datetime in variables": _with(variables={"when": datetime.now(UTC)}),
    # refused
    "nul in a field": lambda: _session(user_channel_id="a\x00b"),
    "nul in a step name": _step_with(step_name="a\x00"),
    "nul in a key": lambda: _session(rule_fires={"r\x00": 1}),
    "nul in non-ascii text": lambda: _session(variables={"k": "é\x00"}),
    "surrogate key": _with(variables={"\ud800": 1}),
    "surrogate value": _with(variables={"x": ["ok", "a\udfff"]}),
    "nan variable": _with(variables={"x": float("nan")}),
    "inf in a list": _with(variables={"x": [1, -math.inf]}),
    "nan in an optional typed field": _with(active_scenario_version=float("nan")),
    "nan in a step": _step_with(transition_reason=float("nan")),
    "nan in pending migration": _with(pending_migration={"a": {"b": [math.inf]}}),
    "naive created_at": _with(created_at=datetime(2026, 1, 1)),
    "naive timestamp in variables": _with(variables={"when": datetime(2026, 1, 1)}),
    "naive step entry": _step_with(entered_at=datetime(2026, 1, 1)),
    "too deep": lambda: _session(variables={"k": nested(MAX_JSON_DEPTH + 1)}),
    "too deep in a set": _with(variables={"k": {frozenset({1})}}),
    **{
        f"unstorable timestamp {name}": _with(variables_set_at={"x": moment})
        for name, moment in UNSTORABLE_TIMESTAMPS.items()
    },
    **{
        f"unstorable created_at {name}": _with(created_at=moment)
        for name, moment in UNSTORABLE_TIMESTAMPS.items()
    },
}


def _outcome(check: Callable[[], None]) -> str | None:
    try:
        check()
    except InvalidDataError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_same_verdict_and_message_as_check_storable(build: Callable[[], Session]) -> None:
    session = build()
    expected = _outcome(lambda: check_storable(session, f"session {session.session_id}"))
    assert _outcome(lambda: check_session_storable(session)) == expected


def test_the_cases_cover_both_verdicts() -> None:
    verdicts = {name: _outcome(lambda b=b: check_storable(b(), "s")) is None for name, b in CASES.items()}
    assert verdicts["plain"] and verdicts["tuple in variables"] and verdicts["nesting at the limit"]
    assert not verdicts["nan in an optional typed field"] and not verdicts["too deep"]


def test_plain_sessions_skip_the_generic_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the function: a session with only plain values is decided by the quick walk."""
    walked: list[str] = []
    monkeypatch.setattr(session_codec, "check_storable", lambda model, what: walked.append(what))
    for name in ("plain", "non-ascii text", "offset timestamps", "nesting at the limit"):
        check_session_storable(CASES[name]())
    assert walked == []
    check_session_storable(CASES["tuple in variables"]())  # unusual: the generic walk decides
    assert len(walked) == 1


def test_index_keys_of_names_the_same_keys_as_the_single_key_methods() -> None:
    keys = SessionKeys("focal")
    session = _session()
    tenant = session.tenant_id
    step_hash = session.current_step_hash()
    assert step_hash is not None and session.customer_profile_id is not None
    assert session.active_scenario_id is not None and session.active_scenario_version is not None
    assert keys.index_keys_of(session, str(tenant)) == (
        [
            keys.agent(tenant, session.agent_id),
            keys.customer(tenant, session.customer_profile_id),
            keys.channel(tenant, session.channel, session.user_channel_id),
            keys.step(tenant, session.active_scenario_id, session.active_scenario_version, step_hash),
            keys.registry(tenant),
            keys.clock(tenant),
        ],
        2,
    )
    bare = _session(customer_profile_id=None, active_scenario_id=None, current_step_id=None)
    assert keys.index_keys_of(bare, str(bare.tenant_id)) == (
        [
            keys.agent(bare.tenant_id, bare.agent_id),
            keys.channel(bare.tenant_id, bare.channel, bare.user_channel_id),
            keys.registry(bare.tenant_id),
            keys.clock(bare.tenant_id),
        ],
        1,
    )
