"""Operational endpoints, outside ``/v1`` and without authentication: health, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from focal.api.deps import ServicesDep
from focal.api.errors import error_response

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (says nothing about its dependencies: see ``/ready``)."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={503: {"description": "a dependency is down; the failing checks are named"}},
)
async def ready(services: ServicesDep) -> Any:
    """200 when PostgreSQL, the schema version and Redis are all OK, else 503 naming what failed."""
    results = await services.checks.run()
    failing = {name: result for name, result in results.items() if result != "ok"}
    if failing:
        message = "; ".join(f"{name}: {result}" for name, result in failing.items())
        return error_response(503, "not_ready", f"not ready: {message}", {"checks": results})
    return JSONResponse({"status": "ready", "checks": results})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format: request counts and latencies by route template and status."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
