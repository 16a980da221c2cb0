"""ConfigStore contract: row revisions (optimistic concurrency) and scenario versions.

Every kind with a revision (agent, rule, scenario, template, variable, tool activation) is run
through the same tests by a ``Kind`` describing how to make, change, save and read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.alignment.models import Agent
from focal.alignment.stores.config_store import ConfigStore
from focal.errors import ConflictError, InvalidDataError, NotFoundError, StaleRevisionError
from tests.contract.config_backends import (
    activation,
    agent,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    rule,
    saved_agent,
    scenario,
    template,
    variable,
)
from tests.support import new_tenant


@dataclass(frozen=True)
class Kind:
    name: str
    make: Callable[[Agent], Any]  # a new, valid, unsaved object owned by the agent (or its tenant)
    save: Callable[[ConfigStore, Any, int | None], Awaitable[Any]]
    get: Callable[[ConfigStore, UUID, Any], Awaitable[Any]]  # (store, tenant, object) -> stored | None
    field: str  # a text field each test changes
    delete: Callable[[ConfigStore, UUID, Any], Awaitable[bool]]


KINDS = [
    Kind(
        "agent",
        lambda owner: agent(owner.tenant_id),
        lambda store, obj, rev: store.save_agent(obj, expected_revision=rev),
        lambda store, tenant, obj: store.get_agent(tenant, obj.id),
        "description",
        lambda store, tenant, obj: store.delete_agent(tenant, obj.id),
    ),
    Kind(
        "rule",
        lambda owner: rule(owner),
        lambda store, obj, rev: store.save_rule(obj, expected_revision=rev),
        lambda store, tenant, obj: store.get_rule(tenant, obj.id),
        "description",
        lambda store, tenant, obj: store.delete_rule(tenant, obj.id),
    ),
    Kind(
        "scenario",
        lambda owner: scenario(owner),
        lambda store, obj, rev: store.save_scenario(obj, expected_revision=rev),
        lambda store, tenant, obj: store.get_scenario(tenant, obj.id),
        "description",
        lambda store, tenant, obj: store.delete_scenario(tenant, obj.id),
    ),
    Kind(
        "template",
        lambda owner: template(owner),
        lambda store, obj, rev: store.save_template(obj, expected_revision=rev),
        lambda store, tenant, obj: store.get_template(tenant, obj.id),
        "text",
        lambda store, tenant, obj: store.delete_template(tenant, obj.id),
    ),
    Kind(
        "variable",
        lambda owner: variable(owner),
        lambda store, obj, rev: store.save_variable(obj, expected_revision=rev),
        lambda store, tenant, obj: store.get_variable(tenant, obj.id),
        "description",
        lambda store, tenant, obj: store.delete_variable(tenant, obj.id),
    ),
    Kind(
        "tool_activation",
        lambda owner: activation(owner, f"tool_{uuid4().hex[:8]}"),
        lambda store, obj, rev: store.save_tool_activation(obj, expected_revision=rev),
        lambda store, tenant, obj: store.get_tool_activation(tenant, obj.agent_id, obj.tool_id),
        "policy_overrides",
        lambda store, tenant, obj: store.delete_tool_activation(tenant, obj.agent_id, obj.tool_id),
    ),
]


def changed(kind: Kind, obj: Any, value: str) -> Any:
    """A copy of ``obj`` whose ``kind.field`` holds ``value`` (policy overrides hold it in a dict)."""
    new_value: Any = {"note": value} if kind.field == "policy_overrides" else value
    return obj.model_copy(update={kind.field: new_value}, deep=True)


def value_of(kind: Kind, obj: Any) -> str:
    current = getattr(obj, kind.field)
    return str(current.get("note")) if kind.field == "policy_overrides" else str(current)


async def saved(store: ConfigStore, kind: Kind) -> tuple[UUID, Any]:
    tenant = new_tenant()
    owner = await saved_agent(store, tenant)
    obj = kind.make(owner)
    await kind.save(store, obj, None)
    stored = await kind.get(store, tenant, obj)
    assert stored is not None
    return tenant, stored


by_kind = pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])


@by_kind
async def test_revision_starts_at_one_and_counts_every_save(config_store: ConfigStore, kind: Kind) -> None:
    tenant, stored = await saved(config_store, kind)
    assert stored.revision == 1
    await kind.save(config_store, changed(kind, stored, "second"), None)  # an unconditional upsert
    second = await kind.get(config_store, tenant, stored)
    assert second is not None and second.revision == 2
    await kind.save(config_store, changed(kind, second, "third"), 2)
    third = await kind.get(config_store, tenant, stored)
    assert third is not None and (third.revision, value_of(kind, third)) == (3, "third")
    ignored = changed(kind, third, "fourth").model_copy(update={"revision": 99})
    await kind.save(config_store, ignored, None)  # the store keeps the revision, not the caller
    fourth = await kind.get(config_store, tenant, stored)
    assert fourth is not None and fourth.revision == 4


@by_kind
async def test_save_expecting_a_stale_revision_is_refused_and_changes_nothing(
    config_store: ConfigStore, kind: Kind
) -> None:
    tenant, stored = await saved(config_store, kind)
    await kind.save(config_store, changed(kind, stored, "newer"), 1)
    with pytest.raises(StaleRevisionError) as refused:
        await kind.save(config_store, changed(kind, stored, "stale"), 1)
    assert isinstance(refused.value, ConflictError)  # a stale write is a conflict (409 by default)
    after = await kind.get(config_store, tenant, stored)
    assert after is not None and (after.revision, value_of(kind, after)) == (2, "newer")


@by_kind
async def test_conditional_save_needs_a_live_row_of_the_tenant(config_store: ConfigStore, kind: Kind) -> None:
    tenant, stored = await saved(config_store, kind)
    other = new_tenant()
    other_owner = await saved_agent(config_store, other)
    never_saved = kind.make(await saved_agent(config_store, tenant))
    with pytest.raises(NotFoundError):  # a conditional save never creates
        await kind.save(config_store, never_saved, 1)
    assert await kind.get(config_store, tenant, never_saved) is None

    moved: dict[str, Any] = {"tenant_id": other}
    if kind.name != "agent":
        moved["agent_id"] = other_owner.id
    foreign = stored.model_copy(update=moved)
    with pytest.raises(NotFoundError):  # another tenant's id reads as absent
        await kind.save(config_store, changed(kind, foreign, "hijack"), 1)
    assert await kind.get(config_store, other, foreign) is None
    unchanged = await kind.get(config_store, tenant, stored)
    assert unchanged is not None and unchanged.revision == 1 and value_of(kind, unchanged) != "hijack"

    assert await kind.delete(config_store, tenant, stored) is True
    with pytest.raises(NotFoundError):  # deleted stays deleted
        await kind.save(config_store, changed(kind, stored, "revived"), 1)
    assert await kind.get(config_store, tenant, stored) is None


@by_kind
async def test_of_concurrent_saves_expecting_one_revision_exactly_one_wins(
    config_store: ConfigStore, kind: Kind
) -> None:
    tenant, stored = await saved(config_store, kind)
    results = await asyncio.gather(
        *(kind.save(config_store, changed(kind, stored, f"writer {n}"), 1) for n in range(10)),
        return_exceptions=True,
    )
    winners = [n for n, result in enumerate(results) if not isinstance(result, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, StaleRevisionError) for r in results if isinstance(r, BaseException))
    after = await kind.get(config_store, tenant, stored)
    assert after is not None and (after.revision, value_of(kind, after)) == (2, f"writer {winners[0]}")


@pytest.mark.parametrize("bad", [0, -1, 2**31, True, "1", 1.0])
async def test_expected_revision_must_be_a_revision(config_store: ConfigStore, bad: Any) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    with pytest.raises(InvalidDataError):
        await config_store.save_agent(
            owner.model_copy(update={"description": "changed"}), expected_revision=bad
        )
    stored = await config_store.get_agent(tenant, owner.id)
    assert stored is not None and stored.description is None and stored.revision == 1


# --- scenario versions never decrease --------------------------------------------------------


async def test_a_scenario_version_never_decreases(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    third = scenario(owner, version=3, description="v3")
    await config_store.save_scenario(third)
    for expected in (None, 1):  # unconditional and conditional saves alike
        with pytest.raises(ConflictError) as refused:
            await config_store.save_scenario(
                third.model_copy(update={"version": 2}), expected_revision=expected
            )
        assert not isinstance(refused.value, StaleRevisionError)
    stored = await config_store.get_scenario(tenant, third.id)
    assert stored is not None and (stored.version, stored.revision) == (3, 1)

    await config_store.save_scenario(
        third.model_copy(update={"description": "same version"}), expected_revision=1
    )
    await config_store.save_scenario(third.model_copy(update={"version": 4}), expected_revision=2)
    stored = await config_store.get_scenario(tenant, third.id)
    assert stored is not None and (stored.version, stored.revision) == (4, 3)


async def test_a_flow_change_and_an_edit_of_one_revision_cannot_both_land(config_store: ConfigStore) -> None:
    """The lost update of the issue: an edit based on version 1 must not write version 1's steps
    back over version 2."""
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    first = scenario(owner)
    await config_store.save_scenario(first)
    new_flow = scenario(owner, id=first.id, version=2)  # other steps
    described = first.model_copy(update={"description": "edited"})
    results = await asyncio.gather(
        config_store.save_scenario(new_flow, expected_revision=1),
        config_store.save_scenario(described, expected_revision=1),
        return_exceptions=True,
    )
    assert sum(isinstance(r, StaleRevisionError) for r in results) == 1
    stored = await config_store.get_scenario(tenant, first.id)
    assert stored is not None and stored.revision == 2
    if stored.version == 2:
        assert [s.id for s in stored.steps] == [s.id for s in new_flow.steps]
    else:
        assert stored.description == "edited" and [s.id for s in stored.steps] == [s.id for s in first.steps]
