"""structlog set-up: JSON off a terminal, console on one, request context per task."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
import structlog

from focal.logging import bind_request_context, clear_request_context, configure_logging, get_logger

# Created at import time, before any configure_logging call of this module.
EARLY_LOGGER = get_logger("tests.early")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave structlog, the root logger and the context as they were: later tests share them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    clear_request_context()
    yield
    clear_request_context()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_json_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    configure_logging("INFO")
    log = get_logger("focal.test")
    log.info("turn finished", turn=3, latency_ms=1.5)
    log.warning("slow", what="store")
    captured = capsys.readouterr()
    assert captured.out == ""  # logs go to stderr, never stdout
    first, second = json_lines(captured.err)
    assert first["event"] == "turn finished" and first["turn"] == 3 and first["latency_ms"] == 1.5
    assert first["level"] == "info" and first["logger"] == "focal.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", first["timestamp"])  # ISO, UTC
    assert second["level"] == "warning" and second["what"] == "store"


def test_level_filters_lower_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", json_output=True)
    log = get_logger()
    log.info("hidden")
    log.debug("hidden too")
    log.error("shown")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["shown"]


def test_json_lines_carry_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_output=True)
    try:
        raise ValueError("broken input")
    except ValueError:
        get_logger("focal.test").exception("save failed")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "save failed" and line["level"] == "error"
    assert "ValueError: broken input" in line["exception"] and "Traceback" in line["exception"]


def test_console_renderer_when_forced(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json_output=False)
    get_logger("focal.test").info("hello console", user="alice")
    text = ANSI.sub("", capsys.readouterr().err)
    assert "hello console" in text and "user=alice" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_console_tracebacks_never_show_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """A traceback on the console must not print the frames' locals: they hold tool secrets, the
    JWT secret, database passwords (rich, which typer installs, shows them by default)."""
    configure_logging("INFO", json_output=False)
    secret = f"sk-{uuid4().hex}"  # built at run time: the source lines shown hold no value

    def call_tool() -> None:
        secret_header_value = secret
        raise UnicodeEncodeError("ascii", secret_header_value, 0, 1, "ordinal not in range(128)")

    try:
        call_tool()
    except UnicodeEncodeError:
        get_logger("focal.test").exception("tool_executor_failed")
    text = ANSI.sub("", capsys.readouterr().err)
    assert "tool_executor_failed" in text and "UnicodeEncodeError" in text and "call_tool" in text
    assert secret not in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_renderer_when_stderr_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging("INFO")
    get_logger().info("hello terminal", n=1)
    text = ANSI.sub("", terminal.getvalue())
    assert "hello terminal" in text and "n=1" in text
    assert not text.lstrip().startswith("{")


def test_logger_created_before_configuration_follows_it(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_output=True)
    EARLY_LOGGER.info("first", n=1)
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "first" and line["logger"] == "tests.early"
    # A later configuration applies too: the logger did not cache the first one.
    configure_logging(json_output=False)
    EARLY_LOGGER.info("second", n=2)
    text = ANSI.sub("", capsys.readouterr().err)
    assert "second" in text and "n=2" in text and not text.lstrip().startswith("{")


async def test_request_context_is_on_every_line_of_its_task_only(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_output=True)
    log = get_logger("focal.test")
    tenant_a, tenant_b = uuid4(), uuid4()
    a_bound, b_bound = asyncio.Event(), asyncio.Event()

    async def handle(tenant: UUID, request_id: str, bound: asyncio.Event, other: asyncio.Event) -> None:
        bind_request_context(tenant_id=tenant, request_id=request_id)
        log.info("start", who=request_id)
        bound.set()
        await other.wait()  # the other task binds its own context meanwhile
        log.info("middle", who=request_id)
        await asyncio.sleep(0)
        log.info("end", who=request_id)

    await asyncio.gather(
        handle(tenant_a, "req-a", a_bound, b_bound), handle(tenant_b, "req-b", b_bound, a_bound)
    )
    log.info("outside")

    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == 7
    expected = {"req-a": str(tenant_a), "req-b": str(tenant_b)}
    for line in lines[:-1]:
        assert line["request_id"] == line["who"]
        assert line["tenant_id"] == expected[line["who"]]
    assert sorted(line["event"] for line in lines if line.get("who") == "req-a") == ["end", "middle", "start"]
    assert "tenant_id" not in lines[-1] and "request_id" not in lines[-1]


def test_clear_request_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_output=True)
    log = get_logger()
    bind_request_context(tenant_id="t-1")
    log.info("bound")
    bind_request_context(request_id="r-1")  # adds to what is bound
    log.info("both")
    clear_request_context()
    log.info("cleared")
    bound, both, cleared = json_lines(capsys.readouterr().err)
    assert bound["tenant_id"] == "t-1" and "request_id" not in bound
    assert both["tenant_id"] == "t-1" and both["request_id"] == "r-1"
    assert "tenant_id" not in cleared and "request_id" not in cleared


def test_binding_nothing_binds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_output=True)
    bind_request_context()
    get_logger().info("plain")
    (line,) = json_lines(capsys.readouterr().err)
    assert set(line) == {"event", "level", "timestamp"}
