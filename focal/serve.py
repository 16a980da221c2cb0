"""``focal serve``, ``focal demo`` and ``focal token``: run the HTTP API and mint tokens.

Where state lives is decided once, explicitly, and printed:

- ``--memory`` (or ``FOCAL_STORAGE=memory``): in-memory stores, nothing persists.
- ``FOCAL_DATABASE_URL`` and ``FOCAL_REDIS_URL`` (or ``FOCAL_DATABASE__URL`` / ``FOCAL_REDIS__URL``)
  set: those servers; nothing is started, and the schema must be at head (``focal db upgrade``).
- otherwise, the **embedded default**: PostgreSQL + pgvector and a Redis-compatible server run as
  child processes with their data in ``<data-dir>/postgres`` and ``<data-dir>/redis`` (default
  ``./.focal``); migrations are applied at start. Data survives a restart.

The JWT secret is ``FOCAL_AUTH__JWT_SECRET``; when it is unset the embedded default generates one
once and keeps it in ``<data-dir>/jwt_secret`` (mode 0600), ``--memory`` generates one per run, and
external servers refuse to start (several processes must share one secret). On the embedded
default a tenant id is kept in ``<data-dir>/default_tenant`` and a ready-to-use token is printed.

Shutdown (Ctrl-C or SIGTERM) stops uvicorn, closes pools and clients, then stops the child servers
in a ``finally``: no orphaned PostgreSQL or Redis is left behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID, uuid4

import typer
from pydantic import SecretStr

from focal.errors import ConfigurationError, FocalError
from focal.net import tcp_listener
from focal.settings import (
    DATABASE_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    Settings,
    StorageBackend,
)

if TYPE_CHECKING:
    from focal.db.embedded import EmbeddedPostgres, EmbeddedRedis

__all__ = ["register_commands"]

JWT_SECRET_FILE = "jwt_secret"
DEFAULT_TENANT_FILE = "default_tenant"
DEMO_CHAT_BODY = (
    '{"channel": "WEB", "user_channel_id": "demo-user", "message": "Hello! Can I return my order?"}'
)


class Mode(StrEnum):
    EMBEDDED = "embedded"
    EXTERNAL = "external"
    MEMORY = "memory"


@dataclass
class ServePlan:
    """What ``focal serve`` is about to do, decided before anything starts."""

    mode: Mode
    settings: Settings
    data_dir: Path
    tenant_id: UUID | None  # the tenant of the printed token (None: no token printed)


HostOption = Annotated[str | None, typer.Option("--host", help="Interface to bind (default 127.0.0.1)")]
PortOption = Annotated[int | None, typer.Option("--port", help="Port to listen on (default 8000)")]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded data directory (default: FOCAL_DATA_DIR or ./.focal)"),
]
MemoryOption = Annotated[bool, typer.Option("--memory", help="In-memory stores: nothing persists")]


# --- settings and files ----------------------------------------------------------------------


def load_settings(
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
    memory: bool = False,
) -> Settings:
    """Settings from the environment plus command-line overrides.

    ``Settings`` itself folds ``FOCAL_DATABASE_URL`` / ``FOCAL_REDIS_URL`` into the nested
    ``database.url`` / ``redis.url``.
    """
    settings = Settings.load()
    update: dict[str, Any] = {}
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    if server:
        update["server"] = settings.server.model_copy(update=server)
    if data_dir is not None:
        update["data_dir"] = data_dir
    if memory:
        update["storage"] = StorageBackend.MEMORY
    return settings.model_copy(update=update)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never readable by others, even for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")


def read_or_create_secret(data_dir: Path) -> SecretStr:
    """The data directory's JWT secret, generated (random, 384 bits) on first use."""
    path = data_dir / JWT_SECRET_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(48))
    return _read_secret(path)


def _read_secret(path: Path) -> SecretStr:
    value = path.read_text().strip()
    if not value:
        raise ConfigurationError(f"{path} is empty: delete it to generate a new JWT secret")
    return SecretStr(value)


def read_or_create_tenant(data_dir: Path) -> UUID:
    """The data directory's default tenant id, generated on first use."""
    path = data_dir / DEFAULT_TENANT_FILE
    if not path.exists():
        _write_private(path, str(uuid4()))
    try:
        return UUID(path.read_text().strip())
    except ValueError as exc:
        raise ConfigurationError(f"{path} does not hold a tenant UUID: fix or delete it") from exc


