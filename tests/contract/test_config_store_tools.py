"""ConfigStore contract: tool definitions (tenant-wide, keyed by name, soft-deleted, revisioned,
with a write-only secret)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest
from pydantic import SecretStr

from focal.alignment.models import ToolDefinition
from focal.alignment.stores.config_store import ConfigStore
from focal.errors import ConflictError, InvalidDataError, NotFoundError, StaleRevisionError
from focal.tools.models import HttpToolSpec
from tests.contract.config_backends import config_store_fixture  # noqa: F401 - the parametrised fixture
from tests.support import new_tenant

SECRET = "tok-3f9a-very-secret"


def definition(tenant_id: Any, name: str = "lookup_order", **fields: Any) -> ToolDefinition:
    values: dict[str, Any] = {
        "description": "Find an order by its number.",
        "parameters": {
            "type": "object",
            "properties": {"order_number": {"type": "string", "pattern": "^FD-[0-9]{5}$"}},
            "required": ["order_number"],
        },
        "http": HttpToolSpec(
            url_template="http://shop.example/orders/{order_number}", secret_header="X-Api-Key"
        ),
        "secret": SecretStr(SECRET),
    }
    values.update(fields)
    return ToolDefinition(tenant_id=tenant_id, name=name, **values)


async def test_save_get_list_and_the_secret_round_trip(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    lookup = definition(tenant)
    label = definition(
        tenant,
        "create_label",
        parameters={"type": "object", "properties": {}},
        http=HttpToolSpec(method="POST", url_template="http://shop.example/returns"),
        secret=None,
    )
    await config_store.save_tool_definition(lookup)
    await config_store.save_tool_definition(label)

    stored = await config_store.get_tool_definition(tenant, "lookup_order")
    assert stored is not None and stored.id == lookup.id and stored.revision == 1
    assert stored.secret is not None and stored.secret.get_secret_value() == SECRET
    assert stored.http == lookup.http and stored.parameters == lookup.parameters
    assert SECRET not in repr(stored) and SECRET not in stored.model_dump_json()
    assert [d.name for d in await config_store.get_tool_definitions(tenant)] == [
        "create_label",
        "lookup_order",
    ]
    only = await config_store.get_tool_definitions(tenant, names=["lookup_order", "unknown"])
    assert [d.name for d in only] == ["lookup_order"]
    no_secret = await config_store.get_tool_definition(tenant, "create_label")
    assert no_secret is not None and no_secret.secret is None

    # clearing the secret removes it; setting it again stores the new value
    await config_store.save_tool_definition(stored.model_copy(update={"secret": None}))
    cleared = await config_store.get_tool_definition(tenant, "lookup_order")
    assert cleared is not None and cleared.secret is None and cleared.revision == 2
    await config_store.save_tool_definition(cleared.model_copy(update={"secret": SecretStr("other")}))
    again = await config_store.get_tool_definition(tenant, "lookup_order")
    assert again is not None and again.secret is not None and again.secret.get_secret_value() == "other"


async def test_tenants_are_isolated(config_store: ConfigStore) -> None:
    mine, theirs = new_tenant(), new_tenant()
    own = definition(mine)
    await config_store.save_tool_definition(own)
    assert await config_store.get_tool_definition(theirs, "lookup_order") is None
    assert await config_store.get_tool_definitions(theirs) == []
    assert await config_store.get_tool_definitions(theirs, names=["lookup_order"]) == []
    assert await config_store.delete_tool_definition(theirs, "lookup_order") is False
    hijack = own.model_copy(update={"tenant_id": theirs, "description": "hijacked"})
    with pytest.raises(ConflictError):  # another tenant's id
        await config_store.save_tool_definition(hijack)
    with pytest.raises(NotFoundError):
        await config_store.save_tool_definition(hijack, expected_revision=1)
    # the same name in another tenant is another tool
    await config_store.save_tool_definition(definition(theirs, description="theirs"))
    stored = await config_store.get_tool_definition(mine, "lookup_order")
    assert stored is not None and stored.description == "Find an order by its number."
    theirs_stored = await config_store.get_tool_definition(theirs, "lookup_order")
    assert theirs_stored is not None and theirs_stored.id != own.id


async def test_names_are_unique_among_live_definitions_and_never_change(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    first = definition(tenant)
    await config_store.save_tool_definition(first)
    with pytest.raises(ConflictError):
        await config_store.save_tool_definition(definition(tenant))
    with pytest.raises(ConflictError):
        await config_store.save_tool_definition(first.model_copy(update={"name": "renamed"}))
    assert [d.id for d in await config_store.get_tool_definitions(tenant)] == [first.id]

    assert await config_store.delete_tool_definition(tenant, "lookup_order") is True
    assert await config_store.delete_tool_definition(tenant, "lookup_order") is False
    assert await config_store.get_tool_definition(tenant, "lookup_order") is None
    with pytest.raises(NotFoundError):  # deleted stays deleted
        await config_store.save_tool_definition(first)
    second = definition(tenant)  # the name is free again
    await config_store.save_tool_definition(second)
    stored = await config_store.get_tool_definition(tenant, "lookup_order")
    assert stored is not None and stored.id == second.id


async def test_revisions(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    tool = definition(tenant)
    await config_store.save_tool_definition(tool)
    await config_store.save_tool_definition(
        tool.model_copy(update={"description": "two"}), expected_revision=1
    )
    with pytest.raises(StaleRevisionError):
        await config_store.save_tool_definition(
            tool.model_copy(update={"description": "stale"}), expected_revision=1
        )
    stored = await config_store.get_tool_definition(tenant, tool.name)
    assert stored is not None and (stored.revision, stored.description) == (2, "two")

    results = await asyncio.gather(
        *(
            config_store.save_tool_definition(
                tool.model_copy(update={"description": f"w{n}"}), expected_revision=2
            )
            for n in range(6)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, StaleRevisionError) for r in results if isinstance(r, BaseException))
    with pytest.raises(NotFoundError):  # a conditional save never creates
        await config_store.save_tool_definition(definition(tenant, "never_saved"), expected_revision=1)


@pytest.mark.parametrize(
    "bad",
    [
        {"secret": SecretStr("nul\x00inside")},
        {"description": "a\x00b"},
        {"deleted_at": "2024-01-01T00:00:00Z"},
    ],
)
async def test_unstorable_definitions_are_refused_and_change_nothing(
    config_store: ConfigStore, bad: dict[str, Any]
) -> None:
    tenant = new_tenant()
    tool = definition(tenant).model_copy(update=bad)
    with pytest.raises(InvalidDataError) as refused:
        await config_store.save_tool_definition(tool)
    assert "nul\x00inside" not in str(refused.value)
    assert await config_store.get_tool_definitions(tenant) == []


def test_the_model_refuses_inconsistent_definitions() -> None:
    tenant = uuid4()
    with pytest.raises(ValueError, match="not declared parameters"):
        definition(tenant, parameters={"type": "object", "properties": {}})
    with pytest.raises(ValueError, match="secret_header"):
        definition(tenant, http=HttpToolSpec(url_template="http://shop.example/x"))
    with pytest.raises(ValueError, match="type"):
        definition(tenant, parameters={"type": "string"})
    with pytest.raises(ValueError):
        definition(tenant, name="Bad-Name")


async def test_variable_sources_round_trip(config_store: ConfigStore) -> None:
    from focal.alignment.models import VariableUpdatePolicy
    from tests.contract.config_backends import saved_agent, variable

    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    stored_variable = variable(
        owner,
        extraction_pattern=r"FD-(\d{5})",
        extract_with_llm=True,
        cache_ttl_seconds=300,
        persist_to_profile=True,
        resolver_tool_id="lookup_order",
        update_policy=VariableUpdatePolicy.MERGE,
    )
    await config_store.save_variable(stored_variable)
    read = await config_store.get_variable(tenant, stored_variable.id)
    assert read is not None
    assert (
        read.extraction_pattern,
        read.extract_with_llm,
        read.cache_ttl_seconds,
        read.persist_to_profile,
    ) == (
        r"FD-(\d{5})",
        True,
        300,
        True,
    )
    with pytest.raises(ValueError):
        variable(owner, extraction_pattern="(unclosed")
