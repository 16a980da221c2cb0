"""structlog set-up: JSON lines in production, a readable console in a terminal.

Context that belongs to a request (``tenant_id``, ``request_id``) is bound with
``bind_request_context`` and travels through contextvars, so every log line emitted while
handling the request carries it without passing a logger around.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any
from uuid import UUID

import structlog


class _CurrentStderr:
    """A structlog logger that writes each line to whatever ``sys.stderr`` is at that moment.

    structlog's PrintLogger keeps the stream it was given; once that stream is replaced or closed
    (test runners, daemonising), every later log line would fail.
    """

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard-library twin of ``_CurrentStderr``."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; nothing to keep
        pass


def _logger_key(_logger: Any, _method: str, event_dict: Any) -> Any:
    """Name the logger under ``logger``, the key standard-library records get, in every line."""
    name = event_dict.pop("logger_name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def configure_logging(level: str = "INFO", *, json_output: bool | None = None) -> None:
    """Configure structlog and the standard library's root logger, at start-up.

    ``json_output=None`` chooses JSON unless stderr is a terminal. Records of standard-library
    loggers (uvicorn, asyncpg, alembic) go through the same processors, so they are JSON lines with
    the bound ``tenant_id`` / ``request_id`` too.
    """
    if json_output is None:
        json_output = not sys.stderr.isatty()
    shared: list[Any] = [
        _logger_key,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json_output:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        # Tracebacks without the frames' local variables (rich shows them by default): locals
        # hold secrets (tool secrets, the JWT secret, database passwords).
        formatter: Any = (
            structlog.dev.RichTracebackFormatter(show_locals=False)
            if importlib.util.find_spec("rich") is not None
            else structlog.dev.plain_traceback
        )
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=formatter)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=lambda *args: _CurrentStderr(),
        # Not cached: a cached logger keeps the configuration of its first use forever, so a
        # module-level logger used before (or between) calls here would ignore this one. Rebinding
        # per call costs about a microsecond.
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.set_name("focal")
    root = logging.getLogger()
    # Replace our own handler on a second call; leave handlers others installed (e.g. pytest's).
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "focal"] + [handler]
    root.setLevel(level)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` becomes the ``logger`` key of each event.

    The logger is a lazy proxy that binds on every call: it follows the latest
    ``configure_logging`` even when it was created (or used) at import time, before that ran.
    """
    if name is None:
        return structlog.get_logger()
    # Not ``logger=``: that name is taken by structlog.wrap_logger's own first parameter.
    return structlog.get_logger(logger_name=name)


def bind_request_context(*, tenant_id: UUID | str | None = None, request_id: str | None = None) -> None:
    """Bind request-scoped values to every log line of the current task."""
    values: dict[str, str] = {}
    if tenant_id is not None:
        values["tenant_id"] = str(tenant_id)
    if request_id is not None:
        values["request_id"] = request_id
    structlog.contextvars.bind_contextvars(**values)


def clear_request_context() -> None:
    """Forget everything bound with ``bind_request_context``."""
    structlog.contextvars.clear_contextvars()
