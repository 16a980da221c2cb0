"""Create, drop and address databases on a PostgreSQL server (embedded or not), by admin DSN."""

from __future__ import annotations

from focal.errors import ConfigurationError

__all__ = ["check_identifier", "create_database", "drop_database", "replace_database"]


def check_identifier(name: str) -> None:
    """A database name Focal creates or drops: letters, digits and _ (quoted, but never escaped)."""
    if not name or len(name) > 63 or not all(c.isalnum() or c == "_" for c in name):
        raise ConfigurationError(f"invalid database name {name!r}: use letters, digits and _ (max 63)")


async def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``admin_dsn`` and return its DSN.

    ``template`` clones an existing database (which must have no open connections).
    """
    import asyncpg  # local: keeps `focal serve --memory` free of the driver import cost

    check_identifier(name)
    if template is not None:
        check_identifier(template)
    connection = await asyncpg.connect(admin_dsn)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await connection.close()
    return replace_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its clients."""
    import asyncpg

    check_identifier(name)
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def replace_database(dsn: str, database: str) -> str:
    """``dsn`` with its database path replaced (query parameters kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))
