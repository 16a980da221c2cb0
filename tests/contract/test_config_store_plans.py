"""ConfigStore contract: migration plans and scenario archives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from focal.alignment.models import MigrationPlanStatus, ScopeFilter
from focal.alignment.stores.config_store import ConfigStore
from focal.conversation.models import Channel
from focal.errors import ConflictError, InvalidDataError
from tests.contract.config_backends import (
    TEST_EMBEDDING_DIMENSIONS,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    plan,
    saved_agent,
    scenario,
)
from tests.support import new_tenant, normalized

BASE = datetime(2026, 5, 1, 12, tzinfo=UTC)

# --- migration plans --------------------------------------------------------------------------


async def test_migration_plan_round_trips_every_field(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    new = plan(
        tenant,
        from_version=2,
        to_version=5,
        status=MigrationPlanStatus.APPROVED,
        transformation_map={"steps": {"a": "b"}, "weights": [0.5, 1]},
        anchor_policies={"anchor": {"policy": "keep"}},
        scope_filter=ScopeFilter(
            include_channels=[Channel.WEB, Channel.SMS],
            exclude_step_names=["done"],
            max_session_age_days=30,
        ),
        created_at=BASE,
        approved_at=BASE + timedelta(hours=1),
        deployed_at=BASE + timedelta(hours=2),
    )
    assert await config_store.save_migration_plan(new) == new.id
    assert await config_store.get_migration_plan(tenant, new.id) == new

    changed = new.model_copy(
        update={"status": MigrationPlanStatus.DEPLOYED, "created_at": BASE + timedelta(days=9)}
    )
    await config_store.save_migration_plan(changed)
    stored = await config_store.get_migration_plan(tenant, new.id)
    assert stored is not None and stored.status is MigrationPlanStatus.DEPLOYED
    assert stored.created_at == BASE  # kept from the first save


async def test_migration_plans_list_filters_orders_and_limits(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    flow, other_flow = uuid4(), uuid4()
    tied = sorted([uuid4(), uuid4()])
    plans = [
        plan(tenant, flow, created_at=BASE, id=tied[1]),
        plan(tenant, flow, created_at=BASE, id=tied[0], status=MigrationPlanStatus.APPROVED),
        plan(tenant, flow, created_at=BASE + timedelta(minutes=5), from_version=2, to_version=3),
        plan(tenant, other_flow, created_at=BASE - timedelta(minutes=5), status=MigrationPlanStatus.APPROVED),
        plan(other, flow, created_at=BASE + timedelta(days=1)),
    ]
    for p in plans:
        await config_store.save_migration_plan(p)

    async def ids(**filters: Any) -> list[object]:
        return [p.id for p in await config_store.list_migration_plans(tenant, **filters)]

    assert await ids() == [plans[2].id, tied[0], tied[1], plans[3].id]
    assert await ids(scenario_id=flow) == [plans[2].id, tied[0], tied[1]]
    assert await ids(status=MigrationPlanStatus.APPROVED) == [tied[0], plans[3].id]
    assert await ids(scenario_id=flow, status=MigrationPlanStatus.APPROVED) == [tied[0]]
    assert await ids(status=MigrationPlanStatus.REJECTED) == []
    assert await ids(limit=2) == [plans[2].id, tied[0]]
    assert [p.id for p in await config_store.list_migration_plans(other)] == [plans[4].id]
    for bad in ({"limit": 0}, {"limit": 1001}, {"status": "SHIPPED"}):
        with pytest.raises(InvalidDataError):
            await config_store.list_migration_plans(tenant, **bad)  # type: ignore[arg-type]


async def test_migration_plan_for_versions_is_the_newest_match(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    flow = uuid4()
    rejected = plan(tenant, flow, status=MigrationPlanStatus.REJECTED, created_at=BASE)
    draft = plan(tenant, flow, created_at=BASE + timedelta(hours=1))
    later_versions = plan(tenant, flow, from_version=2, to_version=3, created_at=BASE + timedelta(hours=2))
    for p in (rejected, draft, later_versions):
        await config_store.save_migration_plan(p)
    found = await config_store.get_migration_plan_for_versions(tenant, flow, 1, 2)
    assert found is not None and found.id == draft.id
    found = await config_store.get_migration_plan_for_versions(tenant, flow, 2, 3)
    assert found is not None and found.id == later_versions.id
    assert await config_store.get_migration_plan_for_versions(tenant, flow, 1, 3) is None
    assert await config_store.get_migration_plan_for_versions(tenant, uuid4(), 1, 2) is None
    assert await config_store.get_migration_plan_for_versions(other, flow, 1, 2) is None


async def test_migration_plans_hard_delete_and_isolate_tenants(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    mine = plan(tenant, transformation_map={"k": "v"})
    await config_store.save_migration_plan(mine)
    assert await config_store.get_migration_plan(other, mine.id) is None
    assert await config_store.delete_migration_plan(other, mine.id) is False
    with pytest.raises(ConflictError):
        await config_store.save_migration_plan(plan(other, id=mine.id))
    assert await config_store.list_migration_plans(other) == []

    read = await config_store.get_migration_plan(tenant, mine.id)
    assert read is not None
    read.transformation_map["k"] = "mutated"
    mine.transformation_map["k"] = "mutated too"
    again = await config_store.get_migration_plan(tenant, mine.id)
    assert again is not None and again.transformation_map == {"k": "v"}

    assert await config_store.delete_migration_plan(tenant, mine.id) is True
    assert await config_store.delete_migration_plan(tenant, mine.id) is False
    assert await config_store.get_migration_plan(tenant, mine.id) is None
    await config_store.save_migration_plan(mine)  # hard-deleted: the id may be saved again
    assert await config_store.get_migration_plan(tenant, mine.id) is not None


@pytest.mark.parametrize(
    "bad",
    [
        {"status": "SHIPPED"},
        {"to_version": 1},  # not after from_version
        {"from_version": 0},
        {"transformation_map": {"x": float("nan")}},
        {"anchor_policies": {"x": object()}},
        {"approved_at": datetime(2026, 1, 1)},  # naive
    ],
    ids=lambda bad: next(iter(bad)),
)
async def test_invalid_migration_plan_is_refused_and_changes_nothing(
    config_store: ConfigStore, bad: dict[str, Any]
) -> None:
    tenant = new_tenant()
    stored = plan(tenant)
    await config_store.save_migration_plan(stored)
    with pytest.raises(InvalidDataError):
        await config_store.save_migration_plan(stored.model_copy(update=bad))
    with pytest.raises(InvalidDataError):
        await config_store.save_migration_plan(plan(tenant).model_copy(update=bad))
    assert await config_store.list_migration_plans(tenant) == [stored]


# --- scenario archives ------------------------------------------------------------------------


async def test_archived_versions_are_immutable_snapshots(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner = await saved_agent(config_store, tenant)
    version_one = scenario(owner, version=1, entry_embedding=normalized([0.1, 0.2, 0.3]), tags=["v1"])
    await config_store.save_scenario(version_one)
    await config_store.archive_scenario_version(tenant, version_one)
    version_two = version_one.model_copy(update={"version": 2, "tags": ["v2"]}, deep=True)
    await config_store.save_scenario(version_two)
    await config_store.archive_scenario_version(tenant, version_two)
    version_one.tags.append("mutated after archiving")

    first = await config_store.get_archived_scenario(tenant, version_one.id, 1)
    assert first is not None and first.tags == ["v1"] and first.version == 1
    assert first.entry_embedding == version_one.entry_embedding  # snapshots keep vectors exactly
    assert first.model_dump(exclude={"tags"}) == version_one.model_dump(exclude={"tags"})
    first.tags.append("mutated after reading")
    again = await config_store.get_archived_scenario(tenant, version_one.id, 1)
    assert again is not None and again.tags == ["v1"]
    second = await config_store.get_archived_scenario(tenant, version_one.id, 2)
    assert second is not None and second.tags == ["v2"]
    assert await config_store.get_archived_scenario(tenant, version_one.id, 3) is None
    assert await config_store.get_archived_scenario(other, version_one.id, 1) is None

    await config_store.delete_scenario(tenant, version_one.id)  # archives outlive the scenario
    assert await config_store.get_archived_scenario(tenant, version_one.id, 2) is not None


async def test_archiving_twice_or_for_another_tenant_fails_and_changes_nothing(
    config_store: ConfigStore,
) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner = await saved_agent(config_store, tenant)
    snapshot = scenario(owner, tags=["original"])
    await config_store.archive_scenario_version(tenant, snapshot)
    with pytest.raises(ConflictError):
        await config_store.archive_scenario_version(tenant, snapshot.model_copy(update={"tags": ["second"]}))
    with pytest.raises(InvalidDataError):
        await config_store.archive_scenario_version(other, snapshot)
    with pytest.raises(InvalidDataError):
        bad_vector = snapshot.model_copy(
            update={"version": 7, "entry_embedding": [1.0] * (TEST_EMBEDDING_DIMENSIONS + 2)}
        )
        await config_store.archive_scenario_version(tenant, bad_vector)
    stored = await config_store.get_archived_scenario(tenant, snapshot.id, snapshot.version)
    assert stored is not None and stored.tags == ["original"]
    assert await config_store.get_archived_scenario(other, snapshot.id, snapshot.version) is None
    assert await config_store.get_archived_scenario(tenant, snapshot.id, 7) is None
