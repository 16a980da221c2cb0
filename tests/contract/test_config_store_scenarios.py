"""ConfigStore contract: scenario size limits, transition embeddings and cheap reads; large
integers in variable default values (JSON values are JSON values)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from focal.alignment.models import (
    SCENARIO_LIMITS,
    Agent,
    Scenario,
    ScenarioStep,
    StepTransition,
)
from focal.alignment.stores.config_store import ConfigStore
from focal.errors import InvalidDataError
from focal.validation import float32
from tests.contract.config_backends import (
    TEST_EMBEDDING_DIMENSIONS,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    saved_agent,
    scenario,
    variable,
    without_updated_at,
)
from tests.support import new_tenant, normalized

LIMITS = SCENARIO_LIMITS


def largest_scenario(owner: Agent, *, dimensions: int = TEST_EMBEDDING_DIMENSIONS) -> Scenario:
    """A scenario at every limit at once: most steps, most transitions (spread over the steps,
    each step at most at its own limit), longest texts, most tags and references."""
    step_ids = [uuid4() for _ in range(LIMITS.max_steps)]
    per_step = [0] * LIMITS.max_steps
    for n in range(LIMITS.max_transitions):
        per_step[n % LIMITS.max_steps] += 1
    assert max(per_step) <= LIMITS.max_transitions_per_step
    text = "x" * LIMITS.max_condition_length
    steps = [
        ScenarioStep(
            id=step_id,
            name=f"step {n}".ljust(255, "."),
            description="d" * LIMITS.max_description_length,
            transitions=[
                StepTransition(
                    to_step_id=step_ids[(n + k + 1) % len(step_ids)],
                    condition_text=text,
                    condition_embedding=float32(normalized([1.0, (n + k) / 7.0, k + 1.0], dimensions)),
                    priority=k,
                )
                for k in range(per_step[n])
            ],
            rule_ids=[uuid4() for _ in range(LIMITS.max_step_references)],
            template_ids=[uuid4() for _ in range(LIMITS.max_step_references)],
            collects_fields=[
                f"f{k}".ljust(LIMITS.max_field_name_length, "_") for k in range(LIMITS.max_step_references)
            ],
        )
        for n, step_id in enumerate(step_ids)
    ]
    return Scenario(
        tenant_id=owner.tenant_id,
        agent_id=owner.id,
        name="largest",
        description="s" * LIMITS.max_description_length,
        entry_step_id=step_ids[0],
        entry_condition_text=text,
        entry_embedding=float32(normalized([1.0, 2.0], dimensions)),
        embedding_model="test-model",
        steps=steps,
        tags=[f"t{k}".ljust(LIMITS.max_tag_length, "-") for k in range(LIMITS.max_tags)],
    )


async def test_the_largest_scenario_allowed_round_trips(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    largest = largest_scenario(owner)
    await config_store.save_scenario(largest)
    stored = await config_store.get_scenario(tenant, largest.id)
    assert stored is not None
    assert without_updated_at(stored) == without_updated_at(largest)
    listed = await config_store.get_scenarios(tenant, owner.id)
    assert [without_updated_at(s) for s in listed] == [without_updated_at(largest)]


async def test_scenarios_can_be_listed_without_transition_embeddings(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    largest = largest_scenario(owner)
    await config_store.save_scenario(largest)
    (light,) = await config_store.get_scenarios(tenant, owner.id, include_transition_embeddings=False)
    assert all(t.condition_embedding is None for step in light.steps for t in step.transitions)
    assert light.entry_embedding == largest.entry_embedding  # entry matching still has what it needs
    expected = largest.model_copy(
        update={
            "steps": [
                step.model_copy(
                    update={
                        "transitions": [
                            t.model_copy(update={"condition_embedding": None}) for t in step.transitions
                        ]
                    }
                )
                for step in largest.steps
            ]
        }
    )
    assert without_updated_at(light) == without_updated_at(expected)


async def test_a_scenario_can_be_read_with_the_embeddings_of_one_step_only(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    largest = largest_scenario(owner)
    await config_store.save_scenario(largest)
    current = largest.steps[7]
    stored = await config_store.get_scenario(tenant, largest.id, embeddings_of_step=current.id)
    assert stored is not None
    for step, original in zip(stored.steps, largest.steps, strict=True):
        expected = [t.condition_embedding if step.id == current.id else None for t in original.transitions]
        assert [t.condition_embedding for t in step.transitions] == expected
    assert stored.step(current.id) == current  # the step a turn follows a transition from, whole
    assert stored.model_dump(exclude={"steps", "updated_at"}) == largest.model_dump(
        exclude={"steps", "updated_at"}
    )
    unknown = await config_store.get_scenario(tenant, largest.id, embeddings_of_step=uuid4())
    assert unknown is not None
    assert all(t.condition_embedding is None for step in unknown.steps for t in step.transitions)
    assert await config_store.get_scenario(new_tenant(), largest.id, embeddings_of_step=current.id) is None


async def test_a_transition_without_embedding_stays_without(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    a, b, c = uuid4(), uuid4(), uuid4()
    embedded = float32(normalized([0.2, 0.4, 0.9]))
    mixed = Scenario(
        tenant_id=tenant,
        agent_id=owner.id,
        name="mixed",
        entry_step_id=a,
        steps=[
            ScenarioStep(
                id=a,
                name="a",
                transitions=[
                    StepTransition(to_step_id=b, condition_text="no vector"),
                    StepTransition(to_step_id=c, condition_text="vector", condition_embedding=embedded),
                ],
            ),
            ScenarioStep(id=b, name="b"),
            ScenarioStep(id=c, name="c", transitions=[StepTransition(to_step_id=a, condition_text="back")]),
        ],
    )
    await config_store.save_scenario(mixed)
    stored = await config_store.get_scenario(tenant, mixed.id)
    assert stored is not None
    assert [[t.condition_embedding for t in step.transitions] for step in stored.steps] == [
        [None, embedded],
        [],
        [None],
    ]


def _one_more(field: str) -> Callable[[Scenario], Scenario]:
    """A change that takes the largest scenario just beyond one limit."""

    def first_step(scenario: Scenario, **update: Any) -> Scenario:
        return scenario.model_copy(
            update={"steps": [scenario.steps[0].model_copy(update=update), *scenario.steps[1:]]}
        )

    def apply(scenario: Scenario) -> Scenario:
        step = scenario.steps[0]
        extra_transition = step.transitions[0].model_copy()
        if field == "steps":
            return scenario.model_copy(update={"steps": [*scenario.steps, ScenarioStep(name="one more")]})
        if field == "transitions":  # one more transition in total, in a step below its own limit
            return first_step(scenario, transitions=[*step.transitions, extra_transition])
        if field == "transitions_per_step":
            many = [extra_transition] * (LIMITS.max_transitions_per_step + 1)
            trimmed = [s.model_copy(update={"transitions": []}) for s in scenario.steps[1:]]
            return scenario.model_copy(
                update={"steps": [step.model_copy(update={"transitions": many}), *trimmed]}
            )
        if field == "condition_text":
            longer = extra_transition.model_copy(
                update={"condition_text": "x" * (LIMITS.max_condition_length + 1)}
            )
            return first_step(scenario, transitions=[longer, *step.transitions[1:]])
        if field == "entry_condition_text":
            return scenario.model_copy(
                update={"entry_condition_text": "x" * (LIMITS.max_condition_length + 1)}
            )
        if field == "description":
            return scenario.model_copy(update={"description": "x" * (LIMITS.max_description_length + 1)})
        if field == "step_description":
            return first_step(scenario, description="x" * (LIMITS.max_description_length + 1))
        if field == "tags":
            return scenario.model_copy(update={"tags": [*scenario.tags, "one more"]})
        if field == "tag_length":
            return scenario.model_copy(update={"tags": ["x" * (LIMITS.max_tag_length + 1)]})
        if field in ("rule_ids", "template_ids"):
            return first_step(scenario, **{field: [*getattr(step, field), uuid4()]})
        if field == "collects_fields":
            return first_step(scenario, collects_fields=[*step.collects_fields, "one_more"])
        if field == "field_name_length":
            return first_step(scenario, collects_fields=["x" * (LIMITS.max_field_name_length + 1)])
        raise AssertionError(field)

    return apply


BEYOND = [
    "steps",
    "transitions",
    "transitions_per_step",
    "condition_text",
    "entry_condition_text",
    "description",
    "step_description",
    "tags",
    "tag_length",
    "rule_ids",
    "template_ids",
    "collects_fields",
    "field_name_length",
]


@pytest.mark.parametrize("field", BEYOND)
async def test_a_scenario_beyond_a_limit_is_refused_and_changes_nothing(
    config_store: ConfigStore, field: str
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    largest = largest_scenario(owner)
    kept = scenario(owner, description="kept")
    await config_store.save_scenario(kept)
    beyond = _one_more(field)(largest)
    with pytest.raises(InvalidDataError, match="limit"):  # an update
        await config_store.save_scenario(beyond.model_copy(update={"id": kept.id}))
    with pytest.raises(InvalidDataError, match="limit"):  # a new scenario
        await config_store.save_scenario(beyond)
    stored = await config_store.get_scenarios(tenant, owner.id)
    assert [without_updated_at(s) for s in stored] == [without_updated_at(kept)]


async def test_loading_a_scenario_yields_to_other_tasks(config_store: ConfigStore) -> None:
    """Structural, not timed: while the largest scenario loads, another task gets to run many
    times (the decoder yields between slices instead of holding the loop for the whole load)."""
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    largest = largest_scenario(owner)
    await config_store.save_scenario(largest)
    ticks = 0
    loading = True

    async def ticker() -> None:
        nonlocal ticks
        while loading:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    before = ticks
    stored = await config_store.get_scenario(tenant, largest.id)
    loading = False
    await task
    assert stored is not None
    # The steps' JSON alone is over a megabyte: at 256 KiB per slice, at least 4 yields.
    assert ticks - before >= 4


# --- variables: JSON values are JSON values ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [4155551234, -(2**63), 2**70, [4155551234], {"phone": 4155551234}, -0.5],
    ids=lambda value: str(value)[:16],
)
async def test_variable_default_value_is_any_json_value(config_store: ConfigStore, value: Any) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    new = variable(owner, default_value=value)
    await config_store.save_variable(new)
    stored = await config_store.get_variable(tenant, new.id)
    assert stored is not None and stored.default_value == value
    assert type(stored.default_value) is type(value)
