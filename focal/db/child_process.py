"""One server child process: launch with port retry, readiness polling, ordered stop, atexit.

The base of ``EmbeddedPostgres`` and ``EmbeddedRedis`` (``focal.db.embedded``). A subclass says
how to prepare its data directory, which command to run, as which user, and how to tell that the
server is ready; this class owns the process: it retries on another free port when the chosen one
was taken meanwhile, polls readiness against a deadline (failing with the log tail of this
launch), stops with the server's graceful signal, escalates to SIGKILL after a grace period,
always reaps the child, and stops whatever still runs when the interpreter exits. The child's
output goes to its log file, which only Focal's user may read (mode 0600).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from focal.errors import StoreConnectionError
from focal.logging import get_logger

__all__ = ["LOOPBACK", "ChildServer", "EmbeddedServerError", "free_port"]

LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 30


def _log() -> Any:
    # Bound per call, not at import: a logger bound at import time keeps structlog's defaults
    # (stdout) even after `configure_logging` runs.
    return get_logger("focal.db.embedded")


class EmbeddedServerError(StoreConnectionError):
    """An embedded server could not start (the message carries the tail of its log)."""


def free_port() -> int:
    """A TCP port on loopback that is free right now (the caller retries if it gets taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES, *, offset: int = 0) -> str:
    """The last ``lines`` lines of a log, from byte ``offset`` on (this launch's output only)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class ChildServer:
    """Shared lifecycle of one server child process: start with port retry, poll, stop, atexit."""

    name = "server"
    _stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int | None, start_timeout: float) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._fixed_port = port is not None
        self._port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError(f"embedded {self.name} has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Create the data directory (and initialise it) before the first launch."""

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _identity(self) -> dict[str, Any]:
        """``subprocess`` keyword arguments choosing the user the child runs as (default: ours)."""
        return {}

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Work that needs the running server (e.g. creating the application database)."""

    def start(self) -> Self:
        """Start the child and block until it answers; no-op if already running."""
        if self.running:
            return self
        self._prepare()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            if not self._fixed_port and (self._port is None or attempt > 1):
                self._port = free_port()
            try:
                self._launch_and_wait()
                break
            except EmbeddedServerError:
                # A free port can be taken between choosing and binding it: choose another one.
                if attempt == attempts or "already in use" not in self._tail().lower():
                    raise
        _running.add(self)
        self._after_ready()
        _log().info("embedded server started", server=self.name, port=self._port, pid=self.pid)
        return self

    def _launch_and_wait(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: a server log can quote what clients sent. fchmod also tightens an older, looser log.
        descriptor = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(descriptor, 0o600)
        self._log_file = os.fdopen(descriptor, "ab")  # kept open for the child's lifetime
        self._log_offset = self._log_file.tell()
        self._process = subprocess.Popen(
            self._command(self.port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            **self._identity(),
            cwd=self.data_dir,
            start_new_session=True,  # Ctrl-C in a terminal reaches Focal, which stops us in order
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._cleanup()
                raise EmbeddedServerError(
                    f"embedded {self.name} exited with code {code} while starting; "
                    f"log {self.log_path}:\n{self._tail()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                self._terminate(timeout=5.0)
                raise EmbeddedServerError(
                    f"embedded {self.name} not ready after {self.start_timeout:.0f}s on port {self._port}; "
                    f"log {self.log_path}:\n{self._tail()}"
                )
            time.sleep(0.02)

    def _tail(self) -> str:
        return _log_tail(self.log_path, offset=self._log_offset)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child gracefully, escalate to SIGKILL after ``timeout`` seconds, and reap it."""
        if self._process is None:
            return
        self._terminate(timeout)
        _log().info("embedded server stopped", server=self.name, port=self._port)

    def _terminate(self, timeout: float) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(self._stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._process = None
        _running.discard(self)

    async def start_async(self) -> Self:
        """``start()`` in a worker thread, for callers inside an event loop."""
        return await asyncio.to_thread(self.start)

    async def stop_async(self, grace_seconds: float = 10.0) -> None:
        """``stop()`` in a worker thread, for callers inside an event loop."""
        await asyncio.to_thread(self.stop, grace_seconds)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_running: weakref.WeakSet[ChildServer] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_running):
        server.stop(timeout=5.0)
