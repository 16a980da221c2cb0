"""ConfigStore contract: the constraint fields of rules and ``get_hard_constraints``."""

from __future__ import annotations

from uuid import uuid4

import pytest

from focal.alignment.constraint_patterns import MAX_PATTERN_LENGTH, MAX_PATTERNS
from focal.alignment.models import Rule, Scope
from focal.alignment.stores.config_store import ConfigStore
from focal.errors import InvalidDataError
from tests.contract.config_backends import (
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    rule,
    saved_agent,
    without_updated_at,
)
from tests.support import new_tenant, unit_vector


def constraint(owner: object, **fields: object) -> Rule:
    values: dict[str, object] = {
        "is_hard_constraint": True,
        "forbid_patterns": [r"(?i)\bfull refund\b", "€\\s*\\d+"],
        "require_patterns": [r"(?i)inspection"],
        "judge_instructions": "The answer must not promise money.",
    }
    values.update(fields)
    return rule(owner, **values)  # type: ignore[arg-type]


async def test_constraint_fields_read_back(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    new = constraint(owner, embedding=unit_vector(0), embedding_model="test-model")
    await config_store.save_rule(new)
    stored = await config_store.get_rule(tenant, new.id)
    assert stored is not None
    assert stored.forbid_patterns == [r"(?i)\bfull refund\b", "€\\s*\\d+"]
    assert stored.require_patterns == [r"(?i)inspection"]
    assert stored.judge_instructions == "The answer must not promise money."
    assert without_updated_at(stored) | {"embedding": None} == without_updated_at(new) | {"embedding": None}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"forbid_patterns": ["ok", "(unclosed"]}, "forbid_patterns.1: pattern '(unclosed'"),
        ({"require_patterns": [r"(a)\1"]}, "require_patterns.0"),  # RE2 has no backreferences
        ({"forbid_patterns": ["(?=lookahead)"]}, "not a valid RE2 pattern"),
        ({"forbid_patterns": ["x" * (MAX_PATTERN_LENGTH + 1)]}, f"at most {MAX_PATTERN_LENGTH} characters"),
        ({"forbid_patterns": ["a"] * (MAX_PATTERNS + 1)}, f"at most {MAX_PATTERNS} patterns"),
        ({"forbid_patterns": ["  "]}, "must not be empty or blank"),
        ({"forbid_patterns": ["((a{100}){100}){100}"]}, "invalid repetition size"),
        ({"forbid_patterns": [r"\p{L}{500}"]}, "pattern too large"),  # beyond RE2's memory budget
        ({"judge_instructions": " "}, "judge_instructions: must not be blank"),
        ({"judge_instructions": "x" * 2001}, "judge_instructions: at most 2000 characters"),
    ],
)
async def test_invalid_constraint_fields_are_refused_and_nothing_is_written(
    config_store: ConfigStore, fields: dict[str, object], message: str
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    bad = constraint(owner, **fields)
    with pytest.raises(InvalidDataError, match="invalid Rule") as caught:
        await config_store.save_rule(bad)
    assert message in str(caught.value)
    assert await config_store.get_rule(tenant, bad.id) is None
    assert await config_store.get_rules(tenant, owner.id, enabled_only=False) == []


async def test_checks_belong_to_hard_constraints(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    plain = rule(owner)
    await config_store.save_rule(plain)
    # model_copy skips validation: the store re-validates and refuses
    smuggled = plain.model_copy(update={"forbid_patterns": ["refund"]})
    with pytest.raises(InvalidDataError, match="need is_hard_constraint=true"):
        await config_store.save_rule(smuggled)
    stored = await config_store.get_rule(tenant, plain.id)
    assert stored is not None and stored.forbid_patterns == [] and stored.revision == 1


async def test_get_hard_constraints_reads_only_live_enabled_constraints_of_the_scopes(
    config_store: ConfigStore,
) -> None:
    tenant, other_tenant = new_tenant(), new_tenant()
    owner = await saved_agent(config_store, tenant)
    sibling = await saved_agent(config_store, tenant)
    scenario_id, step_id, other_step = uuid4(), uuid4(), uuid4()
    low = constraint(owner, name="low", priority=-10)
    high = constraint(owner, name="high", priority=50, embedding=unit_vector(1))
    in_scenario = constraint(owner, name="scenario", scope=Scope.SCENARIO, scope_id=scenario_id)
    in_step = constraint(owner, name="step", scope=Scope.STEP, scope_id=step_id)
    in_other_step = constraint(owner, name="other step", scope=Scope.STEP, scope_id=other_step)
    disabled = constraint(owner, name="disabled", enabled=False)
    deleted = constraint(owner, name="deleted")
    plain = rule(owner, name="plain rule")
    of_sibling = constraint(sibling, name="sibling's")
    for row in (low, high, in_scenario, in_step, in_other_step, disabled, deleted, plain, of_sibling):
        await config_store.save_rule(row)
    await config_store.delete_rule(tenant, deleted.id)

    global_only = await config_store.get_hard_constraints(tenant, owner.id, scopes=[(Scope.GLOBAL, None)])
    assert [r.name for r in global_only] == ["high", "low"]  # priority desc
    assert all(r.embedding is None for r in global_only)  # not loaded: a turn does not rank them
    assert global_only[0].embedding_model == "test-model"
    assert global_only[0].forbid_patterns == high.forbid_patterns

    in_turn = await config_store.get_hard_constraints(
        tenant,
        owner.id,
        scopes=[(Scope.GLOBAL, None), (Scope.SCENARIO, scenario_id), (Scope.STEP, step_id)],
    )
    assert [r.name for r in in_turn] == ["high", "scenario", "step", "low"]
    every_scope = await config_store.get_hard_constraints(tenant, owner.id)
    assert {r.name for r in every_scope} == {"high", "low", "scenario", "step", "other step"}
    whole_steps = await config_store.get_hard_constraints(tenant, owner.id, scopes=[(Scope.STEP, None)])
    assert {r.name for r in whole_steps} == {"step", "other step"}

    assert await config_store.get_hard_constraints(other_tenant, owner.id) == []  # tenant isolation
    assert [r.name for r in await config_store.get_hard_constraints(tenant, sibling.id)] == ["sibling's"]


async def test_get_hard_constraints_checks_its_scope_selector(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    with pytest.raises(InvalidDataError, match="GLOBAL scope selector takes no scope_id"):
        await config_store.get_hard_constraints(tenant, owner.id, scopes=[(Scope.GLOBAL, uuid4())])
