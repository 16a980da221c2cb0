"""The asyncpg connection pool every PostgreSQL store receives.

``create_pool`` registers a binary codec for pgvector's ``vector`` and ``halfvec`` types on every
connection, so embeddings go in as ``list[float]`` (or anything iterable of numbers, e.g. a numpy
array or ``pgvector.Vector``) and come out as ``list[float]``: stores never see
``pgvector.Vector`` objects. This codec (a few lines of ``struct``) is used instead of the
``pgvector`` package's ``register_vector``, which decodes to numpy arrays: the models hold
``list[float]``, and numpy would become a runtime dependency for that conversion alone.

The ``vector`` type is created by the first migration; a pool on a database without it fails at
once with ``SchemaVersionError`` ("run `focal db upgrade`").

Codecs (and asyncpg's cached prepared statements) are bound to the type's OID. When the extension
is dropped and created again while the application runs (``focal db downgrade base`` then
``upgrade``), the type gets a new OID and every connection of the pool breaks: writes fail with
"cache lookup failed for type N" and reads return vectors as text. So on acquire the pool
checks the type's OID, at most once per ``vector_type_check_seconds`` (one round trip for the
whole pool, default 1 s; 0 checks on every acquire), and a connection that registered its codecs
for an older OID reloads its schema state (dropping cached statements) and registers them again
before it is handed out. While the extension is missing, acquiring raises
``SchemaVersionError``.

Whoever creates the pool closes it (``await pool.close()``); stores never do.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from focal.errors import SchemaVersionError, StoreConnectionError
from focal.settings import DatabaseSettings

__all__ = [
    "VectorConnection",
    "check_pool",
    "create_pool",
    "create_pool_from_settings",
    "describe_dsn",
    "register_vector_codecs",
]

_HEADER = struct.Struct(">HH")  # dimensions, unused (pgvector's binary send/recv format)


def _encode(value: Iterable[float], element: str) -> bytes:
    """pgvector's binary send format: the header, then big-endian ``element``s ("f" float32 for
    ``vector``, "e" float16 for ``halfvec``)."""
    if hasattr(value, "to_list"):  # pgvector.Vector / HalfVector
        value = value.to_list()
    values = list(value)
    return _HEADER.pack(len(values), 0) + struct.pack(f">{len(values)}{element}", *values)


def _decode(data: bytes, element: str) -> list[float]:
    dimensions, _ = _HEADER.unpack_from(data)
    return list(struct.unpack_from(f">{dimensions}{element}", data, _HEADER.size))


async def register_vector_codecs(connection: asyncpg.Connection | Any, *, schema: str = "public") -> None:
    """Register ``vector`` (and ``halfvec``) codecs on one connection (or pool connection proxy)."""
    try:
        for type_name, element in (("vector", "f"), ("halfvec", "e")):
            await connection.set_type_codec(
                type_name,
                schema=schema,
                encoder=partial(_encode, element=element),
                decoder=partial(_decode, element=element),
                format="binary",
            )
    except ValueError as exc:
        if "unknown type" not in str(exc):
            raise
        raise SchemaVersionError(
            "the pgvector extension (type `vector`) is missing in this database: run `focal db upgrade`"
        ) from exc


class VectorConnection(asyncpg.Connection):
    """A pool connection that remembers which generation of the ``vector`` type (see
    ``_VectorTypes``) its codecs were registered for."""

    __slots__ = ("_vector_generation",)

    def vector_generation(self) -> int:
        return getattr(self, "_vector_generation", -1)

    def set_vector_generation(self, generation: int) -> None:
        self._vector_generation = generation

    def get_reset_query(self) -> str:
        """Nothing to send on release. asyncpg's default (``pg_advisory_unlock_all(); CLOSE ALL;
        UNLISTEN *; RESET ALL``) is one more round trip that every pooled query waits for (a
        ``SELECT 1`` took 0.25-0.33 ms instead of 0.10), and undoes state Focal never leaves on a
        connection: its settings are ``SET LOCAL`` / ``set_config(..., true)`` inside transactions,
        its advisory locks transaction-scoped, no ``LISTEN``, no cursor outside a transaction. An
        open transaction is still rolled back on release (asyncpg does that whatever this says)."""
        return ""


class _VectorTypes:
    """The pool-wide view of the ``vector`` type's OID: ``generation`` grows each time it is seen
    to change, and a connection registered for an older generation re-registers on acquire."""

    _OID_SQL = "SELECT to_regtype($1)::oid"

    def __init__(self, schema: str, check_seconds: float) -> None:
        self.schema = schema
        self.check_seconds = check_seconds
        self.oid: int | None = None
        self.generation = 0
        self._next_check = 0.0

    async def _observe(self, connection: Any) -> None:
        oid = await connection.fetchval(self._OID_SQL, f"{self.schema}.vector")
        if oid != self.oid:
            if self.oid is not None:
                self.generation += 1
            self.oid = oid

    async def init(self, connection: Any) -> None:
        """A new connection: register its codecs for the type as it is now."""
        await self._observe(connection)
        await register_vector_codecs(connection, schema=self.schema)
        connection.set_vector_generation(self.generation)

    async def setup(self, connection: Any) -> None:
        """Every acquire: check the OID if it is time, and refresh a stale connection."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_seconds  # before the await: one check at a time
            await self._observe(connection)
        if connection.vector_generation() != self.generation:
            await connection.reload_schema_state()  # drops prepared statements bound to the old OID
            await register_vector_codecs(connection, schema=self.schema)
            connection.set_vector_generation(self.generation)


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: never the user's password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "(unparseable DSN)"
    return f"{host}:{port}{parts.path or '/'}"


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    command_timeout: float = 30.0,
    connect_timeout: float = 10.0,
    statement_cache_size: int = 100,
    vector_codecs: bool = True,
    vector_type_check_seconds: float = 1.0,
) -> asyncpg.Pool:
    """Open an asyncpg pool with the pgvector codecs on every connection.

    ``statement_cache_size=0`` disables prepared-statement caching, as PgBouncer in transaction
    mode requires. ``min_size`` connections are opened now, so an unreachable server fails here
    with ``StoreConnectionError`` naming host, port and database (never the password).
    ``vector_codecs=False`` is for maintenance connections on databases without pgvector.
    ``vector_type_check_seconds``: how often (at most) an acquire checks that the ``vector`` type
    was not re-created meanwhile (see the module docstring).
    """
    where = describe_dsn(dsn)
    if vector_type_check_seconds < 0:
        raise ValueError(f"vector_type_check_seconds must be >= 0, got {vector_type_check_seconds}")
    types = _VectorTypes("public", vector_type_check_seconds) if vector_codecs else None
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            timeout=connect_timeout,
            statement_cache_size=statement_cache_size,
            connection_class=VectorConnection,
            init=types.init if types else None,
            setup=types.setup if types else None,
        )
    except SchemaVersionError:
        raise
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreConnectionError(
            f"cannot connect to PostgreSQL at {where}: {type(exc).__name__}: {_scrub(str(exc), dsn)}"
        ) from exc
    if pool is None:  # asyncpg's signature allows it; only with a custom connection_class
        raise StoreConnectionError(f"asyncpg returned no pool for {where}")
    return pool


