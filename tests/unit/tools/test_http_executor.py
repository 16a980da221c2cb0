"""``HttpToolExecutor`` against real loopback HTTP servers (its real httpx client, no mocks).

Two servers: the tool's own ("shop") and another host ("elsewhere"), so redirects and secrets can
be checked across origins. Both record every request they receive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from focal.errors import InvalidDataError
from focal.tools.http import HttpToolExecutor, HttpToolOptions, expand_url, host_allowed
from focal.tools.models import HttpToolSpec
from focal.tools.schema import argument_errors, check_parameters_schema
from tests.loopback import LoopbackServer

SECRET = "s3cr3t-token-ABC"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()

    def app(self, redirect_target: str = "") -> Starlette:
        async def echo(request: Request) -> Response:
            body = await request.body()
            seen = {
                "method": request.method,
                "path": request.url.path,
                "query": list(request.query_params.multi_items()),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode(),
            }
            self.requests.append(seen)
            return JSONResponse({"ok": True, "path": request.url.path, "query": seen["query"]})

        async def slow(request: Request) -> Response:
            self.requests.append({"path": request.url.path})
            await asyncio.sleep(2)
            return PlainTextResponse("late")

        async def big(request: Request) -> Response:
            return PlainTextResponse("x" * 5000)

        async def echo_secret(request: Request) -> Response:
            return PlainTextResponse(f"you sent {request.headers.get('x-api-key')}", status_code=403)

        async def echo_secret_json(request: Request) -> Response:
            # as PHP's json_encode writes it: "/" escaped as "\/", quotes and backslashes escaped
            text = json.dumps({"you_sent": request.headers.get("x-api-key")}).replace("/", "\\/")
            return Response(text, media_type="application/json")

        async def status(request: Request) -> Response:
            return JSONResponse({"error": "not found"}, status_code=int(request.path_params["code"]))

        async def same_host(request: Request) -> Response:
            return RedirectResponse("/echo/redirected", status_code=302)

        async def other_host(request: Request) -> Response:
            return RedirectResponse(f"{redirect_target}/echo/stolen", status_code=302)

        return Starlette(
            routes=[
                Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
                Route("/slow", slow),
                Route("/big", big),
                Route("/echo-secret", echo_secret),
                Route("/echo-secret-json", echo_secret_json),
                Route("/status/{code:int}", status),
                Route("/redirect/same", same_host),
                Route("/redirect/other", other_host),
            ]
        )


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LoopbackServer, Recorder, LoopbackServer, Recorder]]:
    other_recorder = Recorder()
    with LoopbackServer(other_recorder.app()) as other:
        shop_recorder = Recorder()
        # "localhost" for the shop and 127.0.0.1 for the other: two different hosts on one machine.
        with LoopbackServer(shop_recorder.app(redirect_target=other.url)) as shop:
            yield shop, shop_recorder, other, other_recorder


@pytest.fixture
def shop(servers: Any) -> tuple[str, Recorder]:
    server, recorder = servers[0], servers[1]
    recorder.requests.clear()
    return f"http://localhost:{server.port}", recorder


@pytest.fixture
def other(servers: Any) -> Recorder:
    servers[3].requests.clear()
    recorder: Recorder = servers[3]
    return recorder


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as instance:
        yield instance


def spec(url: str, **fields: Any) -> HttpToolSpec:
    return HttpToolSpec(url_template=url, **fields)


async def test_get_fills_the_path_and_puts_the_rest_in_the_query(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, recorder = shop
    executor = HttpToolExecutor(client)
    outcome = await executor.execute(
        "lookup_order",
        spec(f"{base}/echo/orders/{{order_id}}", headers={"X-Shop": "1"}),
        {"order_id": "FD 1/2", "expand": ["items", "tracking"], "limit": 3},
    )

    assert outcome.status == "ok" and outcome.http_status == 200
    assert outcome.result == {
        "ok": True,
        "path": "/echo/orders/FD 1/2",
        "query": [["expand", "items"], ["expand", "tracking"], ["limit", "3"]],
    }
    (seen,) = recorder.requests
    assert seen["method"] == "GET" and seen["headers"]["x-shop"] == "1" and seen["body"] == ""


async def test_post_sends_the_rest_as_a_json_body_with_the_secret(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, recorder = shop
    outcome = await HttpToolExecutor(client).execute(
        "create_label",
        spec(f"{base}/echo/orders/{{order_id}}/labels", method="POST", secret_header="X-Api-Key"),
        {"order_id": "FD-1", "reason": "damaged"},
        secret=SECRET,
    )
    assert outcome.status == "ok"
    (seen,) = recorder.requests
    assert seen["path"] == "/echo/orders/FD-1/labels"
    assert seen["body"] == '{"reason":"damaged"}' or seen["body"] == '{"reason": "damaged"}'
    assert seen["headers"]["x-api-key"] == SECRET


async def test_a_slow_tool_times_out(shop: tuple[str, Recorder], client: httpx.AsyncClient) -> None:
    base, _ = shop
    outcome = await HttpToolExecutor(client).execute("slow", spec(f"{base}/slow", timeout_seconds=0.2), {})
    assert outcome.status == "timeout"
    assert outcome.latency_ms < 1500


async def test_error_statuses_are_errors_with_the_body(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, _ = shop
    outcome = await HttpToolExecutor(client).execute("status", spec(f"{base}/status/404"), {})
    assert (outcome.status, outcome.http_status, outcome.error) == ("error", 404, "HTTP 404")
    assert outcome.result == {"error": "not found"}


async def test_a_body_over_the_cap_is_refused(shop: tuple[str, Recorder], client: httpx.AsyncClient) -> None:
    base, _ = shop
    executor = HttpToolExecutor(client, HttpToolOptions(max_response_bytes=1000))
    outcome = await executor.execute("big", spec(f"{base}/big"), {})
    assert outcome.status == "error" and "1000-byte limit" in (outcome.error or "")


async def test_same_host_redirects_are_followed_with_the_secret(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, recorder = shop
    outcome = await HttpToolExecutor(client).execute(
        "r", spec(f"{base}/redirect/same", secret_header="X-Api-Key"), {}, secret=SECRET
    )
    assert outcome.status == "ok"
    assert [r["path"] for r in recorder.requests] == ["/echo/redirected"]
    assert recorder.requests[0]["headers"]["x-api-key"] == SECRET


async def test_a_redirect_to_another_host_is_refused_and_the_secret_stays_home(
    shop: tuple[str, Recorder], other: Recorder, client: httpx.AsyncClient
) -> None:
    base, _ = shop
    outcome = await HttpToolExecutor(client).execute(
        "r", spec(f"{base}/redirect/other", secret_header="X-Api-Key"), {}, secret=SECRET
    )
    assert outcome.status == "error" and "redirect to another host refused" in (outcome.error or "")
    assert other.requests == []


async def test_hosts_off_the_allow_list_are_never_called(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, recorder = shop
    executor = HttpToolExecutor(client, HttpToolOptions(allowed_hosts=["shop.example.com"]))
    outcome = await executor.execute("lookup", spec(f"{base}/echo/x"), {})
    assert outcome.status == "error" and "not on the allowed list" in outcome.content
    assert recorder.requests == []


async def test_an_echoed_secret_is_redacted_and_never_logged(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, _ = shop
    with capture_logs() as logs:
        outcome = await HttpToolExecutor(client).execute(
            "leaky", spec(f"{base}/echo-secret", secret_header="X-Api-Key"), {}, secret=SECRET
        )
    assert outcome.status == "error"
    assert SECRET not in outcome.model_dump_json()
    assert "[redacted]" in outcome.content
    assert logs and SECRET not in repr(logs)


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("shop.example.com", ["*"], True),
        ("shop.example.com", ["shop.example.com"], True),
        ("SHOP.example.com", ["shop.example.com"], True),
        ("api.shop.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], True),
        ("evilexample.com", ["*.example.com"], False),
        ("other.org", ["shop.example.com"], False),
        ("other.org", [], False),
    ],
)
def test_host_allow_list(host: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


def test_expand_url_encodes_and_leaves_the_rest() -> None:
    url, rest = expand_url("https://x.test/a/{id}?v={v}", {"id": "a b/c", "v": 2, "other": True})
    assert url == "https://x.test/a/a%20b%2Fc?v=2"
    assert rest == {"other": True}


@pytest.mark.parametrize(
    "template",
    [
        "https://{host}/orders",
        "{scheme}://shop.test/orders",
        "https://shop.test:{port}/orders",
        "ftp://shop.test/orders",
        "/orders/{id}",
        "https://shop.test/{not-a-name}",
        "https://shop.test/{unclosed",
    ],
)
def test_url_templates_cannot_choose_the_origin(template: str) -> None:
    with pytest.raises(ValueError):
        HttpToolSpec(url_template=template)


def test_reserved_headers_are_refused() -> None:
    with pytest.raises(ValueError, match="set by Focal"):
        HttpToolSpec(url_template="https://shop.test/x", headers={"Host": "evil.test"})


def test_parameter_schemas_are_checked() -> None:
    check_parameters_schema({"type": "object", "properties": {"a": {"type": "string"}}})
    for bad in ({"type": "string"}, [], {"type": "object", "properties": {"a": {"type": 7}}}):
        with pytest.raises(InvalidDataError):
            check_parameters_schema(bad)


def test_argument_errors_name_the_field() -> None:
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^FD-[0-9]+$"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }
    assert argument_errors(schema, {"order_id": "FD-1"}) == []
    assert argument_errors(schema, {"order_id": "nope"})[0].startswith("order_id: ")
    assert argument_errors(schema, {}) == ["(arguments): 'order_id' is a required property"]
    assert argument_errors(schema, "not an object")


@pytest.mark.parametrize(
    ("template", "arguments"),
    [
        ("/echo/users/{user_id}/orders", {"user_id": ".."}),
        ("/echo/users/{user_id}/orders", {"user_id": "."}),
        ("/echo/users/.{a}/orders", {"a": "."}),
        ("/echo/users/{a}{b}/orders", {"a": ".", "b": "."}),
        ("/echo/users/{user_id}/orders", {"user_id": ""}),
        ("/echo/users/{user_id}", {}),
    ],
)
async def test_an_argument_cannot_climb_out_of_its_path_segment(
    shop: tuple[str, Recorder], client: httpx.AsyncClient, template: str, arguments: dict[str, str]
) -> None:
    """A placeholder filled with "." or ".." would be a dot segment, which the client resolves, and
    an empty one would call the path above (``/users/`` for ``/users/{id}``, often a list): a model
    (or a customer talking it into it) would reach another path of the tool's host, secret header
    included. Such a call is refused without being sent."""
    base, recorder = shop
    outcome = await HttpToolExecutor(client).execute(
        "orders", spec(f"{base}{template}", secret_header="X-Api-Key"), arguments, secret=SECRET
    )
    assert outcome.status == "invalid" and "path segment" in (outcome.error or "")
    assert recorder.requests == []


async def test_dots_inside_a_path_argument_are_sent(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    base, recorder = shop
    outcome = await HttpToolExecutor(client).execute(
        "files", spec(f"{base}/echo/files/{{name}}/{{other}}"), {"name": "...", "other": "..a"}
    )
    assert outcome.status == "ok"
    assert [r["path"] for r in recorder.requests] == ["/echo/files/.../..a"]


async def test_the_url_templates_own_query_is_sent_with_the_other_arguments(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    """httpx replaces a URL's query string when given ``params``: the template's query (fixed
    values and placeholders) must still reach the tool, before the other arguments."""
    base, recorder = shop
    template = f"{base}/echo/search?format=json&q={{q}}"
    for arguments, expected in [
        ({"q": "kettle"}, [("format", "json"), ("q", "kettle")]),
        (
            {"q": "a&b", "page": 2, "tags": ["x", "y"]},
            [("format", "json"), ("q", "a&b"), ("page", "2"), ("tags", "x"), ("tags", "y")],
        ),
    ]:
        recorder.requests.clear()
        outcome = await HttpToolExecutor(client).execute("search", spec(template), arguments)
        assert outcome.status == "ok"
        (seen,) = recorder.requests
        assert seen["query"] == expected


async def test_an_argument_cannot_override_the_templates_fixed_query(
    shop: tuple[str, Recorder], client: httpx.AsyncClient
) -> None:
    """The operator fixed ``customer=42`` in the URL; a model inventing a ``customer`` argument
    (the schema does not forbid extra properties) must not send a second value servers may read."""
    base, recorder = shop
    outcome = await HttpToolExecutor(client).execute(
        "orders", spec(f"{base}/echo/orders?customer=42"), {"customer": "43"}
    )
    assert outcome.status == "invalid" and "customer" in (outcome.error or "")
    assert recorder.requests == []


@pytest.mark.parametrize("secret", ['k3y/with"quote\\and/slash==', "abc/def+ghi=="])
async def test_a_secret_echoed_in_json_escapes_is_redacted_in_what_the_model_reads(
    shop: tuple[str, Recorder], client: httpx.AsyncClient, secret: str
) -> None:
    """The model reads ``content``, the body as the server wrote it: the secret may be there
    JSON-escaped (``\\"``, ``\\\\``, and ``\\/`` as PHP writes a base64 key's slashes)."""
    base, _ = shop
    outcome = await HttpToolExecutor(client).execute(
        "leaky", spec(f"{base}/echo-secret-json", secret_header="X-Api-Key"), {}, secret=secret
    )
    assert outcome.status == "ok" and outcome.result == {"you_sent": "[redacted]"}
    escaped = json.dumps(secret)[1:-1]
    for form in (secret, escaped, escaped.replace("/", "\\/")):
        assert form not in outcome.content
    assert "[redacted]" in outcome.content


@pytest.mark.parametrize("secret", ["ok", "1", "null", "status", "json"])
async def test_a_short_secret_does_not_break_the_outcome(
    shop: tuple[str, Recorder], client: httpx.AsyncClient, secret: str
) -> None:
    """Redaction replaces the secret in the values the server sent, never in the outcome's own
    field names, statuses or numbers (a secret "ok" or "1" used to make the call fail)."""
    base, _ = shop
    outcome = await HttpToolExecutor(client).execute(
        "leaky", spec(f"{base}/echo-secret-json", secret_header="X-Api-Key"), {}, secret=secret
    )
    assert outcome.status == "ok" and outcome.http_status == 200
    assert outcome.result == {"you_sent": "[redacted]"}
