"""Build Focal's services (stores, providers, clients) from ``Settings``, and close them again.

Configuration flows one way: ``Settings`` is built once, and this module turns it into pools,
clients, stores and providers. Stores and providers receive clients and typed options; they never
read the environment.

The backend is chosen explicitly by ``settings.storage``:

- ``memory``: the in-memory reference stores; nothing persists.
- ``external``: PostgreSQL at ``database.url`` and Redis at ``redis.url``, both required. The
  schema must be at the code's head revision (``SchemaVersionError`` naming the fix otherwise),
  and its embedding columns must have ``embedding.dimensions`` (``ConfigurationError`` naming both
  sizes otherwise: every write and search would fail).
- ``embedded``: the servers are child processes started by ``focal serve``, which then calls
  ``build_services`` as ``external`` with their URLs. Building ``embedded`` directly is an error.

There is no fallback from one backend to another: a server that cannot be reached is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from focal.errors import ConfigurationError, FocalError, StoreConnectionError
from focal.logging import get_logger
from focal.settings import (
    DATABASE_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    RedisSettings,
    Settings,
    StorageBackend,
)

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio

    from focal.alignment.stores.config_store import ConfigStore
    from focal.audit.stores.store import AuditStore
    from focal.conversation.locks import ConversationLocks
    from focal.conversation.stores.store import SessionStore
    from focal.idempotency.store import IdempotencyStore
    from focal.memory.stores.store import MemoryStore
    from focal.profile.stores.store import ProfileStore
    from focal.providers.embedding.base import EmbeddingProvider
    from focal.providers.llm.base import LLMProvider
    from focal.tools.executor import ToolExecutor
    from focal.webhooks.dispatcher import WebhookDispatcher
    from focal.webhooks.store import WebhookStore

__all__ = ["FocalServices", "ReadinessChecks", "build_services", "open_services"]

_log = get_logger("focal.bootstrap")

READINESS_TIMEOUT_SECONDS = 3.0

RedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.RedisCluster"


@dataclass
class ReadinessChecks:
    """What ``GET /ready`` probes: the database pool (and its schema) and the Redis client.

    Both are ``None`` for the in-memory backend, which is always ready. The schema check covers
    the revision and, when ``embedding_dimensions`` is set, the size of every embedding column
    (the schema can change under a running process, e.g. by a downgrade and upgrade).
    """

    pool: asyncpg.Pool | None = None
    redis: RedisClient | None = None
    embedding_dimensions: int | None = None
    timeout_seconds: float = READINESS_TIMEOUT_SECONDS
    redis_allow_eviction: bool = False  # RedisSettings.allow_eviction: an evicting policy is "ok"

    async def run(self) -> dict[str, str]:
        """Probe every dependency; returns ``{check: "ok" | "<why it failed>"}``, never raises."""
        results: dict[str, str] = {}
        if self.pool is not None:
            results["postgres"] = await self._probe(self._check_postgres)
            if results["postgres"] == "ok":
                results["schema"] = await self._probe(self._check_schema)
            else:
                results["schema"] = "not checked: PostgreSQL is unavailable"
        if self.redis is not None:
            results["redis"] = await self._probe(self._check_redis)
        return results

    async def _probe(self, check: Any) -> str:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await check()
        except TimeoutError:
            return f"timed out after {self.timeout_seconds:g}s"
        except FocalError as exc:
            return str(exc)
        except Exception as exc:  # a readiness probe reports every failure instead of raising
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    async def _check_postgres(self) -> None:
        from focal.db.pool import check_pool

        assert self.pool is not None
        await check_pool(self.pool, timeout_seconds=self.timeout_seconds)

    async def _check_schema(self) -> None:
        from focal.db.migrate import check_embedding_dimensions, ensure_schema_at_head

        assert self.pool is not None
        await ensure_schema_at_head(self.pool)
        if self.embedding_dimensions is not None:
            await check_embedding_dimensions(self.pool, self.embedding_dimensions)

    async def _check_redis(self) -> None:
        """PING, then the server checks of start-up: a policy changed at run time (e.g. ``CONFIG
        SET maxmemory-policy allkeys-lru``) makes the instance unready."""
        from focal.conversation.stores.redis_server import check_redis_server

        assert self.redis is not None
        if not await self.redis.ping():
            raise StoreConnectionError("Redis did not answer PING")
        await check_redis_server(self.redis, allow_eviction=self.redis_allow_eviction)


def _in_memory(module: str, name: str) -> Any:
    """A default factory for a services field: the in-memory class, imported when first needed."""
    return lambda: getattr(importlib.import_module(module), name)()


@dataclass
class FocalServices:
    """Everything a request handler or the turn pipeline needs, built once per process.

    ``idempotency_store``, ``conversation_locks`` and ``webhook_store`` default to the in-memory
    ones (one process); ``webhooks`` (the dispatcher) is None when events go nowhere.
    """

    settings: Settings
    config_store: ConfigStore
    memory_store: MemoryStore
    session_store: SessionStore
    audit_store: AuditStore
    profile_store: ProfileStore
    llm_provider: LLMProvider
    embedding_provider: EmbeddingProvider
    tool_executor: ToolExecutor
    checks: ReadinessChecks = field(default_factory=ReadinessChecks)
    idempotency_store: IdempotencyStore = field(
        default_factory=_in_memory("focal.idempotency.inmemory", "InMemoryIdempotencyStore")
    )
    conversation_locks: ConversationLocks = field(
        default_factory=_in_memory("focal.conversation.locks", "InMemoryConversationLocks")
    )
    webhook_store: WebhookStore = field(
        default_factory=_in_memory("focal.webhooks.inmemory", "InMemoryWebhookStore")
    )
    webhooks: WebhookDispatcher | None = None


def build_tool_executor(settings: Settings) -> ToolExecutor:
    """The executor of every tenant's HTTP tools, on one shared ``httpx.AsyncClient`` it owns.

    The client reads nothing from the environment (``trust_env=False``: no proxy or certificate
    variables behind the settings' back) and follows no redirect itself (the executor follows
    same-origin ones only). Each call is bounded by its tool's own timeout.
    """
    import httpx

    from focal.tools.http import HttpToolExecutor, HttpToolOptions
    from focal.tools.models import MAX_TOOL_TIMEOUT_SECONDS

    options = settings.tools
    client = httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(MAX_TOOL_TIMEOUT_SECONDS),
        limits=httpx.Limits(max_connections=options.max_connections),
    )
    return HttpToolExecutor(
        client,
        HttpToolOptions(
            allowed_hosts=options.allowed_hosts,
            max_response_bytes=options.max_response_bytes,
            max_redirects=options.max_redirects,
        ),
        owns_client=True,
    )


def _check_embedding_dimensions(settings: Settings, provider: EmbeddingProvider) -> None:
    if provider.dimensions != settings.embedding.dimensions:
        raise ConfigurationError(
            f"the embedding provider {provider.model_id!r} produces {provider.dimensions}-dimensional "
            f"vectors but FOCAL_EMBEDDING__DIMENSIONS is {settings.embedding.dimensions}"
        )


def _build_providers(settings: Settings) -> tuple[LLMProvider, EmbeddingProvider]:
    from focal.providers.factory import build_embedding_provider, build_llm_provider

    llm = build_llm_provider(settings)
    embedding = build_embedding_provider(settings)
    _check_embedding_dimensions(settings, embedding)
    return llm, embedding


def build_memory_services(settings: Settings) -> FocalServices:
    """In-memory stores and the configured providers (tests and ``focal serve --memory``)."""
    from focal.alignment.stores.inmemory import InMemoryConfigStore
    from focal.audit.stores.inmemory import InMemoryAuditStore
    from focal.conversation.stores.inmemory import InMemorySessionStore
    from focal.memory.stores.inmemory import InMemoryMemoryStore
    from focal.profile.stores.inmemory import InMemoryProfileStore
    from focal.webhooks.dispatcher import WebhookDispatcher
    from focal.webhooks.inmemory import InMemoryWebhookStore

    llm, embedding = _build_providers(settings)
    dimensions = settings.embedding.dimensions
    audit_store = InMemoryAuditStore()
    webhook_store = InMemoryWebhookStore()
    dispatcher = WebhookDispatcher.from_settings(settings.webhooks, webhook_store, audit_store)
    return FocalServices(
        settings=settings,
        config_store=InMemoryConfigStore(embedding_dimensions=dimensions),
        memory_store=InMemoryMemoryStore(embedding_dimensions=dimensions),
        session_store=InMemorySessionStore(),
        audit_store=audit_store,
        profile_store=InMemoryProfileStore(),
        llm_provider=llm,
        embedding_provider=embedding,
        tool_executor=build_tool_executor(settings),
        checks=ReadinessChecks(),
        webhook_store=webhook_store,
        webhooks=dispatcher,
    )


def _describe_redis_url(url: str) -> str:
    """``host:port/db`` of a Redis URL, for messages: never the password."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"
    except ValueError:
        return "(unparseable URL)"


