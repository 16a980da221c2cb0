"""The FastAPI application: ``create_app(settings, services=None)``.

Without ``services`` the lifespan builds them from ``settings`` (``focal.bootstrap``) and closes
everything on shutdown. Tests and ``focal serve`` pass ready-made services, which the app then
uses but does not close (whoever built them does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from focal.api.errors import install_error_handlers
from focal.api.idempotency import IdempotencyMiddleware
from focal.api.middleware import (
    BodySizeLimitMiddleware,
    HttpMetrics,
    RequestContextMiddleware,
    RequestTextMiddleware,
)
from focal.api.openapi import install_openapi
from focal.api.routes import (
    agents,
    behaviour,
    memory,
    ops,
    profiles,
    scenarios,
    session_control,
    session_variables,
    sessions,
    tool_definitions,
    tools,
    webhooks,
)
from focal.api.routes.chat import router as chat_router
from focal.bootstrap import FocalServices, build_services
from focal.errors import ConfigurationError
from focal.settings import Settings

__all__ = ["create_app"]

API_DESCRIPTION = """\
Focal: a multi-tenant runtime for business-aligned conversational agents.

Every `/v1` request carries `Authorization: Bearer <JWT>` (HS256, claims `tenant_id` and `exp`);
the tenant comes from the token only. Errors share one envelope:
`{"error": {"code", "message", "details"}}`.
"""


@asynccontextmanager
async def _webhook_sweep(services: FocalServices) -> AsyncIterator[None]:
    """While the app serves: every process sweeps for webhook deliveries left by a dead process."""
    dispatcher = services.webhooks
    if dispatcher is None:
        yield
        return
    dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop_sweeping()


def create_app(settings: Settings, *, services: FocalServices | None = None) -> FastAPI:
    """The ASGI app. Raises ``ConfigurationError`` when no JWT secret is configured."""
    if settings.auth.jwt_secret is None or not settings.auth.jwt_secret.get_secret_value():
        raise ConfigurationError(
            "no JWT secret: set FOCAL_AUTH__JWT_SECRET (`focal serve` generates one for the embedded default)"
        )
    if services is not None and services.settings.auth.jwt_secret != settings.auth.jwt_secret:
        raise ConfigurationError("the services were built with another JWT secret than the app's settings")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            async with _webhook_sweep(services):
                yield
            return
        built, stack = await build_services(settings)
        app.state.services = built
        async with stack, _webhook_sweep(built):
            yield

    app = FastAPI(
        title="Focal",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # No 307 from "/v1/agents/" to "/v1/agents": Starlette builds its Location from the Host
        # header (a client could make us redirect anywhere). A path is either a route or a 404.
        redirect_slashes=False,
    )
    if services is not None:  # usable even by clients that do not run the lifespan
        app.state.services = services
    app.state.settings = settings
    metrics = HttpMetrics(CollectorRegistry(auto_describe=True))
    app.state.metrics = metrics

    install_error_handlers(app)
    install_openapi(app)
    # Added innermost first: the request context (ids, access log, metrics, the last-resort 500)
    # wraps the size limit, which wraps the text check (so the body that one reads is bounded),
    # which wraps the idempotency keys (so a refused body never reserves a key).
    app.add_middleware(IdempotencyMiddleware, settings=settings.idempotency)
    app.add_middleware(RequestTextMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    documentation = {
        app.openapi_url,
        app.docs_url,
        app.docs_url and app.swagger_ui_oauth2_redirect_url,
        app.redoc_url,
    }
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        fixed_paths=frozenset(path for path in documentation if path),
    )

    app.include_router(ops.router)
    app.include_router(agents.router)
    app.include_router(behaviour.router)
    app.include_router(scenarios.router)
    app.include_router(tools.router)
    app.include_router(tool_definitions.router)
    app.include_router(chat_router)
    app.include_router(sessions.router)
    app.include_router(session_variables.router)
    app.include_router(session_control.router)
    app.include_router(webhooks.router)
    app.include_router(profiles.router)
    app.include_router(memory.router)
    return app