def plan_serve(settings: Settings) -> ServePlan:
    """Choose the backend and the JWT secret; raise ``ConfigurationError`` naming the fix."""
    data_dir = Path(settings.data_dir)
    database_url, redis_url = settings.database.url, settings.redis.url
    secret = settings.auth.jwt_secret
    if secret is not None and not secret.get_secret_value().strip():
        secret = None  # FOCAL_AUTH__JWT_SECRET="" (e.g. an unset compose variable) means unset
    if settings.storage is StorageBackend.MEMORY:
        mode = Mode.MEMORY
    elif database_url and redis_url:
        mode = Mode.EXTERNAL
    elif database_url or redis_url or settings.storage is StorageBackend.EXTERNAL:
        missing = DATABASE_URL_VARIABLE if not database_url else REDIS_URL_VARIABLE
        raise ConfigurationError(
            f"external servers need both {DATABASE_URL_VARIABLE} and {REDIS_URL_VARIABLE}: "
            f"{missing} is not set (unset both for the embedded servers, or use --memory)"
        )
    else:
        mode = Mode.EMBEDDED

    tenant_id: UUID | None = None
    if mode is Mode.EMBEDDED:
        if secret is None:
            secret = read_or_create_secret(data_dir)
        tenant_id = read_or_create_tenant(data_dir)
    elif mode is Mode.MEMORY:
        if secret is None:
            secret = SecretStr(secrets.token_urlsafe(48))
        tenant_id = uuid4()
    elif secret is None:
        raise ConfigurationError(
            "FOCAL_AUTH__JWT_SECRET is required with external servers: every Focal process sharing them "
            "must verify the same tokens"
        )
    storage = StorageBackend.MEMORY if mode is Mode.MEMORY else StorageBackend.EXTERNAL
    update = {"auth": settings.auth.model_copy(update={"jwt_secret": secret}), "storage": storage}
    return ServePlan(
        mode=mode, settings=settings.model_copy(update=update), data_dir=data_dir, tenant_id=tenant_id
    )


# --- running ---------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn (e.g. while the servers start): unwind through the ``finally``s."""
    raise KeyboardInterrupt


def run_serve(plan: ServePlan, *, demo: bool) -> None:
    """Start the embedded servers if needed, serve until interrupted, stop everything."""
    from focal.db.embedded import EmbeddedPostgres, EmbeddedRedis

    previous = signal.signal(signal.SIGTERM, _interrupt)
    children: list[EmbeddedPostgres | EmbeddedRedis] = []
    settings = plan.settings
    migrate_dsn: str | None = None
    try:
        if plan.mode is Mode.EMBEDDED:
            postgres = EmbeddedPostgres(plan.data_dir / "postgres")
            children.append(postgres)
            redis = EmbeddedRedis(plan.data_dir / "redis", persistence=True)
            children.append(redis)
            typer.echo(f"Starting the embedded PostgreSQL and Redis in {plan.data_dir} ...", err=True)
            postgres.start()
            redis.start()
            migrate_dsn = postgres.dsn
            settings = settings.model_copy(
                update={
                    "database": settings.database.model_copy(update={"url": postgres.dsn}),
                    "redis": settings.redis.model_copy(update={"url": redis.url}),
                }
            )
        asyncio.run(_serve_async(plan, settings, migrate_dsn=migrate_dsn, demo=demo))
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the (bounded) shutdown short and orphan a server.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for child in reversed(children):
                child.stop()  # a no-op for one that never started; SIGKILL after its grace period
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)


async def _serve_async(plan: ServePlan, settings: Settings, *, migrate_dsn: str | None, demo: bool) -> None:
    import uvicorn

    from focal.api.app import create_app
    from focal.bootstrap import build_services

    if migrate_dsn is not None:
        from focal.db.migrate import upgrade

        await upgrade(migrate_dsn, "head", embedding_dimensions=settings.embedding.dimensions)
    services, stack = await build_services(settings)
    async with stack:
        app = create_app(settings, services=services)
        demo_agent_id: UUID | None = None
        if demo:
            # The demo shop (focal.demo_shop) runs in this process on a free loopback port, for as
            # long as the API does; the demo agent's tools call it.
            from focal.demo import load_demo_agent
            from focal.demo_shop import DemoShop, serve_demo_shop

            shop = DemoShop()
            shop_url = await stack.enter_async_context(serve_demo_shop(shop))
            tenant_id = plan.tenant_id or uuid4()
            plan.tenant_id = tenant_id
            demo_agent_id = (await load_demo_agent(services, tenant_id, shop)).id
            typer.echo(f"Demo shop: {shop_url} (orders FD-10234, FD-10235, FD-10236)", err=True)
        host, port = settings.server.host, settings.server.port
        # Bind before printing anything: a port in use is a clear error, and --port 0 shows the real port.
        try:
            listener = tcp_listener(host, port)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        with listener:
            port = int(listener.getsockname()[1])
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
                server_header=False,
            )
            server = uvicorn.Server(config)
            _print_banner(plan, settings, demo_agent_id, port=port)
            await server.serve(sockets=[listener])
        if not server.started:
            raise ConfigurationError(f"the HTTP server could not start on {host}:{port} (see the log above)")


