"""ConfigStore contract: agents (CRUD, paging, uniqueness, soft delete and its cascade)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from focal.alignment.models import Agent
from focal.alignment.stores.config_store import ConfigStore
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from tests.contract.config_backends import (
    activation,
    agent,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    rule,
    saved_agent,
    scenario,
    template,
    variable,
    without_updated_at,
)
from tests.support import new_tenant


async def test_saved_agent_reads_back_with_every_field(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    new = agent(
        tenant,
        name="Support",
        description="front line",
        system_prompt="Be kind.",
        default_model="claude-x",
        temperature=1.25,
        max_tokens=2048,
        enabled=False,
        current_version=3,
        created_at=created,
    )
    before = datetime.now(UTC)
    assert await config_store.save_agent(new) == new.id
    stored = await config_store.get_agent(tenant, new.id)
    assert stored is not None
    assert without_updated_at(stored) == without_updated_at(new)
    assert stored.created_at == created
    assert stored.updated_at >= before
    assert stored.updated_at.tzinfo is not None and stored.updated_at.utcoffset() == timedelta(0)


async def test_update_keeps_created_at_and_moves_updated_at(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    first = await saved_agent(config_store, tenant, name="one")
    changed = first.model_copy(update={"name": "two", "created_at": datetime(2000, 1, 1, tzinfo=UTC)})
    await config_store.save_agent(changed)
    stored = await config_store.get_agent(tenant, first.id)
    assert stored is not None
    assert stored.name == "two"
    assert stored.created_at == first.created_at
    assert stored.updated_at >= first.updated_at


async def test_agents_are_invisible_to_other_tenants(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    mine = await saved_agent(config_store, tenant)
    assert await config_store.get_agent(other, mine.id) is None
    assert await config_store.get_agents(other) == ([], 0)
    assert await config_store.delete_agent(other, mine.id) is False
    assert await config_store.get_agent(tenant, mine.id) is not None


async def test_saving_an_id_of_another_tenant_is_a_conflict_and_changes_nothing(
    config_store: ConfigStore,
) -> None:
    tenant, other = new_tenant(), new_tenant()
    mine = await saved_agent(config_store, tenant, name="mine")
    intruder = mine.model_copy(update={"tenant_id": other, "name": "stolen"})
    with pytest.raises(ConflictError):
        await config_store.save_agent(intruder)
    assert await config_store.get_agent(tenant, mine.id) == mine
    assert await config_store.get_agent(other, mine.id) is None


async def test_returned_and_saved_objects_are_copies(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    new = agent(tenant, name="original")
    await config_store.save_agent(new)
    new.name = "mutated after save"
    stored = await config_store.get_agent(tenant, new.id)
    assert stored is not None and stored.name == "original"
    stored.name = "mutated after read"
    listed, _ = await config_store.get_agents(tenant)
    listed[0].description = "mutated list item"
    again = await config_store.get_agent(tenant, new.id)
    assert again is not None and again.name == "original" and again.description is None


async def test_get_agents_orders_by_created_at_desc_then_id_and_pages(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    base = datetime(2026, 3, 1, tzinfo=UTC)
    tied_ids = sorted([uuid4(), uuid4(), uuid4()])
    agents = [agent(tenant, id=tied_id, created_at=base) for tied_id in tied_ids]
    agents.append(agent(tenant, created_at=base + timedelta(hours=1)))
    agents.append(agent(tenant, created_at=base - timedelta(hours=1), enabled=False))
    for new in reversed(agents):
        await config_store.save_agent(new)
    expected = [agents[3].id, *tied_ids, agents[4].id]

    page, total = await config_store.get_agents(tenant, limit=1000)
    assert [a.id for a in page] == expected and total == 5
    page, total = await config_store.get_agents(tenant, limit=2, offset=1)
    assert [a.id for a in page] == expected[1:3] and total == 5
    page, total = await config_store.get_agents(tenant, limit=2, offset=5)
    assert page == [] and total == 5
    page, total = await config_store.get_agents(tenant, enabled_only=True)
    assert [a.id for a in page] == expected[:4] and total == 4


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (1001, 0), (-1, 0), (10, -1)])
async def test_get_agents_refuses_bad_limits(config_store: ConfigStore, limit: int, offset: int) -> None:
    with pytest.raises(InvalidDataError):
        await config_store.get_agents(new_tenant(), limit=limit, offset=offset)


async def test_live_agent_names_are_unique_per_tenant(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    first = await saved_agent(config_store, tenant, name="Support")
    with pytest.raises(ConflictError):
        await config_store.save_agent(agent(tenant, name="Support"))
    assert (await config_store.get_agents(tenant))[1] == 1
    await config_store.save_agent(agent(other, name="Support"))  # another tenant: fine
    await config_store.save_agent(first.model_copy(update={"description": "same name, same id"}))
    assert await config_store.delete_agent(tenant, first.id)
    reused = agent(tenant, name="Support")  # a deleted agent's name is free again
    await config_store.save_agent(reused)
    assert await config_store.get_agent(tenant, reused.id) is not None


async def test_concurrent_saves_of_one_name_let_exactly_one_win(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    candidates = [agent(tenant, name="Racer") for _ in range(20)]
    results = await asyncio.gather(*(config_store.save_agent(c) for c in candidates), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
    page, total = await config_store.get_agents(tenant)
    assert total == 1 and page[0].id == winners[0]


async def test_soft_deleted_agent_disappears_and_stays_deleted(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    gone = await saved_agent(config_store, tenant)
    kept = await saved_agent(config_store, tenant)
    assert await config_store.delete_agent(tenant, gone.id) is True
    assert await config_store.delete_agent(tenant, gone.id) is False
    assert await config_store.get_agent(tenant, gone.id) is None
    page, total = await config_store.get_agents(tenant)
    assert [a.id for a in page] == [kept.id] and total == 1
    with pytest.raises(NotFoundError):  # save never resurrects
        await config_store.save_agent(gone)
    assert await config_store.get_agent(tenant, gone.id) is None
    assert await config_store.delete_agent(tenant, uuid4()) is False


async def test_deleting_an_agent_deletes_what_it_owns(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    bystander = await saved_agent(config_store, tenant)
    owned_rule, kept_rule = rule(owner), rule(bystander)
    owned_scenario, owned_template, owned_variable = scenario(owner), template(owner), variable(owner)
    for r in (owned_rule, kept_rule):
        await config_store.save_rule(r)
    await config_store.save_scenario(owned_scenario)
    await config_store.save_template(owned_template)
    await config_store.save_variable(owned_variable)
    await config_store.save_tool_activation(activation(owner, "crm"))
    await config_store.save_tool_activation(activation(bystander, "crm"))

    assert await config_store.delete_agent(tenant, owner.id)

    assert await config_store.get_rule(tenant, owned_rule.id) is None
    assert await config_store.get_rules(tenant, owner.id, enabled_only=False) == []
    assert await config_store.get_scenario(tenant, owned_scenario.id) is None
    assert await config_store.get_template(tenant, owned_template.id) is None
    assert await config_store.get_variable(tenant, owned_variable.id) is None
    assert await config_store.get_variable_by_name(tenant, owner.id, owned_variable.name) is None
    assert await config_store.get_tool_activations(tenant, owner.id) == []
    assert await config_store.get_tool_activation(tenant, owner.id, "crm") is None
    assert await config_store.delete_rule(tenant, owned_rule.id) is False
    with pytest.raises(NotFoundError):  # children of a deleted agent stay deleted
        await config_store.save_rule(owned_rule)
    assert await config_store.get_rule(tenant, kept_rule.id) is not None
    assert await config_store.get_tool_activation(tenant, bystander.id, "crm") is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"name": ""},
        {"name": "x" * 256},
        {"name": "nul\x00byte"},
        {"temperature": 2.5},
        {"temperature": -0.1},
        {"max_tokens": 0},
        {"current_version": 0},
        {"default_model": "m" * 256},
        {"deleted_at": datetime(2026, 1, 1, tzinfo=UTC)},
        {"created_at": datetime(2026, 1, 1)},  # naive timestamps are refused
    ],
    ids=lambda bad: next(iter(bad)),
)
async def test_invalid_agent_is_refused_and_changes_nothing(
    config_store: ConfigStore, bad: dict[str, object]
) -> None:
    tenant = new_tenant()
    stored = await saved_agent(config_store, tenant, name="keep me")
    broken = stored.model_copy(update=bad)  # model_copy skips validation, as careless callers do
    with pytest.raises(InvalidDataError):
        await config_store.save_agent(broken)
    with pytest.raises(InvalidDataError):
        await config_store.save_agent(agent(tenant).model_copy(update=bad))
    assert await config_store.get_agent(tenant, stored.id) == stored
    assert (await config_store.get_agents(tenant))[1] == 1


async def test_save_refuses_what_is_not_an_agent(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    not_an_agent = Agent.model_construct(tenant_id=tenant, name=None)
    with pytest.raises(InvalidDataError):
        await config_store.save_agent(not_an_agent)
    assert await config_store.get_agents(tenant) == ([], 0)


async def test_children_saved_while_their_agent_is_deleted_never_outlive_it(
    config_store: ConfigStore,
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    rules = [rule(owner) for _ in range(8)]
    results = await asyncio.gather(
        *(config_store.save_rule(r) for r in rules[:4]),
        config_store.delete_agent(tenant, owner.id),
        *(config_store.save_rule(r) for r in rules[4:]),
        return_exceptions=True,
    )
    assert results[4] is True
    assert all(isinstance(r, NotFoundError) for r in results if isinstance(r, BaseException))
    assert await config_store.get_rules(tenant, owner.id, enabled_only=False) == []
    for r in rules:
        assert await config_store.get_rule(tenant, r.id) is None
