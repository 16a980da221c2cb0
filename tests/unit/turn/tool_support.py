"""Builders shared by the tool and variable turn tests: tool definitions and activations (the
loopback tool server and the executor are fixtures in ``conftest.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from focal.alignment.models import Agent, ToolActivation, ToolDefinition
from focal.tools.models import HttpToolSpec

API_KEY = "k3y-s3cr3t-9f2c41"

ORDER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"order_number": {"type": "string", "pattern": "^FD-[0-9]{5}$"}},
    "required": ["order_number"],
}


def lookup_order(tenant_id: Any, url: str, **fields: Any) -> ToolDefinition:
    values: dict[str, Any] = {
        "description": "Find an order by its number.",
        "parameters": ORDER_PARAMETERS,
        "http": HttpToolSpec(url_template=f"{url}/orders/{{order_number}}", secret_header="X-Api-Key"),
        "secret": SecretStr(API_KEY),
    }
    values.update(fields)
    return ToolDefinition(tenant_id=tenant_id, name=values.pop("name", "lookup_order"), **values)


def http_tool(
    tenant_id: Any, name: str, url: str, *, method: str = "GET", timeout: float = 5.0, **fields: Any
) -> ToolDefinition:
    return ToolDefinition(
        tenant_id=tenant_id,
        name=name,
        parameters=fields.pop("parameters", {"type": "object", "properties": {}}),
        http=HttpToolSpec(
            method=method, url_template=url, timeout_seconds=timeout, secret_header="X-Api-Key"
        ),
        secret=SecretStr(API_KEY),
        **fields,
    )


async def activate(store: Any, agent: Agent, *definitions: ToolDefinition, enabled: bool = True) -> None:
    for definition in definitions:
        if await store.get_tool_definition(definition.tenant_id, definition.name) is None:
            await store.save_tool_definition(definition)
        await store.save_tool_activation(
            ToolActivation(
                tenant_id=agent.tenant_id, agent_id=agent.id, tool_id=definition.name, enabled=enabled
            )
        )