def redis_connection_options(options: RedisSettings) -> dict[str, Any]:
    """Keyword arguments of every Focal Redis client (single server or cluster): socket timeouts
    and the retry policy (``retry_attempts`` re-sends after a connection error or a timeout)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    return {
        "socket_timeout": options.socket_timeout_seconds,
        "socket_connect_timeout": options.socket_timeout_seconds,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), options.retry_attempts),
    }


async def create_redis_client(url: str, options: RedisSettings) -> RedisClient:
    """A Redis client, checked; the caller closes it with ``close_redis_client``.

    A single server gets a ``redis.asyncio.Redis`` on a ``BlockingConnectionPool`` (callers wait
    for a free connection instead of failing bursts with "Too many connections"). With
    ``cluster=true`` the URL is any node of a Redis Cluster and the client a ``RedisCluster``
    (``max_connections`` per node; the session store makes callers wait for a free one).

    Both retry a command ``retry_attempts`` times after a connection error or a socket timeout
    (short jittered back-off): a connection the server closed while idle (its ``timeout``
    setting, or a proxy's idle cut-off) is replaced instead of failing the next burst. Every
    command the session store sends is safe to send twice. The store bounds the whole operation
    by ``operation_timeout_seconds``.

    Checked at start: the server answers, runs in the mode ``cluster`` says and is 7.0+, and every
    node has ``maxmemory-policy noeviction`` unless ``allow_eviction`` (then a warning is logged).
    A mismatch is a ``ConfigurationError`` naming the fix; an unreachable server a
    ``StoreConnectionError``.
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, RedisError

    from focal.conversation.stores.redis_server import check_redis_server

    connection_options = redis_connection_options(options)
    client: RedisClient
    if options.cluster:
        client = RedisCluster.from_url(url, max_connections=options.max_connections, **connection_options)
    else:
        pool: Any = BlockingConnectionPool.from_url(
            url,
            max_connections=options.max_connections,
            timeout=options.operation_timeout_seconds,  # how long to wait for a free pooled connection
            **connection_options,
        )
        client = Redis(connection_pool=pool)
    where = _describe_redis_url(url)
    unreachable = f"cannot connect to {'Redis Cluster' if options.cluster else 'Redis'} at {where}"
    try:
        if options.cluster:
            await client.initialize()
        await client.ping()
        warnings = await check_redis_server(client, allow_eviction=options.allow_eviction)
    except RedisClusterException as exc:
        await close_redis_client(client)
        if "cluster mode is not enabled" in str(exc).lower():
            raise ConfigurationError(
                f"FOCAL_REDIS__CLUSTER is true but the Redis at {where} is not a cluster node: "
                "set FOCAL_REDIS__CLUSTER=false"
            ) from exc
        raise StoreConnectionError(f"{unreachable}: {type(exc).__name__}: {exc}") from exc
    except (RedisError, OSError) as exc:
        await close_redis_client(client)
        raise StoreConnectionError(f"{unreachable}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        await close_redis_client(client)
        raise
    for warning in warnings:
        _log.warning("redis may evict sessions", detail=warning)
    return client


async def close_redis_client(client: RedisClient) -> None:
    """Close the client, and the pool of a single-server client (a client given a pool does not own it)."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        await pool.disconnect()


async def _build_external_services(settings: Settings, stack: contextlib.AsyncExitStack) -> FocalServices:
    from focal.alignment.stores.postgres import PostgresConfigStore
    from focal.audit.stores.postgres import PostgresAuditStore
    from focal.conversation.stores.redis import RedisSessionStore
    from focal.conversation.stores.redis_locks import RedisConversationLocks
    from focal.db.migrate import check_embedding_dimensions, ensure_schema_at_head
    from focal.db.pool import create_pool_from_settings
    from focal.idempotency.redis import RedisIdempotencyStore
    from focal.memory.stores.postgres import PostgresMemoryStore
    from focal.profile.stores.postgres import PostgresProfileStore
    from focal.webhooks.dispatcher import WebhookDispatcher
    from focal.webhooks.postgres import PostgresWebhookStore

    database_url = settings.database.url
    redis_url = settings.redis.url
    missing = [
        name
        for name, value in ((DATABASE_URL_VARIABLE, database_url), (REDIS_URL_VARIABLE, redis_url))
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"storage=external needs {' and '.join(missing)} (or FOCAL_DATABASE__URL / FOCAL_REDIS__URL); "
            "use `focal serve` without them for the embedded servers, or --memory for in-memory stores"
        )
    assert database_url is not None and redis_url is not None

    llm, embedding = _build_providers(settings)  # configuration errors before any connection
    stack.push_async_callback(llm.aclose)
    stack.push_async_callback(embedding.aclose)
    pool = await create_pool_from_settings(settings.database, dsn=database_url)
    stack.push_async_callback(pool.close)
    await ensure_schema_at_head(pool)
    dimensions = settings.embedding.dimensions
    await check_embedding_dimensions(pool, dimensions)
    client = await create_redis_client(redis_url, settings.redis)
    stack.push_async_callback(close_redis_client, client)
    tool_executor = build_tool_executor(settings)
    stack.push_async_callback(tool_executor.aclose)
    redis_bounds: dict[str, Any] = {
        "key_prefix": settings.redis.key_prefix,
        "operation_timeout_seconds": settings.redis.operation_timeout_seconds,
        "max_concurrent_operations": settings.redis.max_connections if settings.redis.cluster else None,
    }
    audit_store = PostgresAuditStore(pool)
    webhook_store = PostgresWebhookStore(pool)
    dispatcher = WebhookDispatcher.from_settings(settings.webhooks, webhook_store, audit_store)
    stack.push_async_callback(dispatcher.aclose)

    return FocalServices(
        settings=settings,
        config_store=PostgresConfigStore(pool, embedding_dimensions=dimensions),
        memory_store=PostgresMemoryStore(pool, embedding_dimensions=dimensions),
        session_store=RedisSessionStore(
            client,
            hot_ttl_seconds=settings.redis.hot_ttl_seconds,
            max_age_seconds=settings.redis.max_age_seconds,
            key_prefix=settings.redis.key_prefix,
            max_session_bytes=settings.redis.max_session_bytes,
            operation_timeout_seconds=settings.redis.operation_timeout_seconds,
            max_concurrent_operations=settings.redis.max_connections if settings.redis.cluster else None,
        ),
        audit_store=audit_store,
        profile_store=PostgresProfileStore(pool),
        llm_provider=llm,
        embedding_provider=embedding,
        tool_executor=tool_executor,
        checks=ReadinessChecks(
            pool=pool,
            redis=client,
            embedding_dimensions=dimensions,
            redis_allow_eviction=settings.redis.allow_eviction,
        ),
        idempotency_store=RedisIdempotencyStore(client, **redis_bounds),
        conversation_locks=RedisConversationLocks(client, **redis_bounds),
        webhook_store=webhook_store,
        webhooks=dispatcher,
    )


async def build_services(settings: Settings) -> tuple[FocalServices, contextlib.AsyncExitStack]:
    """Build the services for ``settings.storage``; ``await stack.aclose()`` releases everything.

    On failure, whatever was opened is closed before the error propagates.
    """
    stack = contextlib.AsyncExitStack()
    try:
        if settings.storage is StorageBackend.MEMORY:
            services = build_memory_services(settings)
            stack.push_async_callback(services.llm_provider.aclose)
            stack.push_async_callback(services.embedding_provider.aclose)
            stack.push_async_callback(services.tool_executor.aclose)
            if services.webhooks is not None:
                stack.push_async_callback(services.webhooks.aclose)
        elif settings.storage is StorageBackend.EXTERNAL:
            services = await _build_external_services(settings, stack)
        else:
            raise ConfigurationError(
                "storage=embedded is started by `focal serve`, which runs the embedded servers and then "
                "connects to them as storage=external; set FOCAL_STORAGE=external with "
                f"{DATABASE_URL_VARIABLE} and {REDIS_URL_VARIABLE}, or FOCAL_STORAGE=memory"
            )
    except BaseException:
        await stack.aclose()
        raise
    _log.info(
        "services built", storage=settings.storage.value, embedding_model=services.embedding_provider.model_id
    )
    return services, stack


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[FocalServices]:
    """``build_services`` as an async context manager that closes everything on exit."""
    services, stack = await build_services(settings)
    async with stack:
        yield services
