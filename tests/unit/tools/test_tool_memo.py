"""``ToolMemo`` on its own: what counts as the same call, and how the runs of a message share the
calls made (whole turns against a real tool server: ``tests/unit/turn/test_turn_tool_reruns.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from focal.tools.memo import ToolMemo, call_key
from focal.tools.models import ToolOutcome


def sender(sent: list[str], label: str) -> Callable[[], Awaitable[ToolOutcome]]:
    async def send() -> ToolOutcome:
        sent.append(label)
        return ToolOutcome(status="ok", content=label, result={"label": label})

    return send


def test_the_same_call_is_the_same_tool_with_the_same_arguments_in_any_key_order() -> None:
    assert call_key("t", {"a": 1, "b": [1, {"c": "é"}]}) == call_key("t", {"b": [1, {"c": "é"}], "a": 1})
    assert call_key("t", {"a": 1}) != call_key("t", {"a": 2})
    assert call_key("t", {"a": 1}) != call_key("u", {"a": 1})
    assert call_key("t", {"a": "1"}) != call_key("t", {"a": 1})


async def test_a_later_run_reuses_as_many_calls_as_an_earlier_one_made() -> None:
    memo, sent = ToolMemo(), []
    first = memo.run()
    made = [await first.call("t", {"a": 1}, sender(sent, f"first-{i}")) for i in range(2)]
    assert sent == ["first-0", "first-1"] and not any(m.reused for m in made)  # one run: both made

    second = memo.run()
    again = [await second.call("t", {"a": 1}, sender(sent, f"second-{i}")) for i in range(3)]
    assert sent == ["first-0", "first-1", "second-2"]
    assert [(m.outcome.content, m.reused) for m in again] == [
        ("first-0", True),
        ("first-1", True),
        ("second-2", False),
    ]
    assert again[0].made_at == made[0].made_at  # as of when it was sent
    other = await second.call("t", {"a": 2}, sender(sent, "other"))
    assert (other.outcome.content, other.reused, sent[-1]) == ("other", False, "other")
    assert memo.sent == 4


async def test_concurrent_calls_of_one_run_each_get_their_own_earlier_call() -> None:
    memo, sent = ToolMemo(), []
    await memo.run().call("t", {}, sender(sent, "lone"))
    run = memo.run()
    both = await asyncio.gather(run.call("t", {}, sender(sent, "x")), run.call("t", {}, sender(sent, "y")))
    assert [(m.outcome.content, m.reused) for m in both] == [("lone", True), ("y", False)]
    assert sent == ["lone", "y"]


async def test_a_call_that_raised_is_not_kept() -> None:
    memo, sent = ToolMemo(), []

    async def broken() -> ToolOutcome:
        raise asyncio.CancelledError  # e.g. the turn was cancelled while the call was in flight

    with pytest.raises(asyncio.CancelledError):
        await memo.run().call("t", {}, broken)
    made = await memo.run().call("t", {}, sender(sent, "sent"))
    assert (made.reused, sent) == (False, ["sent"])


async def test_the_calls_earlier_runs_made_that_a_run_did_not_make_again_are_listed() -> None:
    memo, sent = ToolMemo(), []
    first = memo.run()
    await first.call("t", {"a": 1}, sender(sent, "a1"), details="round 1")
    await first.call("t", {"a": 1}, sender(sent, "a1-again"), details="round 1, twice")
    await first.call("u", {}, sender(sent, "u"), details="round 2")
    assert first.not_repeated() == []  # its own calls are not "earlier"

    second = memo.run()
    await second.call("t", {"a": 1}, sender(sent, "never sent"))  # reuses the first of the two
    await second.call("v", {}, sender(sent, "v"))
    listed = second.not_repeated()
    assert [(m.sent.tool, m.sent.details, m.outcome.content) for m in listed if m.sent] == [
        ("t", "round 1, twice", "a1-again"),
        ("u", "round 2", "u"),
    ]
    assert sent == ["a1", "a1-again", "u", "v"]
