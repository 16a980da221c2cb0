"""The ConfigStore backends of the contract suite, and builders for valid test models.

The backend list is defined here, once: every ``tests/contract/test_config_store*.py`` module
imports ``config_store`` and runs each test against every backend. A new backend is one more
entry in ``BACKENDS`` and one more branch in the fixture. Servers start only when a backend
needs them (``request.getfixturevalue``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.alignment.models import (
    Agent,
    MigrationPlan,
    Rule,
    Scenario,
    ScenarioStep,
    StepTransition,
    Template,
    ToolActivation,
    Variable,
)
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.stores.inmemory import InMemoryConfigStore
from tests.support import TEST_EMBEDDING_DIMENSIONS

BACKENDS = ["inmemory", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS, name="config_store")
def config_store_fixture(request: pytest.FixtureRequest) -> ConfigStore:
    """A ConfigStore of every backend, with ``TEST_EMBEDDING_DIMENSIONS``-long embeddings.

    Synchronous on purpose: ``getfixturevalue`` of the async session fixture ``pg_pool`` only
    works from a sync fixture (pytest-asyncio runs it on the session loop). Stores need no
    teardown: each test works in its own tenants.
    """
    if request.param == "inmemory":
        return InMemoryConfigStore(embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    if request.param == "postgres":
        from focal.alignment.stores.postgres import PostgresConfigStore

        return PostgresConfigStore(
            request.getfixturevalue("pg_pool"), embedding_dimensions=TEST_EMBEDDING_DIMENSIONS
        )
    raise AssertionError(f"unknown backend {request.param}")  # a param without a branch is a bug here


# --- model builders: valid by default, any field overridable ------------------------------------


def agent(tenant_id: UUID, **fields: Any) -> Agent:
    return Agent(tenant_id=tenant_id, name=fields.pop("name", f"agent-{uuid4().hex[:8]}"), **fields)


def rule(owner: Agent, **fields: Any) -> Rule:
    values: dict[str, Any] = {
        "name": f"rule-{uuid4().hex[:8]}",
        "condition_text": "the customer asks about refunds",
        "action_text": "explain the refund policy",
        "embedding_model": "test-model",
    }
    values.update(fields)
    return Rule(tenant_id=owner.tenant_id, agent_id=owner.id, **values)


def scenario(owner: Agent, **fields: Any) -> Scenario:
    first, second = uuid4(), uuid4()
    values: dict[str, Any] = {
        "name": f"scenario-{uuid4().hex[:8]}",
        "entry_step_id": first,
        "embedding_model": "test-model",
        "steps": [
            ScenarioStep(
                id=first,
                name="ask order number",
                transitions=[StepTransition(to_step_id=second, condition_text="order number given")],
                collects_fields=["order_number"],
            ),
            ScenarioStep(id=second, name="done", is_terminal=True),
        ],
    }
    values.update(fields)
    return Scenario(tenant_id=owner.tenant_id, agent_id=owner.id, **values)


def template(owner: Agent, **fields: Any) -> Template:
    values: dict[str, Any] = {"name": f"template-{uuid4().hex[:8]}", "text": "Hello {name}!"}
    values.update(fields)
    return Template(tenant_id=owner.tenant_id, agent_id=owner.id, **values)


def variable(owner: Agent, **fields: Any) -> Variable:
    values: dict[str, Any] = {"name": f"var_{uuid4().hex[:8]}"}
    values.update(fields)
    return Variable(tenant_id=owner.tenant_id, agent_id=owner.id, **values)


def activation(owner: Agent, tool_id: str = "lookup_order", **fields: Any) -> ToolActivation:
    return ToolActivation(tenant_id=owner.tenant_id, agent_id=owner.id, tool_id=tool_id, **fields)


def plan(tenant_id: UUID, scenario_id: UUID | None = None, **fields: Any) -> MigrationPlan:
    values: dict[str, Any] = {"from_version": 1, "to_version": 2}
    values.update(fields)
    return MigrationPlan(tenant_id=tenant_id, scenario_id=scenario_id or uuid4(), **values)


async def saved_agent(store: ConfigStore, tenant_id: UUID, **fields: Any) -> Agent:
    """An agent saved in ``store``, as the store returns it."""
    new = agent(tenant_id, **fields)
    await store.save_agent(new)
    stored = await store.get_agent(tenant_id, new.id)
    assert stored is not None
    return stored


def without_updated_at(model: Any) -> dict[str, Any]:
    """A model's fields minus ``updated_at``, which every save sets."""
    data: dict[str, Any] = model.model_dump(exclude={"updated_at"})
    return data


__all__ = [
    "BACKENDS",
    "TEST_EMBEDDING_DIMENSIONS",
    "activation",
    "agent",
    "config_store_fixture",
    "plan",
    "rule",
    "saved_agent",
    "scenario",
    "template",
    "variable",
    "without_updated_at",
]
