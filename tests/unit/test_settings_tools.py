"""The ``tools`` settings section (``FOCAL_TOOLS__*``) and the executor bootstrap builds from it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from focal.bootstrap import build_tool_executor
from focal.settings import Settings
from focal.tools.models import HttpToolSpec


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("FOCAL_"):
            monkeypatch.delenv(name)
    yield


def test_defaults_allow_any_host_and_three_rounds() -> None:
    tools = Settings.load().tools
    assert tools.allowed_hosts == ("*",)
    assert (tools.max_rounds, tools.max_calls_per_round) == (3, 8)
    assert (tools.max_response_bytes, tools.record_result_bytes) == (65_536, 4_096)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("api.example.com, *.shop.example", ("api.example.com", "*.shop.example")),
        ('["127.0.0.1", "localhost"]', ("127.0.0.1", "localhost")),
    ],
)
def test_allowed_hosts_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("FOCAL_TOOLS__ALLOWED_HOSTS", value)
    monkeypatch.setenv("FOCAL_TOOLS__MAX_ROUNDS", "5")
    tools = Settings.load().tools
    assert (tools.allowed_hosts, tools.max_rounds) == (expected, 5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"allowed_hosts": "https://api.example.com"},
        {"allowed_hosts": "api.example.com:443"},
        {"allowed_hosts": []},
        {"max_rounds": 0},
        {"record_result_bytes": 10},
        {"unknown": 1},
    ],
)
def test_bad_tool_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.load(tools=overrides)


async def test_the_executor_honours_the_allowed_hosts() -> None:
    executor = build_tool_executor(Settings.load(tools={"allowed_hosts": "tools.example.com"}))
    try:
        outcome = await executor.execute("t", HttpToolSpec(url_template="http://127.0.0.1:9/x"), {})
    finally:
        await executor.aclose()
    assert outcome.status == "error" and "FOCAL_TOOLS__ALLOWED_HOSTS" in (outcome.error or "")
