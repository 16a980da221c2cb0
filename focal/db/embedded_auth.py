"""Password authentication for the embedded PostgreSQL (used by ``focal.db.embedded``).

The embedded cluster accepts only SCRAM password logins (``pg_hba.conf``), on loopback TCP only.
Its superuser's password is generated (random, 256 bits) when the cluster is created and kept
beside the cluster directory in ``<name>.password`` (mode 0600, like the JWT secret), e.g.
``.focal/postgres.password`` for ``.focal/postgres``. Focal reads it to build its DSNs; other
local users can neither read it nor log in without it.

A cluster without a password file (made by an older Focal with ``trust`` authentication, or
interrupted between ``initdb`` and writing the file) is secured before it is started: a new
password is set in single-user mode (no network listener, so there is no window in which the
server accepts passwordless logins) and ``pg_hba.conf`` is replaced. The password file is
written last, so an interruption at any point is repaired by the next start.

The password never appears on a command line (other users can read ``/proc/*/cmdline``): it
goes to ``initdb`` in a 0600 file, to the single-user backend on stdin and to ``psql`` in the
``PGPASSWORD`` environment variable.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from focal.db.child_process import EmbeddedServerError

__all__ = [
    "HBA_CONF",
    "new_password",
    "password_file_for",
    "password_path",
    "read_password",
    "secure_existing_cluster",
    "write_private",
]

# Replaces the pg_hba.conf of a cluster secured after the fact (initdb writes the same rules for a
# new cluster with --auth=scram-sha-256). The server listens on 127.0.0.1 only, without sockets.
HBA_CONF = """\
# Written by Focal: SCRAM password logins only, over TCP on loopback.
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""

Owner = tuple[int, int] | None  # (uid, gid) a file is handed to, or None to keep ours


def password_path(data_dir: Path) -> Path:
    """Where the password of the cluster in ``data_dir`` is kept (beside it, like its log)."""
    return data_dir.parent / f"{data_dir.name}.password"


def new_password() -> str:
    """256 random bits, URL-safe (usable in a DSN and an SQL literal without quoting)."""
    return secrets.token_urlsafe(32)


def read_password(path: Path) -> str | None:
    """The stored password, or ``None`` when the file is missing or empty."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def write_private(path: Path, text: str, *, owner: Owner = None) -> None:
    """Replace ``path`` atomically with a mode-0600 file (never readable by others, even briefly)."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None:
            os.fchown(descriptor, *owner)
        os.write(descriptor, text.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    staging.replace(path)


@contextmanager
def password_file_for(password: str, directory: Path, *, owner: Owner = None) -> Iterator[Path]:
    """A temporary 0600 file holding ``password`` for ``initdb --pwfile``, removed afterwards."""
    descriptor, name = tempfile.mkstemp(prefix=".pwfile-", dir=directory)
    try:
        if owner is not None:
            os.fchown(descriptor, *owner)
        os.write(descriptor, password.encode() + b"\n")
        os.close(descriptor)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def secure_existing_cluster(
    postgres_binary: Path, data_dir: Path, user: str, owner: Owner, identity: dict[str, Any]
) -> str:
    """Give ``user`` a new password and require it (see the module docstring); returns the password.

    The cluster must not be running (single-user mode takes its lock). ``identity`` holds the
    ``subprocess`` arguments that run the backend as the cluster's system user.
    """
    password = new_password()
    escaped_user = user.replace('"', '""')
    result = subprocess.run(
        # log_min_error_statement=panic: a failing statement (holding the password) is never echoed.
        [str(postgres_binary), "--single", "-D", str(data_dir), "-c", "log_min_error_statement=panic",
         "postgres"],
        input=f"ALTER ROLE \"{escaped_user}\" PASSWORD '{password}'\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **identity,
    )  # fmt: skip
    if result.returncode != 0 or "ERROR:" in result.stderr:
        raise EmbeddedServerError(
            f"cannot set the password of the embedded PostgreSQL in {data_dir} (single-user mode):\n"
            f"{result.stderr.replace(password, '***').strip()}"
        )
    write_private(data_dir / "pg_hba.conf", HBA_CONF, owner=owner)
    write_private(password_path(data_dir), password + "\n")
    return password
