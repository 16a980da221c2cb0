"""A session stored before modes existed (no ``mode`` in its JSON) reads as AUTO on every backend:
both decode through ``parse_session``."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from focal.conversation.models import Channel, Session, SessionMode
from focal.conversation.stores.session_codec import parse_session
from focal.errors import InvalidDataError


def test_a_session_stored_without_a_mode_reads_as_auto() -> None:
    stored = json.loads(
        Session(
            tenant_id=uuid4(), agent_id=uuid4(), channel=Channel.WEB, user_channel_id="u"
        ).model_dump_json()
    )
    del stored["mode"]
    assert parse_session(json.dumps(stored)).mode is SessionMode.AUTO


def test_an_unknown_mode_is_refused() -> None:
    stored = json.loads(
        Session(
            tenant_id=uuid4(), agent_id=uuid4(), channel=Channel.WEB, user_channel_id="u"
        ).model_dump_json()
    )
    stored["mode"] = "ROBOT"
    with pytest.raises(InvalidDataError):
        parse_session(json.dumps(stored))
