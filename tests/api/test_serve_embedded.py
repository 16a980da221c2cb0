"""``focal serve`` on the embedded default, as a user runs it: a real process, real child servers.

Start it on an empty data directory, wait for ``/ready``, create an agent with the printed token,
SIGTERM it, check that no child server survives, start it again and find the agent (data, JWT
secret and default tenant all persist in the data directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

START_DEADLINE_SECONDS = 60.0  # initdb on a loaded 2-core machine; normally ~10 s
STOP_DEADLINE_SECONDS = 30.0


def _processes_in(directory: Path) -> list[int]:
    """Pids of processes whose working directory is inside ``directory`` (the child servers run there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except OSError:
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(entry.name))
    return found


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOCAL_")}
    env["FOCAL_EMBEDDING__DIMENSIONS"] = "8"
    env["FOCAL_LOGGING__JSON_OUTPUT"] = "true"
    return env


class ServeProcess:
    def __init__(self, data_dir: Path, output: Path, command: str = "serve") -> None:
        self.url = ""  # known once the banner is printed (--port 0: the server picks a free port)
        self.output = output
        self._stdout = open(output, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "focal.cli", command, "--data-dir", str(data_dir), "--port", "0"],
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            env=_environment(),
        )

    def printed(self, prefix: str) -> str:
        for line in self.output.read_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        pytest.fail(f"no {prefix!r} line printed:\n{self.output.read_text()}")

    def wait_ready(self) -> str:
        """Poll ``/ready`` until 200, then return the printed token."""
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"focal serve exited with {self.process.returncode}:\n{self.output.read_text()}")
            if not self.url:
                banner = [
                    line
                    for line in self.output.read_text().splitlines()
                    if line.startswith("Focal is serving")
                ]
                self.url = banner[0].split()[4] if banner else ""
            try:
                if self.url and httpx.get(f"{self.url}/ready", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(f"focal serve not ready after {START_DEADLINE_SECONDS}s:\n{self.output.read_text()}")
        return self.printed("Token:")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail("focal serve did not stop within 30 s of SIGTERM")
        finally:
            self._stdout.close()
        return code


async def _connect_error(dsn: str) -> str:
    try:
        connection = await asyncpg.connect(dsn)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return str(exc)
    await connection.close()
    return "connected"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory outside pytest's ``tmp_path`` tree: another pytest session resets
    ``/tmp/pytest-of-<user>`` to 0700, which would lock out PostgreSQL's unprivileged user."""
    scratch = Path(tempfile.mkdtemp(prefix="focal-test-serve-")).resolve()
    directory = scratch / "focal-data"
    try:
        yield directory
    finally:
        for pid in _processes_in(directory):  # safety net for a failed test: no servers left behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(scratch, ignore_errors=True)


def test_embedded_serve_persists_and_leaves_no_orphans(data_dir: Path, tmp_path: Path) -> None:
    first = ServeProcess(data_dir, tmp_path / "first.log")
    try:
        token = first.wait_ready()
        assert len(_processes_in(data_dir)) >= 2  # PostgreSQL (and its workers) and Redis
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{first.url}/v1/agents", json={"name": "survivor"}, headers=headers, timeout=10)
        assert created.status_code == 201, created.text
        # The embedded PostgreSQL wants its generated password; `focal db` finds it in the data dir.
        port = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[3])
        refused = asyncio.run(_connect_error(f"postgresql://postgres@127.0.0.1:{port}/focal"))
        assert "password authentication failed" in refused
        shown = subprocess.run(
            [sys.executable, "-m", "focal.cli", "db", "current", "--data-dir", str(data_dir)],
            capture_output=True, text=True, env=_environment(), timeout=60, check=False,
        )  # fmt: skip
        assert shown.returncode == 0 and "AT_HEAD" in shown.stdout, shown.stderr
    finally:
        assert first.stop() == 0
    assert _processes_in(data_dir) == []
    for private in ("jwt_secret", "postgres.password", "postgres.log", "redis/server.log"):
        assert (data_dir / private).stat().st_mode & 0o777 == 0o600, private
    assert (data_dir / "postgres" / "PG_VERSION").exists()

    # Another embedding dimension than the schema's: refused, naming both, and nothing left running.
    mismatched = subprocess.run(
        [sys.executable, "-m", "focal.cli", "serve", "--data-dir", str(data_dir), "--port", "0"],
        capture_output=True, text=True, env={**_environment(), "FOCAL_EMBEDDING__DIMENSIONS": "4"},
        timeout=START_DEADLINE_SECONDS, check=False,
    )  # fmt: skip
    assert mismatched.returncode == 1, mismatched.stdout + mismatched.stderr
    assert "embedding dimension 4" in mismatched.stderr and "vector(8)" in mismatched.stderr
    assert _processes_in(data_dir) == []

    # Restart as `focal demo`: the same data, plus the sample agent and a curl line to chat with it.
    second = ServeProcess(data_dir, tmp_path / "second.log", command="demo")
    try:
        second_token = second.wait_ready()
        for bearer in (token, second_token):  # same secret and tenant: the old token still works
            listed = httpx.get(
                f"{second.url}/v1/agents", headers={"Authorization": f"Bearer {bearer}"}, timeout=10
            )
            names = [agent["name"] for agent in listed.json()["items"]]
            assert "survivor" in names and len(names) == 2
        chat_line = second.printed("Chat:")
        chat_url = next(part for part in chat_line.split() if part.endswith("/chat"))
        body = json.loads(chat_line.split(" -d ", 1)[1].strip("'"))
        answer = httpx.post(chat_url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["turn_number"] == 1 and answer.json()["response"]
        # the demo shop runs in the same process, on loopback, and wants its key
        shop_url = second.printed("Demo shop:").split()[0]
        assert shop_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{shop_url}/orders/FD-10234", timeout=10).status_code == 401
    finally:
        assert second.stop() == 0
    assert _processes_in(data_dir) == []


def test_sigterm_while_starting_stops_the_children(data_dir: Path, tmp_path: Path) -> None:
    starting = ServeProcess(data_dir, tmp_path / "starting.log")
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    postgres_log = data_dir / "postgres.log"
    # Wait until PostgreSQL accepts connections; Redis, migrations or the API are not ready yet.
    while not (postgres_log.exists() and "ready to accept connections" in postgres_log.read_text()):
        assert starting.process.poll() is None, starting.output.read_text()
        assert time.monotonic() < deadline, "PostgreSQL did not start"
        time.sleep(0.02)
    assert len(_processes_in(data_dir)) >= 1
    assert starting.stop() == 0
    assert _processes_in(data_dir) == []
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # a clean PostgreSQL shutdown
    assert "embedded server stopped" in starting.output.read_text()