def _print_banner(plan: ServePlan, settings: Settings, demo_agent_id: UUID | None, *, port: int) -> None:
    from focal.api.auth import mint_token

    url = f"http://{settings.server.host}:{port}"
    where = {
        Mode.EMBEDDED: f"embedded PostgreSQL + Redis, data in {plan.data_dir}",
        Mode.EXTERNAL: "external PostgreSQL + Redis",
        Mode.MEMORY: "in-memory stores: nothing persists",
    }[plan.mode]
    lines = [f"Focal is serving on {url} ({where})"]
    secret = settings.auth.jwt_secret
    if plan.tenant_id is not None and secret is not None:
        token = mint_token(secret, plan.tenant_id, settings.auth.token_ttl_seconds)
        lines += [f"Tenant: {plan.tenant_id}", f"Token:  {token}"]
        lines.append(f'Try:    curl -H "Authorization: Bearer {token}" {url}/v1/agents')
        if demo_agent_id is not None:
            body = DEMO_CHAT_BODY
            lines.append(
                f"Chat:   curl -X POST {url}/v1/agents/{demo_agent_id}/chat "
                f'-H "Authorization: Bearer {token}" -H "Content-Type: application/json" '
                f"-d '{body}'"
            )
    else:
        lines.append("Mint a token with: focal token --tenant <tenant UUID>")
    typer.echo("\n".join(lines))


# --- commands ---------------------------------------------------------------------------------


def _fail(exc: FocalError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


def serve(
    host: HostOption = None,
    port: PortOption = None,
    data_dir: DataDirOption = None,
    memory: MemoryOption = False,
    demo: Annotated[bool, typer.Option("--demo", help="Load the sample agent at start-up")] = False,
) -> None:
    """Run the HTTP API (embedded PostgreSQL + Redis unless configured otherwise)."""
    try:
        plan = plan_serve(load_settings(host=host, port=port, data_dir=data_dir, memory=memory))
        run_serve(plan, demo=demo)
    except FocalError as exc:
        raise _fail(exc) from exc


def demo(
    host: HostOption = None,
    port: PortOption = None,
    data_dir: DataDirOption = None,
    memory: MemoryOption = False,
) -> None:
    """`focal serve --demo`: serve with the sample agent loaded, and print a curl line to chat with it."""
    serve(host=host, port=port, data_dir=data_dir, memory=memory, demo=True)


def token(
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="Tenant UUID (default: the data directory's default tenant)"),
    ] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Lifetime in seconds (default: settings)")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print a bearer token for a tenant, signed with the configured (or data directory's) secret."""
    try:
        settings = load_settings(data_dir=data_dir)
        directory = Path(settings.data_dir)
        secret = settings.auth.jwt_secret
        if secret is None:
            path = directory / JWT_SECRET_FILE
            if not path.exists():
                raise ConfigurationError(
                    f"no JWT secret: set FOCAL_AUTH__JWT_SECRET, or run `focal serve` once to generate {path}"
                )
            secret = _read_secret(path)
        if tenant is None:
            if not (directory / DEFAULT_TENANT_FILE).exists():
                raise ConfigurationError("no --tenant given and no default tenant in the data directory")
            tenant_id = read_or_create_tenant(directory)
        else:
            try:
                tenant_id = UUID(tenant)
            except ValueError:
                raise typer.BadParameter(f"{tenant!r} is not a UUID", param_hint="--tenant") from None
        lifetime = ttl if ttl is not None else settings.auth.token_ttl_seconds
        if lifetime <= 0:
            raise typer.BadParameter("must be positive", param_hint="--ttl")
        from focal.api.auth import mint_token

        typer.echo(mint_token(secret, tenant_id, lifetime))
    except FocalError as exc:
        raise _fail(exc) from exc


def register_commands(app: typer.Typer) -> None:
    """Add ``serve``, ``demo`` and ``token`` to the ``focal`` command."""
    app.command("serve")(serve)
    app.command("demo")(demo)
    app.command("token")(token)
