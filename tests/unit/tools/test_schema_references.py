"""References in tool parameter schemas: within the schema only, and never fetched.

jsonschema resolves a ``$ref`` to a URL by downloading it, with a blocking ``urlopen`` and no
timeout: a tenant's schema could make Focal call any host (outside ``FOCAL_TOOLS__ALLOWED_HOSTS``)
and stall the process's event loop on every call of the tool.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from focal.errors import InvalidDataError
from focal.tools.schema import argument_errors, check_parameters_schema
from tests.loopback import LoopbackServer


def _schema(reference: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"code": reference},
        "$defs": {"code": {"type": "string"}},
    }


@pytest.mark.parametrize(
    "reference",
    [
        {"$ref": "https://schemas.example.com/code.json"},
        {"$ref": "code.json"},  # relative to the (absent) base URI: a download too
        {"$dynamicRef": "https://schemas.example.com/code.json#meta"},
    ],
)
def test_a_reference_outside_the_schema_is_refused_when_written(reference: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataError, match="references within the schema"):
        check_parameters_schema(_schema(reference))


def test_a_reference_within_the_schema_is_accepted_and_used() -> None:
    schema = _schema({"$ref": "#/$defs/code"})
    check_parameters_schema(schema)
    assert argument_errors(schema, {"code": "A-1"}) == []
    assert argument_errors(schema, {"code": 7}) == ["code: 7 is not of type 'string'"]


def test_a_stored_schema_with_a_remote_reference_is_never_fetched() -> None:
    """A schema written before the check: validating a call makes no request, and the call is
    refused with a reason instead of failing the turn."""
    hits: list[str] = []
    lock = threading.Lock()

    async def served(request: Request) -> JSONResponse:
        with lock:
            hits.append(request.url.path)
        return JSONResponse({"type": "string"})

    with LoopbackServer(Starlette(routes=[Route("/code.json", served)])) as server:
        schema = _schema({"$ref": f"{server.url}/code.json"})
        errors = argument_errors(schema, {"code": 7})
    assert hits == []
    assert len(errors) == 1 and "cannot be resolved" in errors[0]