async def create_pool_from_settings(settings: DatabaseSettings, *, dsn: str | None = None) -> asyncpg.Pool:
    """``create_pool`` with the options of ``settings.database``; ``dsn`` overrides ``settings.url``."""
    url = dsn or settings.url
    if not url:
        from focal.errors import ConfigurationError

        raise ConfigurationError("no database URL: set FOCAL_DATABASE__URL (or use the embedded server)")
    return await create_pool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        command_timeout=settings.command_timeout_seconds,
        connect_timeout=settings.connect_timeout_seconds,
        statement_cache_size=settings.statement_cache_size,
    )


async def check_pool(pool: asyncpg.Pool, *, timeout_seconds: float = 5.0) -> None:
    """Health check: ``SELECT 1`` within ``timeout_seconds``, else ``StoreConnectionError``."""
    try:
        async with asyncio.timeout(timeout_seconds):
            value: Any = await pool.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreConnectionError(f"PostgreSQL health check failed: {type(exc).__name__}: {exc}") from exc
    if value != 1:
        raise StoreConnectionError(f"PostgreSQL health check returned {value!r}")


def _scrub(message: str, dsn: str) -> str:
    """Remove the DSN's password from a driver message, in case the driver echoed it."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return message
    return message.replace(password, "***") if password else message
