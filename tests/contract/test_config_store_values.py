"""ConfigStore contract, values: JSON fields read back with their types on every backend; what no
backend can store is an ``InvalidDataError`` before any write; name clashes read alike.
"""

from __future__ import annotations

import math
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from focal.alignment.stores.config_store import ConfigStore
from focal.errors import ConflictError, InvalidDataError
from tests.contract.config_backends import (
    activation,
    agent,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    plan,
    rule,
    saved_agent,
    scenario,
    template,
    variable,
)
from tests.contract.storable_values import (
    LONE_SURROGATE,
    NUL,
    TYPED_JSON,
    UNSTORABLE_TIMESTAMPS,
    nested,
    typed,
)
from tests.support import new_tenant, unit_vector

DRIVER_WORDS = ("duplicate key", "violates", "DETAIL", "Key (", "Error:")


# --- JSON keeps its types ------------------------------------------------------------------------


async def test_json_fields_keep_their_types(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    var = variable(owner, default_value=TYPED_JSON)
    tool = activation(owner, policy_overrides=TYPED_JSON)
    migration = plan(tenant, transformation_map={"step": TYPED_JSON}, anchor_policies=TYPED_JSON)
    await config_store.save_variable(var)
    await config_store.save_tool_activation(tool)
    await config_store.save_migration_plan(migration)

    by_id = await config_store.get_variable(tenant, var.id)
    by_name = await config_store.get_variable_by_name(tenant, owner.id, var.name)
    [listed] = await config_store.get_variables(tenant, owner.id)
    for read in (by_id, by_name, listed):
        assert read is not None and typed(read.default_value) == typed(TYPED_JSON)
    one = await config_store.get_tool_activation(tenant, owner.id, tool.tool_id)
    [every] = await config_store.get_tool_activations(tenant, owner.id)
    for read_tool in (one, every):
        assert read_tool is not None and typed(read_tool.policy_overrides) == typed(TYPED_JSON)
    got = await config_store.get_migration_plan(tenant, migration.id)
    [plans] = await config_store.list_migration_plans(tenant)
    for read_plan in (got, plans):
        assert read_plan is not None
        assert typed(read_plan.transformation_map) == typed({"step": TYPED_JSON})
        assert typed(read_plan.anchor_policies) == typed(TYPED_JSON)


@pytest.mark.parametrize("value", [1e16, 1e300, 10**16, 2.0, [1e16, 10**16]])
async def test_a_variable_default_keeps_its_type(config_store: ConfigStore, value: Any) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    var = variable(owner, default_value=value)
    await config_store.save_variable(var)
    stored = await config_store.get_variable(tenant, var.id)
    assert stored is not None and typed(stored.default_value) == typed(value)


# --- unstorable values: InvalidDataError, nothing written -----------------------------------------


def _bad_models(owner: Any) -> dict[str, BaseModel]:
    """One unstorable model per save method; model_copy(update=...) skips validation."""
    tenant = owner.tenant_id
    return {
        "agent-surrogate-name": agent(tenant).model_copy(update={"name": f"a{LONE_SURROGATE}"}),
        "agent-surrogate-prompt": agent(tenant).model_copy(update={"system_prompt": LONE_SURROGATE}),
        "agent-created-year-1": agent(tenant).model_copy(
            update={"created_at": UNSTORABLE_TIMESTAMPS["year-1-with-offset"]}
        ),
        "agent-created-year-9999": agent(tenant).model_copy(
            update={"created_at": UNSTORABLE_TIMESTAMPS["year-9999-with-offset"]}
        ),
        "rule-surrogate-condition": rule(owner).model_copy(update={"condition_text": f"x{LONE_SURROGATE}"}),
        "scenario-surrogate-tag": scenario(owner).model_copy(update={"tags": ["ok", LONE_SURROGATE]}),
        "template-surrogate-text": template(owner).model_copy(update={"text": f"Hi {LONE_SURROGATE}"}),
        "variable-surrogate-default": variable(owner).model_copy(
            update={"default_value": {"k": LONE_SURROGATE}}
        ),
        "variable-nested-2000": variable(owner).model_copy(update={"default_value": nested(2000)}),
        "variable-nan-default": variable(owner).model_copy(update={"default_value": [math.nan]}),
        "activation-surrogate-override": activation(owner).model_copy(
            update={"policy_overrides": {LONE_SURROGATE: True}}
        ),
        "activation-nested-2000": activation(owner).model_copy(update={"policy_overrides": nested(2000)}),
        "plan-surrogate-map": plan(tenant).model_copy(update={"transformation_map": {"k": LONE_SURROGATE}}),
        "plan-infinite-policy": plan(tenant).model_copy(update={"anchor_policies": {"x": math.inf}}),
    }


SAVES = {
    "agent": "save_agent",
    "rule": "save_rule",
    "scenario": "save_scenario",
    "template": "save_template",
    "variable": "save_variable",
    "activation": "save_tool_activation",
    "plan": "save_migration_plan",
}
BAD_CASES = list(_bad_models(agent(uuid4())).keys())


@pytest.mark.parametrize("case", BAD_CASES)
async def test_unstorable_model_is_refused_and_writes_nothing(config_store: ConfigStore, case: str) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    model = _bad_models(owner)[case]
    save = getattr(config_store, SAVES[case.split("-")[0]])
    with pytest.raises(InvalidDataError):
        await save(model)
    assert await _everything(config_store, tenant, owner.id) == ([owner], [], [], [], [], [], [])


async def test_archiving_an_unstorable_scenario_is_refused(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    bad = scenario(owner).model_copy(update={"description": f"d{LONE_SURROGATE}"})
    with pytest.raises(InvalidDataError):
        await config_store.archive_scenario_version(tenant, bad)
    assert await config_store.get_archived_scenario(tenant, bad.id, bad.version) is None


@pytest.mark.parametrize("bad", [LONE_SURROGATE, f"a{NUL}b"], ids=["lone-surrogate", "nul"])
async def test_lookups_refuse_unstorable_text(config_store: ConfigStore, bad: str) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    calls = [
        config_store.get_variable_by_name(tenant, owner.id, bad),
        config_store.get_tool_activation(tenant, owner.id, bad),
        config_store.delete_tool_activation(tenant, owner.id, bad),
        config_store.vector_search_rules(unit_vector(0), tenant, owner.id, embedding_model=bad),
    ]
    for call in calls:
        with pytest.raises(InvalidDataError):
            await call


# --- name clashes read like the in-memory reference (no driver text) -----------------------------


async def test_name_clash_messages_are_the_reference_ones(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant, name=f"agent-{uuid4().hex[:8]}")
    first = variable(owner)
    await config_store.save_variable(first)
    cases = [
        (
            config_store.save_agent(agent(tenant, name=owner.name)),
            f"tenant {tenant} already has a live agent named {owner.name!r}",
        ),
        (
            config_store.save_variable(variable(owner, name=first.name)),
            f"agent {owner.id} already has a live variable named {first.name!r}",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ConflictError) as caught:
            await call
        assert str(caught.value) == message
        assert not any(word in str(caught.value) for word in DRIVER_WORDS)
    agents, total = await config_store.get_agents(tenant)
    assert (agents, total) == ([owner], 1)
    assert await config_store.get_variables(tenant, owner.id) == [
        await config_store.get_variable(tenant, first.id)
    ]


async def _everything(store: ConfigStore, tenant: UUID, agent_id: UUID) -> tuple[list[Any], ...]:
    agents, _ = await store.get_agents(tenant)
    return (
        agents,
        await store.get_rules(tenant, agent_id, enabled_only=False),
        await store.get_scenarios(tenant, agent_id, enabled_only=False),
        await store.get_templates(tenant, agent_id),
        await store.get_variables(tenant, agent_id),
        await store.get_tool_activations(tenant, agent_id),
        await store.list_migration_plans(tenant),
    )
