"""ConfigStore contract: rules (CRUD, ordering, filters) and ``vector_search_rules``."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from focal.alignment.models import Rule, Scope
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.stores.inmemory import InMemoryConfigStore
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from tests.contract.config_backends import (
    TEST_EMBEDDING_DIMENSIONS,
    agent,
    config_store_fixture,  # noqa: F401 - the parametrised fixture
    rule,
    saved_agent,
    without_updated_at,
)
from tests.support import cosine, exact_score, new_tenant, normalized, unit_vector

# Non-collinear vectors whose cosine to QUERY differ clearly: ranking is what they test.
QUERY = normalized([1.0, 0.2, 0.0, 0.1])
NEAR = normalized([0.9, 0.3, 0.1, 0.0])
MIDDLE = normalized([0.5, 0.8, 0.2, 0.1])
FAR = normalized([0.0, 0.3, 1.0, 0.2])
OPPOSITE = normalized([-1.0, -0.1, 0.2, 0.0])
# Finite vectors whose cosine pgvector's float32 arithmetic cannot compute (squared norms that
# underflow or overflow float32): refused like zero vectors, on writes and searches.
DEGENERATE_VECTORS = {
    "underflows-in-float32": [1e-25] + [0.0] * (TEST_EMBEDDING_DIMENSIONS - 1),
    "rounds-to-zero-in-float32": [1e-50] * TEST_EMBEDDING_DIMENSIONS,
    "underflows-in-double": [1e-170] * TEST_EMBEDDING_DIMENSIONS,
    "overflows-in-float32": [1e20] + [1.0] * (TEST_EMBEDDING_DIMENSIONS - 1),
}
SEARCH_BACKENDS = [
    "inmemory",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-index-plan", marks=pytest.mark.postgres),
]


@pytest.fixture(params=SEARCH_BACKENDS, name="search_store")
def search_store_fixture(request: pytest.FixtureRequest) -> ConfigStore:
    """The contract's backends for rule vector search, plus the PostgreSQL store forced onto its
    HNSW plan (the one an agent with more than ``exact_scan_max_rows`` rules takes): every plan
    must return the same rows in the same order."""
    if request.param == "inmemory":
        return InMemoryConfigStore(embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    from focal.alignment.stores.postgres import PostgresConfigStore

    plan: dict[str, Any] = {"exact_scan_max_rows": 0} if request.param == "postgres-index-plan" else {}
    return PostgresConfigStore(
        request.getfixturevalue("pg_pool"), embedding_dimensions=TEST_EMBEDDING_DIMENSIONS, **plan
    )


async def test_saved_rule_reads_back_with_every_field(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    new = rule(
        owner,
        description="refunds",
        action_text="a" * 20_000,  # unbounded text
        scope=Scope.STEP,
        scope_id=uuid4(),
        priority=-100,
        enabled=False,
        max_fires_per_session=3,
        cooldown_turns=2,
        is_hard_constraint=True,
        attached_tool_ids=["refund", "crm"],
        attached_template_ids=[uuid4(), uuid4()],
        embedding=NEAR,
        embedding_model="hashing-8",
    )
    assert await config_store.save_rule(new) == new.id
    stored = await config_store.get_rule(tenant, new.id)
    assert stored is not None
    assert stored.embedding == pytest.approx(NEAR, abs=1e-6)  # stored as float32
    assert without_updated_at(stored) | {"embedding": None} == without_updated_at(new) | {"embedding": None}
    assert stored.updated_at >= new.created_at


async def test_rules_are_invisible_to_other_tenants(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner = await saved_agent(config_store, tenant)
    mine = rule(owner, embedding=QUERY)
    await config_store.save_rule(mine)
    assert await config_store.get_rule(other, mine.id) is None
    assert await config_store.get_rules(other, owner.id, enabled_only=False) == []
    assert await config_store.vector_search_rules(QUERY, other, owner.id) == []
    assert await config_store.delete_rule(other, mine.id) is False
    assert await config_store.get_rule(tenant, mine.id) is not None


async def test_rule_needs_a_live_agent_of_the_same_tenant(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    foreign_agent = await saved_agent(config_store, other)
    with pytest.raises(NotFoundError):
        await config_store.save_rule(rule(agent(tenant)))  # agent never saved
    with pytest.raises(NotFoundError):  # the agent id exists, but in another tenant
        await config_store.save_rule(rule(foreign_agent).model_copy(update={"tenant_id": tenant}))
    assert await config_store.get_rules(tenant, foreign_agent.id, enabled_only=False) == []
    assert await config_store.get_rules(other, foreign_agent.id, enabled_only=False) == []


async def test_rule_id_of_another_tenant_is_a_conflict(config_store: ConfigStore) -> None:
    tenant, other = new_tenant(), new_tenant()
    owner, foreign_owner = await saved_agent(config_store, tenant), await saved_agent(config_store, other)
    mine = rule(owner, name="mine")
    await config_store.save_rule(mine)
    clash = rule(foreign_owner, id=mine.id, name="theirs")
    with pytest.raises(ConflictError):
        await config_store.save_rule(clash)
    stored = await config_store.get_rule(tenant, mine.id)
    assert stored is not None and stored.name == "mine"
    assert await config_store.get_rule(other, mine.id) is None


async def test_get_rules_orders_by_priority_desc_created_at_then_id(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    base = datetime(2026, 2, 1, tzinfo=UTC)
    tied = sorted([uuid4(), uuid4()])
    rules = [
        rule(owner, priority=5, created_at=base + timedelta(minutes=1)),
        rule(owner, priority=5, created_at=base),
        rule(owner, id=tied[1], priority=0, created_at=base),
        rule(owner, id=tied[0], priority=0, created_at=base),
        rule(owner, priority=100, created_at=base + timedelta(days=1)),
        rule(owner, priority=-3, created_at=base - timedelta(days=1)),
    ]
    for r in rules:
        await config_store.save_rule(r)
    got = await config_store.get_rules(tenant, owner.id)
    assert [r.id for r in got] == [rules[4].id, rules[1].id, rules[0].id, tied[0], tied[1], rules[5].id]


async def test_get_rules_filters_scope_enabled_and_agent(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner, other_agent = await saved_agent(config_store, tenant), await saved_agent(config_store, tenant)
    step_a, step_b, flow = uuid4(), uuid4(), uuid4()
    global_rule = rule(owner)
    step_a_rule = rule(owner, scope=Scope.STEP, scope_id=step_a)
    step_b_rule = rule(owner, scope=Scope.STEP, scope_id=step_b)
    flow_rule = rule(owner, scope=Scope.SCENARIO, scope_id=flow)
    disabled = rule(owner, enabled=False)
    elsewhere = rule(other_agent)
    for r in (global_rule, step_a_rule, step_b_rule, flow_rule, disabled, elsewhere):
        await config_store.save_rule(r)

    def ids(rules: list[Rule]) -> set[object]:
        return {r.id for r in rules}

    assert ids(await config_store.get_rules(tenant, owner.id)) == {
        global_rule.id,
        step_a_rule.id,
        step_b_rule.id,
        flow_rule.id,
    }
    assert ids(await config_store.get_rules(tenant, owner.id, enabled_only=False)) == {
        global_rule.id,
        step_a_rule.id,
        step_b_rule.id,
        flow_rule.id,
        disabled.id,
    }
    assert ids(await config_store.get_rules(tenant, owner.id, scope=Scope.STEP)) == {
        step_a_rule.id,
        step_b_rule.id,
    }
    assert ids(await config_store.get_rules(tenant, owner.id, scope=Scope.STEP, scope_id=step_b)) == {
        step_b_rule.id
    }
    assert ids(await config_store.get_rules(tenant, owner.id, scope_id=flow)) == {flow_rule.id}
    assert ids(await config_store.get_rules(tenant, owner.id, scope=Scope.GLOBAL)) == {global_rule.id}
    assert ids(await config_store.get_rules(tenant, other_agent.id)) == {elsewhere.id}


async def test_soft_deleted_rule_disappears_everywhere(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    gone, kept = rule(owner, embedding=QUERY), rule(owner, embedding=NEAR)
    await config_store.save_rule(gone)
    await config_store.save_rule(kept)
    assert await config_store.delete_rule(tenant, gone.id) is True
    assert await config_store.delete_rule(tenant, gone.id) is False
    assert await config_store.get_rule(tenant, gone.id) is None
    assert [r.id for r in await config_store.get_rules(tenant, owner.id, enabled_only=False)] == [kept.id]
    assert [r.id for r, _ in await config_store.vector_search_rules(QUERY, tenant, owner.id)] == [kept.id]
    with pytest.raises(NotFoundError):
        await config_store.save_rule(gone)
    assert await config_store.get_rule(tenant, gone.id) is None


async def test_rule_copies_are_independent(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    new = rule(owner, attached_tool_ids=["a"], embedding=NEAR)
    await config_store.save_rule(new)
    new.attached_tool_ids.append("added after save")
    read = await config_store.get_rule(tenant, new.id)
    assert read is not None
    read.attached_tool_ids.append("added after read")
    assert read.embedding is not None
    read.embedding[0] = 42.0
    (found, _), *_ = await config_store.vector_search_rules(QUERY, tenant, owner.id)
    found.attached_tool_ids.clear()
    again = await config_store.get_rule(tenant, new.id)
    assert again is not None and again.attached_tool_ids == ["a"]
    assert again.embedding == pytest.approx(NEAR, abs=1e-6)


async def test_vector_search_ranks_by_cosine_with_exact_scores(search_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    vectors = {"far": FAR, "near": NEAR, "opposite": OPPOSITE, "middle": MIDDLE}
    saved = {name: rule(owner, name=name, embedding=vector) for name, vector in vectors.items()}
    for r in saved.values():
        await search_store.save_rule(r)
    await search_store.save_rule(rule(owner, name="no embedding"))

    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id, min_score=-1.0)
    assert [r.name for r, _ in hits] == ["near", "middle", "far", "opposite"]
    for found, score in hits:
        assert score == pytest.approx(cosine(vectors[found.name], QUERY), abs=1e-5)
    assert hits[-1][1] < 0

    top = await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=2)
    assert [r.name for r, _ in top] == ["near", "middle"]
    positive = await search_store.vector_search_rules(QUERY, tenant, owner.id)  # min_score 0 by default
    assert [r.name for r, _ in positive] == ["near", "middle", "far"]
    threshold = (cosine(MIDDLE, QUERY) + cosine(FAR, QUERY)) / 2
    assert [
        r.name
        for r, _ in await search_store.vector_search_rules(QUERY, tenant, owner.id, min_score=threshold)
    ] == [
        "near",
        "middle",
    ]


async def test_vector_search_breaks_score_ties_on_id(search_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    ids = sorted([uuid4(), uuid4(), uuid4()])
    for rule_id in reversed(ids):
        await search_store.save_rule(rule(owner, id=rule_id, embedding=NEAR))
    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id)
    assert [r.id for r, _ in hits] == ids
    assert len({score for _, score in hits}) == 1


async def test_vector_search_admits_only_selected_scopes(search_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    step, other_step, flow = uuid4(), uuid4(), uuid4()
    by_name = {
        "global": rule(owner, name="global", embedding=unit_vector(0)),
        "step": rule(owner, name="step", scope=Scope.STEP, scope_id=step, embedding=normalized([1, 1])),
        "other step": rule(
            owner, name="other step", scope=Scope.STEP, scope_id=other_step, embedding=normalized([1, 2])
        ),
        "flow": rule(owner, name="flow", scope=Scope.SCENARIO, scope_id=flow, embedding=normalized([1, 3])),
    }
    for r in by_name.values():
        await search_store.save_rule(r)

    async def names(scopes: list[tuple[Scope, object]] | None) -> list[str]:
        hits = await search_store.vector_search_rules(unit_vector(0), tenant, owner.id, scopes=scopes)  # type: ignore[arg-type]
        return [r.name for r, _ in hits]

    assert await names(None) == ["global", "step", "other step", "flow"]
    assert await names([(Scope.GLOBAL, None), (Scope.STEP, step)]) == ["global", "step"]
    assert await names([(Scope.STEP, None)]) == ["step", "other step"]
    assert await names([(Scope.SCENARIO, flow), (Scope.STEP, other_step)]) == ["other step", "flow"]
    assert await names([(Scope.SCENARIO, uuid4())]) == []
    assert await names([]) == []


async def test_vector_search_filters_model_agent_enabled_and_embedding(search_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner, other_agent = await saved_agent(search_store, tenant), await saved_agent(search_store, tenant)
    model_a = rule(owner, name="a", embedding=NEAR, embedding_model="model-a")
    model_b = rule(owner, name="b", embedding=MIDDLE, embedding_model="model-b")
    disabled = rule(owner, name="disabled", embedding=QUERY, embedding_model="model-a", enabled=False)
    elsewhere = rule(other_agent, name="elsewhere", embedding=QUERY, embedding_model="model-a")
    for r in (model_a, model_b, disabled, elsewhere):
        await search_store.save_rule(r)
    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id)
    assert [r.name for r, _ in hits] == ["a", "b"]
    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id, embedding_model="model-b")
    assert [r.name for r, _ in hits] == ["b"]
    assert await search_store.vector_search_rules(QUERY, tenant, owner.id, embedding_model="unknown") == []
    assert [r.name for r, _ in await search_store.vector_search_rules(QUERY, tenant, other_agent.id)] == [
        "elsewhere"
    ]


async def test_vector_search_limit_caps_results(search_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    for index in range(12):
        await search_store.save_rule(rule(owner, embedding=normalized([1.0, index / 10, (index % 3) / 5])))
    assert len(await search_store.vector_search_rules(QUERY, tenant, owner.id)) == 10  # default limit
    assert len(await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=1000)) == 12
    one = await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=1)
    best = max(
        await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=12), key=lambda hit: hit[1]
    )
    assert one[0][0].id == best[0].id


async def test_vector_search_ties_beyond_the_candidate_pool_break_on_id(search_store: ConfigStore) -> None:
    """40 equal scores: more than the ``limit + 16`` candidates an index plan fetches."""
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    best = rule(owner, name="best", embedding=QUERY)
    twins = [rule(owner, name=f"twin {i}", embedding=MIDDLE) for i in range(40)]
    worse = rule(owner, name="worse", embedding=FAR)
    for r in (worse, *twins, best):
        await search_store.save_rule(r)
    twin_ids = sorted(r.id for r in twins)
    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=5)
    assert [r.id for r, _ in hits] == [best.id, *twin_ids[:4]]
    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=30)
    assert [r.id for r, _ in hits] == [best.id, *twin_ids[:29]]
    everything = await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=100)
    assert [r.id for r, _ in everything] == [best.id, *twin_ids, worse.id]
    assert await search_store.vector_search_rules(QUERY, new_tenant(), owner.id, limit=100) == []


async def test_vector_search_min_score_one_admits_exactly_the_same_direction(
    search_store: ConfigStore,
) -> None:
    """Copies and power-of-two multiples of the query score exactly 1.0; near-copies, which
    float32 arithmetic rounds up to 1, do not. Several queries: rounding depends on the vector."""
    tenant, rng = new_tenant(), random.Random(13)
    for _ in range(5):
        owner = await saved_agent(search_store, tenant)
        query = normalized([rng.uniform(-1.0, 1.0) for _ in range(TEST_EMBEDDING_DIMENSIONS)])
        same = [rule(owner, embedding=query) for _ in range(3)]
        same.append(rule(owner, embedding=[2.0 * x for x in query]))
        near = [rule(owner, embedding=[x * (1 + rng.gauss(0.0, 1e-4)) for x in query]) for _ in range(8)]
        for r in (*near, *same):
            await search_store.save_rule(r)
        hits = await search_store.vector_search_rules(query, tenant, owner.id, min_score=1.0, limit=100)
        assert [(r.id, score) for r, score in hits] == [(i, 1.0) for i in sorted(r.id for r in same)]
        below = await search_store.vector_search_rules(query, tenant, owner.id, min_score=0.99, limit=100)
        assert sorted(r.id for r, _ in below[len(same) :]) == sorted(r.id for r in near)
        assert all(score < 1.0 for _, score in below[len(same) :])


async def test_vector_search_orders_near_ties_by_their_exact_scores(search_store: ConfigStore) -> None:
    """Scores closer than float32 arithmetic resolves: the exact cosine (12 decimals) decides the
    order, the scores and the ``min_score`` cut, alike on every backend."""
    tenant, rng = new_tenant(), random.Random(15)
    owner = await saved_agent(search_store, tenant)
    rows = [rule(owner, embedding=[x + rng.gauss(0.0, 1e-4) for x in QUERY]) for _ in range(30)]
    for r in rows:
        await search_store.save_rule(r)
    expected = sorted(
        ((exact_score(QUERY, r.embedding or []), r.id) for r in rows), key=lambda p: (-p[0], p[1])
    )
    hits = await search_store.vector_search_rules(QUERY, tenant, owner.id, limit=10)
    assert [(r.id, score) for r, score in hits] == [(i, score) for score, i in expected[:10]]
    threshold = expected[6][0]
    cut = await search_store.vector_search_rules(QUERY, tenant, owner.id, min_score=threshold, limit=100)
    assert [r.id for r, _ in cut] == [i for score, i in expected if score >= threshold]


async def test_vector_search_min_score_zero_keeps_orthogonal_rules_at_score_zero(
    search_store: ConfigStore,
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    query = normalized([1.0, 1.0])
    aligned = rule(owner, embedding=query)
    orthogonal = [rule(owner, embedding=normalized([1.0, -1.0])), rule(owner, embedding=unit_vector(5))]
    opposed = rule(owner, embedding=normalized([-1.0, -0.5]))
    for r in (aligned, *orthogonal, opposed):
        await search_store.save_rule(r)
    hits = await search_store.vector_search_rules(query, tenant, owner.id, min_score=0.0)
    assert [(r.id, score) for r, score in hits] == [
        (aligned.id, 1.0),
        *((i, 0.0) for i in sorted(r.id for r in orthogonal)),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"query_embedding": [1.0] * (TEST_EMBEDDING_DIMENSIONS - 1)},
        {"query_embedding": [1.0] * (TEST_EMBEDDING_DIMENSIONS + 1)},
        {"query_embedding": [0.0] * TEST_EMBEDDING_DIMENSIONS},
        {"query_embedding": [float("nan")] + [1.0] * (TEST_EMBEDDING_DIMENSIONS - 1)},
        {"query_embedding": [1e39] * TEST_EMBEDDING_DIMENSIONS},  # does not fit a float32
        *({"query_embedding": vector} for vector in DEGENERATE_VECTORS.values()),
        {"limit": 0},
        {"limit": 1001},
        {"min_score": 1.5},
        {"min_score": -1.01},
        {"scopes": [("NOT A SCOPE", None)]},
        {"scopes": [(Scope.GLOBAL, uuid4())]},
    ],
    ids=lambda bad: f"{next(iter(bad))}-{str(next(iter(bad.values())))[:20]}",
)
async def test_vector_search_refuses_bad_input(search_store: ConfigStore, bad: dict[str, object]) -> None:
    tenant = new_tenant()
    owner = await saved_agent(search_store, tenant)
    await search_store.save_rule(rule(owner, embedding=QUERY))
    arguments: dict[str, object] = {"query_embedding": QUERY} | bad
    query = arguments.pop("query_embedding")
    with pytest.raises(InvalidDataError):
        await search_store.vector_search_rules(query, tenant, owner.id, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"embedding": [1.0] * (TEST_EMBEDDING_DIMENSIONS + 1)},
        {"embedding": [0.0] * TEST_EMBEDDING_DIMENSIONS},
        {"embedding": [float("inf")] * TEST_EMBEDDING_DIMENSIONS},
        *({"embedding": vector} for vector in DEGENERATE_VECTORS.values()),
        {"priority": 101},
        {"priority": -101},
        {"scope": "SIDEWAYS"},
        {"scope": Scope.STEP, "scope_id": None},
        {"scope_id": uuid4()},  # a GLOBAL rule has no scope_id
        {"name": "n" * 256},
        {"condition_text": ""},
        {"max_fires_per_session": -1},
        {"max_fires_per_session": 2**40},
    ],
    ids=lambda bad: "-".join(bad),
)
async def test_invalid_rule_is_refused_and_changes_nothing(
    config_store: ConfigStore, bad: dict[str, object]
) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    stored = rule(owner, embedding=NEAR)
    await config_store.save_rule(stored)
    before = await config_store.get_rule(tenant, stored.id)
    with pytest.raises(InvalidDataError):
        await config_store.save_rule(stored.model_copy(update=bad))
    with pytest.raises(InvalidDataError):
        await config_store.save_rule(rule(owner).model_copy(update=bad))
    assert await config_store.get_rule(tenant, stored.id) == before
    assert len(await config_store.get_rules(tenant, owner.id, enabled_only=False)) == 1


async def test_concurrent_updates_of_one_rule_all_land_without_duplicates(config_store: ConfigStore) -> None:
    tenant = new_tenant()
    owner = await saved_agent(config_store, tenant)
    base = rule(owner)
    await config_store.save_rule(base)
    versions = [base.model_copy(update={"priority": p}) for p in range(10)]
    assert await asyncio.gather(*(config_store.save_rule(v) for v in versions)) == [base.id] * 10
    rules = await config_store.get_rules(tenant, owner.id)
    assert len(rules) == 1 and rules[0].priority in range(10)
