"""ConfigStore contract: scenarios, templates, variables and tool activations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from focal.alignment.models import Scope, StepTransition, TemplateMode, VariableUpdatePolicy
from focal.alignment.stores.config_store import ConfigStore
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.validation import float32
from tests.contract.config_backends import (
    TEST_EMBEDDING_DIMENSIONS,
    activation,
    agent,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    saved_agent,
    scenario,
    template,
    variable,
    without_updated_at,
)
from tests.support import new_tenant, normalized

# --- scenarios --------------------------------------------------------------------------------


async def test_saved_scenario_reads_back_with_steps_and_embeddings(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    condition = float32(normalized([0.3, 0.1, 0.9]))  # stored as float32, like every vector
    new = scenario(
        owner,
        description="returns",
        version=4,
        entry_condition_text="the customer wants to return an item",
        entry_embedding=normalized([1.0, 2.0]),
        embedding_model="hashing-8",
        tags=["returns", "orders"],
        enabled=False,
    )
    new.steps[0].transitions[0].condition_embedding = condition
    new.steps[0].rule_ids = [uuid4()]
    new.steps[1].template_ids = [uuid4()]
    await config_store.save_scenario(new)
    stored = await config_store.get_scenario(tenant, new.id)
    assert stored is not None
    assert stored.entry_embedding == pytest.approx(new.entry_embedding, abs=1e-6)
    assert stored.steps[0].transitions[0].condition_embedding == condition
    assert without_updated_at(stored) | {"entry_embedding": None} == without_updated_at(new) | {
        "entry_embedding": None
    }


async def test_scenarios_list_by_name_filter_enabled_and_isolate_tenants(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, sibling = await saved_agent(config_store, tenant), await saved_agent(config_store, tenant)
    tied = sorted([uuid4(), uuid4()])
    saved = [
        scenario(owner, name="b"),
        scenario(owner, name="a", id=tied[1]),
        scenario(owner, name="a", id=tied[0]),
        scenario(owner, name="B"),  # code point order: upper case first
        scenario(owner, name="c", enabled=False),
        scenario(sibling, name="a"),
    ]
    for s in saved:
        await config_store.save_scenario(s)
    assert [s.id for s in await config_store.get_scenarios(tenant, owner.id)] == [
        saved[3].id,
        tied[0],
        tied[1],
        saved[0].id,
    ]
    assert len(await config_store.get_scenarios(tenant, owner.id, enabled_only=False)) == 5
    assert await config_store.get_scenarios(other, owner.id, enabled_only=False) == []
    assert await config_store.get_scenario(other, saved[0].id) is None
    assert await config_store.delete_scenario(other, saved[0].id) is False
    assert await config_store.get_scenario(tenant, saved[0].id) is not None


async def test_scenario_soft_delete_clash_and_missing_agent(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, foreign_owner = await saved_agent(config_store, tenant), await saved_agent(config_store, other)
    mine = scenario(owner)
    await config_store.save_scenario(mine)
    with pytest.raises(ConflictError):
        await config_store.save_scenario(scenario(foreign_owner, id=mine.id))
    with pytest.raises(NotFoundError):
        await config_store.save_scenario(scenario(agent(tenant)))
    assert await config_store.delete_scenario(tenant, mine.id) is True
    assert await config_store.delete_scenario(tenant, mine.id) is False
    assert await config_store.get_scenario(tenant, mine.id) is None
    assert await config_store.get_scenarios(tenant, owner.id, enabled_only=False) == []
    with pytest.raises(NotFoundError):
        await config_store.save_scenario(mine)
    assert await config_store.get_scenario(other, mine.id) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"entry_embedding": [1.0] * (TEST_EMBEDDING_DIMENSIONS - 1)},
        # squared norm underflows float32: pgvector would score it NaN
        {"entry_embedding": [1e-25] + [0.0] * (TEST_EMBEDDING_DIMENSIONS - 1)},
        {"entry_step_id": uuid4()},  # not one of the steps
        {"steps": []},
        {"version": 0},
        {"name": ""},
        {"tags": ["nul\x00"]},
    ],
    ids=lambda bad: next(iter(bad)),
)
async def test_invalid_scenario_is_refused_and_changes_nothing(
    config_store: ConfigStore, bad: dict[str, Any]
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    stored = scenario(owner)
    await config_store.save_scenario(stored)
    before = await config_store.get_scenario(tenant, stored.id)
    with pytest.raises(InvalidDataError):
        await config_store.save_scenario(stored.model_copy(update=bad))
    assert await config_store.get_scenario(tenant, stored.id) == before
    assert len(await config_store.get_scenarios(tenant, owner.id)) == 1


async def test_scenario_with_a_dangling_transition_or_bad_condition_vector_is_refused(
    config_store: ConfigStore,
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    dangling = scenario(owner)
    dangling.steps[0].transitions.append(
        StepTransition.model_construct(to_step_id=uuid4(), condition_text="x")
    )
    with pytest.raises(InvalidDataError):
        await config_store.save_scenario(dangling)
    short_vector = scenario(owner)
    short_vector.steps[0].transitions[0].condition_embedding = [1.0, 2.0]
    with pytest.raises(InvalidDataError):
        await config_store.save_scenario(short_vector)
    assert await config_store.get_scenarios(tenant, owner.id, enabled_only=False) == []


# --- templates --------------------------------------------------------------------------------


async def test_templates_round_trip_order_filter_and_isolate(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner = await saved_agent(config_store, tenant)
    step = uuid4()
    greeting = template(owner, name="greeting", mode=TemplateMode.EXCLUSIVE)
    at_step = template(owner, name="at step", scope=Scope.STEP, scope_id=step, mode=TemplateMode.FALLBACK)
    anywhere = template(owner, name="anywhere")
    for t in (greeting, at_step, anywhere):
        await config_store.save_template(t)
    stored = await config_store.get_template(tenant, greeting.id)
    assert stored is not None and without_updated_at(stored) == without_updated_at(greeting)
    assert [t.name for t in await config_store.get_templates(tenant, owner.id)] == [
        "anywhere",
        "at step",
        "greeting",
    ]
    assert [t.id for t in await config_store.get_templates(tenant, owner.id, scope=Scope.STEP)] == [
        at_step.id
    ]
    assert [t.id for t in await config_store.get_templates(tenant, owner.id, scope_id=step)] == [at_step.id]
    assert len(await config_store.get_templates(tenant, owner.id, scope=Scope.GLOBAL)) == 2
    assert await config_store.get_templates(other, owner.id) == []
    assert await config_store.get_template(other, greeting.id) is None
    assert await config_store.delete_template(other, greeting.id) is False

    assert await config_store.delete_template(tenant, greeting.id) is True
    assert await config_store.get_template(tenant, greeting.id) is None
    assert [t.name for t in await config_store.get_templates(tenant, owner.id)] == ["anywhere", "at step"]
    with pytest.raises(NotFoundError):
        await config_store.save_template(greeting)


async def test_template_rules_of_ownership_and_validation(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, foreign_owner = await saved_agent(config_store, tenant), await saved_agent(config_store, other)
    mine = template(owner, text="original")
    await config_store.save_template(mine)
    with pytest.raises(ConflictError):
        await config_store.save_template(template(foreign_owner, id=mine.id))
    with pytest.raises(NotFoundError):
        await config_store.save_template(template(agent(tenant)))
    for bad in ({"mode": "LOUD"}, {"text": ""}, {"scope": Scope.SCENARIO}):
        with pytest.raises(InvalidDataError):
            await config_store.save_template(mine.model_copy(update={"text": "changed"} | bad))
    stored = await config_store.get_template(tenant, mine.id)
    assert stored is not None and stored.text == "original"
    assert await config_store.get_templates(other, foreign_owner.id) == []


# --- variables --------------------------------------------------------------------------------


async def test_variables_round_trip_order_and_lookup_by_name(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, sibling = await saved_agent(config_store, tenant), await saved_agent(config_store, tenant)
    order_id = variable(
        owner,
        name="order_id",
        description="the order",
        default_value={"nested": [1, 2.5, None, True, "x"]},
        update_policy=VariableUpdatePolicy.MERGE,
        resolver_tool_id="lookup_order",
    )
    city = variable(owner, name="city", default_value="Paris")
    same_name_elsewhere = variable(sibling, name="city")
    for v in (order_id, city, same_name_elsewhere):
        await config_store.save_variable(v)
    stored = await config_store.get_variable(tenant, order_id.id)
    assert stored is not None and without_updated_at(stored) == without_updated_at(order_id)
    assert [v.name for v in await config_store.get_variables(tenant, owner.id)] == ["city", "order_id"]
    found = await config_store.get_variable_by_name(tenant, owner.id, "city")
    assert found is not None and found.id == city.id
    assert await config_store.get_variable_by_name(tenant, owner.id, "missing") is None
    assert await config_store.get_variable_by_name(other, owner.id, "city") is None
    assert await config_store.get_variable(other, city.id) is None
    assert await config_store.get_variables(other, owner.id) == []
    assert await config_store.delete_variable(other, city.id) is False

    assert stored.default_value is not None
    stored.default_value["nested"].append("mutated")
    again = await config_store.get_variable(tenant, order_id.id)
    assert again is not None and again.default_value == {"nested": [1, 2.5, None, True, "x"]}


async def test_variable_names_are_unique_per_agent_among_live_rows(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    first = variable(owner, name="email")
    await config_store.save_variable(first)
    with pytest.raises(ConflictError):
        await config_store.save_variable(variable(owner, name="email"))
    assert await config_store.delete_variable(tenant, first.id) is True
    assert await config_store.delete_variable(tenant, first.id) is False
    assert await config_store.get_variable_by_name(tenant, owner.id, "email") is None
    second = variable(owner, name="email")
    await config_store.save_variable(second)
    found = await config_store.get_variable_by_name(tenant, owner.id, "email")
    assert found is not None and found.id == second.id
    with pytest.raises(NotFoundError):
        await config_store.save_variable(first)


async def test_concurrent_variables_with_one_name_let_exactly_one_win(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    results = await asyncio.gather(
        *(config_store.save_variable(variable(owner, name="racer")) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
    assert len(await config_store.get_variables(tenant, owner.id)) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "Has Capitals"},
        {"name": "9starts_with_digit"},
        {"update_policy": "OVERWRITE"},
        {"default_value": float("nan")},
        {"default_value": {"when": datetime(2026, 1, 1, tzinfo=UTC)}},
        {"default_value": "nul\x00"},
    ],
    ids=lambda bad: f"{next(iter(bad))}-{str(next(iter(bad.values())))[:12]}",
)
async def test_invalid_variable_is_refused_and_changes_nothing(
    config_store: ConfigStore, bad: dict[str, Any]
) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, foreign_owner = await saved_agent(config_store, tenant), await saved_agent(config_store, other)
    stored = variable(owner, name="kept", default_value=1)
    await config_store.save_variable(stored)
    with pytest.raises(InvalidDataError):
        await config_store.save_variable(stored.model_copy(update=bad))
    with pytest.raises(ConflictError):
        await config_store.save_variable(variable(foreign_owner, id=stored.id))
    with pytest.raises(NotFoundError):
        await config_store.save_variable(variable(agent(tenant)))
    assert [(v.name, v.default_value) for v in await config_store.get_variables(tenant, owner.id)] == [
        ("kept", 1)
    ]
    assert await config_store.get_variables(other, foreign_owner.id) == []


# --- tool activations -------------------------------------------------------------------------


async def test_tool_activation_upserts_on_agent_and_tool(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    first = activation(owner, "crm", policy_overrides={"timeout_s": 5})
    assert await config_store.save_tool_activation(first) == first.id
    stored = await config_store.get_tool_activation(tenant, owner.id, "crm")
    assert stored is not None and without_updated_at(stored) == without_updated_at(first)

    again = activation(owner, "crm", enabled=False, policy_overrides={"timeout_s": 9})
    assert await config_store.save_tool_activation(again) == first.id  # the existing activation's id
    updated = await config_store.get_tool_activation(tenant, owner.id, "crm")
    assert updated is not None
    assert (updated.id, updated.enabled, updated.policy_overrides) == (first.id, False, {"timeout_s": 9})
    assert updated.created_at == first.created_at
    assert len(await config_store.get_tool_activations(tenant, owner.id)) == 1


async def test_tool_activations_list_by_tool_id_delete_and_isolate(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, sibling = await saved_agent(config_store, tenant), await saved_agent(config_store, tenant)
    for tool in ("search", "crm_2", "crm", "crm2"):
        await config_store.save_tool_activation(activation(owner, tool))
    await config_store.save_tool_activation(activation(sibling, "crm"))
    assert [a.tool_id for a in await config_store.get_tool_activations(tenant, owner.id)] == [
        "crm",
        "crm2",
        "crm_2",  # code point order: "2" < "_"
        "search",
    ]
    assert await config_store.get_tool_activations(other, owner.id) == []
    assert await config_store.get_tool_activation(other, owner.id, "crm") is None
    assert await config_store.delete_tool_activation(other, owner.id, "crm") is False

    assert await config_store.delete_tool_activation(tenant, owner.id, "crm") is True
    assert await config_store.delete_tool_activation(tenant, owner.id, "crm") is False  # hard-deleted
    assert await config_store.get_tool_activation(tenant, owner.id, "crm") is None
    assert await config_store.get_tool_activation(tenant, sibling.id, "crm") is not None
    fresh = activation(owner, "crm")
    assert await config_store.save_tool_activation(fresh) == fresh.id  # a new activation after delete


async def test_tool_activation_errors_change_nothing(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, foreign_owner = await saved_agent(config_store, tenant), await saved_agent(config_store, other)
    crm = activation(owner, "crm", policy_overrides={"a": 1})
    await config_store.save_tool_activation(crm)
    with pytest.raises(NotFoundError):
        await config_store.save_tool_activation(activation(agent(tenant), "crm"))
    with pytest.raises(ConflictError):  # the id is another tenant's activation
        await config_store.save_tool_activation(activation(foreign_owner, "crm", id=crm.id))
    with pytest.raises(ConflictError):  # the id is another activation of this tenant
        await config_store.save_tool_activation(activation(owner, "search", id=crm.id))
    bad_tool_ids = ("", "t" * 65, "a/b", "Crm", "1crm", "crm-2", "crm ", "crm\n", "_crm")
    for bad in (
        *({"tool_id": tool_id} for tool_id in bad_tool_ids),
        {"policy_overrides": {"x": float("inf")}},
    ):
        with pytest.raises(InvalidDataError):
            await config_store.save_tool_activation(crm.model_copy(update=bad))
    assert [
        (a.id, a.tool_id, a.policy_overrides)
        for a in await config_store.get_tool_activations(tenant, owner.id)
    ] == [(crm.id, "crm", {"a": 1})]
    assert await config_store.get_tool_activations(other, foreign_owner.id) == []


async def test_concurrent_activations_of_one_tool_converge_on_one_row(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    ids = await asyncio.gather(
        *(config_store.save_tool_activation(activation(owner, "crm")) for _ in range(10))
    )
    assert len(set(ids)) == 1
    assert [a.id for a in await config_store.get_tool_activations(tenant, owner.id)] == [ids[0]]


async def test_scenario_and_template_reads_are_copies(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    flow, greeting = scenario(owner, tags=["a"]), template(owner, text="Hi")
    await config_store.save_scenario(flow)
    await config_store.save_template(greeting)
    flow.steps[0].name = "changed after save"
    read = await config_store.get_scenario(tenant, flow.id)
    assert read is not None and read.steps[0].name == "ask order number"
    read.steps.pop()
    read.tags.append("b")
    (listed,) = await config_store.get_scenarios(tenant, owner.id)
    listed.steps[0].transitions.clear()
    again = await config_store.get_scenario(tenant, flow.id)
    assert again is not None and len(again.steps) == 2 and again.tags == ["a"] and again.steps[0].transitions
    (template_read,) = await config_store.get_templates(tenant, owner.id)
    template_read.text = "changed"
    stored_template = await config_store.get_template(tenant, greeting.id)
    assert stored_template is not None and stored_template.text == "Hi"


async def test_lookups_refuse_values_no_row_can_hold(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    with pytest.raises(InvalidDataError):
        await config_store.get_variable_by_name(tenant, owner.id, "nul\x00")
    with pytest.raises(InvalidDataError):
        await config_store.get_tool_activation(tenant, owner.id, "nul\x00")
    with pytest.raises(InvalidDataError):
        await config_store.delete_tool_activation(tenant, owner.id, "nul\x00")
    with pytest.raises(InvalidDataError):
        await config_store.get_rules(tenant, owner.id, scope="SIDEWAYS")  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError):
        await config_store.get_templates(tenant, owner.id, scope="SIDEWAYS")  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError):
        await config_store.get_archived_scenario(tenant, uuid4(), 2**31)
    with pytest.raises(InvalidDataError):
        await config_store.get_migration_plan_for_versions(tenant, uuid4(), 1, 2**40)
    with pytest.raises(InvalidDataError):
        await config_store.vector_search_rules(normalized([1.0]), tenant, owner.id, embedding_model="m\x00")
