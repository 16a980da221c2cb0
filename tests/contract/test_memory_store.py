"""MemoryStore contract, episodes: add/get, vector search, text search, delete_by_group.

Backends and builders: ``tests/contract/memory_backends.py``; the graph and erasure are in
``test_memory_store_graph.py``.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from focal.errors import ConflictError, InvalidDataError
from focal.memory.models import EpisodeType
from focal.memory.stores.store import MemoryStore
from focal.models import utc_now
from focal.validation import float32
from tests.contract.memory_backends import (
    DIMS,
    hit_ids,
    ids,
    make_episode,
    memory_store_fixture,  # noqa: F401 - the parametrised fixture
)
from tests.support import cosine, exact_score, new_tenant, normalized, unit_vector

# Finite vectors whose cosine pgvector's float32 arithmetic cannot compute: their squared norm
# underflows (NaN scores that bypassed min_score and ranked first) or overflows (a score of 0 for
# a collinear vector); in double precision the in-memory store divided by zero.
DEGENERATE_VECTORS = {
    "underflows-in-float32": [1e-25] + [0.0] * (DIMS - 1),
    "rounds-to-zero-in-float32": [1e-50] * DIMS,
    "underflows-in-double": [1e-170] * DIMS,
    "overflows-in-float32": [1e20] + [1.0] * (DIMS - 1),
}

# --- episodes: add / get ----------------------------------------------------------------------


async def test_add_and_get_episode_round_trips_every_field(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    now = utc_now()
    episode = make_episode(
        tenant,
        agent,
        "the customer asked about refunds",
        customer_profile_id=uuid4(),
        session_id=uuid4(),
        group_id="session-1",
        episode_type=EpisodeType.FACT,
        importance=0.9,
        embedding=[0.5, -1.0, 0.25, 2.0, 0.0, 1.0, -0.125, 3.0],
        embedding_model="test-model",
        valid_from=now - timedelta(days=1),
        valid_to=now + timedelta(days=1),
        recorded_at=now,
        metadata={"channel": "WEB", "tags": ["a", "b"], "nested": {"n": 1}},
    )
    assert await store.add_episode(episode) == episode.id
    assert await store.get_episode(tenant, episode.id) == episode


async def test_get_episode_of_unknown_id_or_other_tenant_is_none(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    episode = make_episode(tenant, agent)
    await store.add_episode(episode)
    assert await store.get_episode(tenant, uuid4()) is None
    assert await store.get_episode(new_tenant(), episode.id) is None


async def test_add_episode_with_existing_id_conflicts_and_keeps_the_original(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    original = make_episode(tenant, agent, "original")
    await store.add_episode(original)
    with pytest.raises(ConflictError):
        await store.add_episode(original.model_copy(update={"content": "overwritten"}))
    other_tenant = new_tenant()
    with pytest.raises(ConflictError):
        await store.add_episode(original.model_copy(update={"tenant_id": other_tenant, "content": "stolen"}))
    assert await store.get_episode(tenant, original.id) == original
    assert await store.get_episode(other_tenant, original.id) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"embedding": [1.0] * (DIMS - 1)},
        {"embedding": [1.0] * (DIMS + 1)},
        {"embedding": [0.0] * DIMS},
        {"embedding": [float("nan")] + [1.0] * (DIMS - 1)},
        {"embedding": [1e39] + [1.0] * (DIMS - 1)},  # finite, but beyond float32 (pgvector's type)
        *({"embedding": vector} for vector in DEGENERATE_VECTORS.values()),
        {"valid_from": datetime(2026, 1, 2), "valid_to": None},
        {"valid_from": datetime(2026, 1, 2).astimezone(), "valid_to": datetime(2026, 1, 1).astimezone()},
        {"metadata": {"when": datetime(2026, 1, 1).astimezone()}},
        {"metadata": {"score": float("nan")}},
        {"embedding_model": None},
    ],
    ids=[
        "short-vector",
        "long-vector",
        "zero-vector",
        "nan",
        "beyond-float32",
        *DEGENERATE_VECTORS,
        "naive-datetime",
        "valid-to-before-from",
        "metadata-not-json",
        "metadata-nan",
        "embedding-without-model",
    ],
)
async def test_invalid_episode_is_refused_and_nothing_is_stored(
    store: MemoryStore, bad: dict[str, Any]
) -> None:
    tenant, agent = new_tenant(), uuid4()
    # model_copy(update=...) skips pydantic's validation, as model_construct does: the store is the
    # boundary that must re-check everything
    episode = make_episode(tenant, agent, embedding=[1.0] * DIMS).model_copy(update=bad)
    with pytest.raises(InvalidDataError):
        await store.add_episode(episode)
    assert await store.get_episode(tenant, episode.id) is None
    assert await store.text_search_episodes("hello", tenant, agent) == []


async def test_episodes_are_copied_in_and_out(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    episode = make_episode(tenant, agent, "kept", metadata={"k": [1]}, embedding=unit_vector(0))
    await store.add_episode(episode)
    expected = episode.model_copy(deep=True)
    episode.content = "mutated after add"
    episode.metadata["k"].append(2)
    assert episode.embedding is not None
    episode.embedding[0] = 5.0
    fetched = await store.get_episode(tenant, episode.id)
    assert fetched == expected
    assert fetched is not None
    fetched.metadata["k"].append(3)
    fetched.content = "mutated after get"
    [(hit, _)] = await store.vector_search_episodes(unit_vector(0), tenant, agent)
    hit.metadata["k"].append(4)
    assert await store.get_episode(tenant, episode.id) == expected


async def test_add_episodes_batch_is_all_or_nothing(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    batch = [make_episode(tenant, agent, f"episode {i}", embedding=unit_vector(i % DIMS)) for i in range(5)]
    assert await store.add_episodes(batch) == ids(batch)
    for episode in batch:
        assert await store.get_episode(tenant, episode.id) == episode
    fresh = make_episode(tenant, agent, "fresh")
    with pytest.raises(ConflictError):
        await store.add_episodes([fresh, batch[0]])
    with pytest.raises(InvalidDataError):
        await store.add_episodes([fresh, make_episode(tenant, agent, embedding=[1.0])])
    with pytest.raises(InvalidDataError):  # finite, but beyond pgvector's float32
        await store.add_episodes([fresh, make_episode(tenant, agent, embedding=[1e39] * DIMS)])
    assert await store.get_episode(tenant, fresh.id) is None
    assert await store.add_episodes([]) == []


async def test_add_episodes_with_an_id_of_another_tenant_conflicts_and_stores_nothing(
    store: MemoryStore,
) -> None:
    owner, tenant, agent = new_tenant(), new_tenant(), uuid4()
    theirs = make_episode(owner, agent, "theirs", embedding=unit_vector(0))
    await store.add_episode(theirs)
    fresh = make_episode(tenant, agent, "fresh words", embedding=unit_vector(1))
    clash = make_episode(tenant, agent, "clash words", embedding=unit_vector(2)).model_copy(
        update={"id": theirs.id}
    )
    with pytest.raises(ConflictError):
        await store.add_episodes([fresh, clash])
    assert await store.get_episode(tenant, fresh.id) is None
    assert await store.get_episode(tenant, theirs.id) is None
    assert await store.get_episode(owner, theirs.id) == theirs
    assert await store.vector_search_episodes(unit_vector(1), tenant, agent, min_score=-1.0) == []
    assert await store.text_search_episodes("fresh clash words", tenant, agent) == []
    assert hit_ids(await store.vector_search_episodes(unit_vector(0), owner, agent)) == [theirs.id]


# --- episodes: vector search --------------------------------------------------------------------


async def test_vector_search_ranks_by_cosine_not_by_magnitude(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    query = normalized([1.0, 0.3, 0.0, 0.1])
    vectors = {
        "near": [1.0, 0.25, 0.0, 0.0],
        "long-but-wider": [40.0, 40.0, 0.0, 0.0],
        "oblique": [0.2, 0.5, 0.9, 0.0],
        "orthogonal-ish": [0.0, 0.0, 1.0, 0.05],
        "opposite": [-1.0, -0.2, 0.0, 0.0],
    }
    episodes = {}
    for name, values in vectors.items():
        episode = make_episode(tenant, agent, name, embedding=values + [0.0] * (DIMS - len(values)))
        episodes[name] = episode
        await store.add_episode(episode)
    await store.add_episode(make_episode(tenant, agent, "no embedding"))
    expected = sorted(
        ((e, cosine(query, float32(e.embedding or []))) for e in episodes.values()),
        key=lambda pair: (-pair[1], pair[0].id),
    )
    hits = await store.vector_search_episodes(query, tenant, agent)
    assert hit_ids(hits) == [e.id for e, score in expected if score >= 0.0]
    for (hit, score), (want, want_score) in zip(hits, expected, strict=False):
        assert hit == want.model_copy(update={"embedding": float32(want.embedding or [])})
        assert score == pytest.approx(want_score, abs=1e-5)
    assert [name for name, e in episodes.items() if e.id == hits[0][0].id] == ["near"]
    everything = await store.vector_search_episodes(query, tenant, agent, min_score=-1.0)
    assert hit_ids(everything) == [e.id for e, _ in expected]
    assert everything[-1][1] < 0


async def test_vector_search_min_score_and_limit(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    query = normalized([1.0, 0.0])
    rows = [make_episode(tenant, agent, f"e{i}", embedding=normalized([1.0, 0.3 * i])) for i in range(6)]
    for row in rows:
        await store.add_episode(row)
    threshold = cosine(query, normalized([1.0, 0.3 * 3])) - 1e-4  # admits i = 0..3
    hits = await store.vector_search_episodes(query, tenant, agent, min_score=threshold)
    assert hit_ids(hits) == ids(rows[:4])
    assert all(score >= threshold for _, score in hits)
    assert hit_ids(await store.vector_search_episodes(query, tenant, agent, limit=2)) == ids(rows[:2])
    assert hit_ids(await store.vector_search_episodes(query, tenant, agent, limit=1)) == ids(rows[:1])
    assert await store.vector_search_episodes(query, tenant, agent, min_score=0.9999999) == [
        (await store.get_episode(tenant, rows[0].id), pytest.approx(1.0, abs=1e-6))
    ]


async def test_vector_search_ties_break_on_id(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    twins = [
        make_episode(tenant, agent, f"twin {i}", embedding=normalized([1.0, 2.0, 3.0])) for i in range(4)
    ]
    for twin in twins:
        await store.add_episode(twin)
    hits = await store.vector_search_episodes(normalized([1.0, 2.0, 3.0]), tenant, agent)
    assert hit_ids(hits) == sorted(ids(twins))


async def test_vector_search_ties_beyond_the_candidate_pool_break_on_id(store: MemoryStore) -> None:
    """40 equal scores: more than any backend fetches as candidates (limit + 16, or its pool of
    20), so a plan that cuts its candidates before breaking ties returns arbitrary twins."""
    tenant, agent = new_tenant(), uuid4()
    query = normalized([1.0, 0.0, 0.5])
    best = make_episode(tenant, agent, "best", embedding=query)
    twins = [
        make_episode(tenant, agent, f"twin {i}", embedding=normalized([1.0, 1.0, 0.5])) for i in range(40)
    ]
    worse = make_episode(tenant, agent, "worse", embedding=normalized([0.0, 1.0, 0.5]))
    await store.add_episodes([worse, *twins, best])
    twin_ids = sorted(ids(twins))
    assert hit_ids(await store.vector_search_episodes(query, tenant, agent, limit=5)) == [
        best.id,
        *twin_ids[:4],
    ]
    hits = await store.vector_search_episodes(query, tenant, agent, limit=30)
    assert hit_ids(hits) == [best.id, *twin_ids[:29]]
    assert len({score for _, score in hits[1:]}) == 1
    everything = await store.vector_search_episodes(query, tenant, agent, limit=100)
    assert hit_ids(everything) == [best.id, *twin_ids, worse.id]


async def test_vector_search_min_score_one_admits_exactly_the_same_direction(store: MemoryStore) -> None:
    """Score 1.0 means the same direction: copies and power-of-two multiples of the query (exact
    in float32), not near-copies that float32 arithmetic would round up to 1. Several queries,
    since whether rounding happens to land on 1.0 depends on the vector."""
    tenant, rng = new_tenant(), random.Random(13)
    for _ in range(5):
        agent = uuid4()
        query = normalized([rng.uniform(-1.0, 1.0) for _ in range(DIMS)])
        same = [make_episode(tenant, agent, f"copy {i}", embedding=query) for i in range(3)]
        same.append(make_episode(tenant, agent, "doubled", embedding=[2.0 * x for x in query]))
        near = [
            make_episode(
                tenant, agent, f"near {i}", embedding=[x * (1 + rng.gauss(0.0, 1e-4)) for x in query]
            )
            for i in range(8)
        ]
        await store.add_episodes([*near, *same])
        hits = await store.vector_search_episodes(query, tenant, agent, min_score=1.0, limit=100)
        assert hit_ids(hits) == sorted(ids(same))
        assert [score for _, score in hits] == [1.0] * len(same)
        below = await store.vector_search_episodes(query, tenant, agent, min_score=0.99, limit=100)
        assert hit_ids(below)[: len(same)] == sorted(ids(same))
        assert sorted(hit_ids(below)[len(same) :]) == sorted(ids(near))
        assert all(score < 1.0 for _, score in below[len(same) :])


async def test_vector_search_orders_near_ties_by_their_exact_scores(store: MemoryStore) -> None:
    """Rows whose scores differ by less than float32 arithmetic resolves come back in the order
    (and with the scores) of their exact cosine, rounded to 12 decimals: the same rows in the same
    order on every backend, and ``min_score`` cuts exactly at a row's own score."""
    tenant, agent = new_tenant(), uuid4()
    rng = random.Random(15)
    query = normalized([0.4, 1.0, -0.3, 0.8, 0.2, -0.6, 0.5, 0.1])
    rows = [
        make_episode(tenant, agent, f"near {i}", embedding=[x + rng.gauss(0.0, 1e-4) for x in query])
        for i in range(30)
    ]
    await store.add_episodes(rows)
    expected = sorted(
        ((exact_score(query, e.embedding or []), e.id) for e in rows), key=lambda p: (-p[0], p[1])
    )
    hits = await store.vector_search_episodes(query, tenant, agent, limit=10)
    assert [(e.id, score) for e, score in hits] == [(i, score) for score, i in expected[:10]]
    threshold = expected[6][0]
    cut = await store.vector_search_episodes(query, tenant, agent, min_score=threshold, limit=100)
    assert hit_ids(cut) == [i for score, i in expected if score >= threshold]
    assert len(cut) >= 7


async def test_vector_search_min_score_zero_keeps_orthogonal_episodes_at_score_zero(
    store: MemoryStore,
) -> None:
    tenant, agent = new_tenant(), uuid4()
    query = normalized([1.0, 1.0])
    aligned = make_episode(tenant, agent, "aligned", embedding=query)
    orthogonal = make_episode(tenant, agent, "orthogonal", embedding=normalized([1.0, -1.0]))
    disjoint = make_episode(tenant, agent, "disjoint", embedding=unit_vector(5))
    opposed = make_episode(tenant, agent, "opposed", embedding=normalized([-1.0, -0.5]))
    await store.add_episodes([aligned, orthogonal, disjoint, opposed])
    hits = await store.vector_search_episodes(query, tenant, agent, min_score=0.0)
    assert [(e.id, score) for e, score in hits] == [
        (aligned.id, 1.0),
        *sorted([(orthogonal.id, 0.0), (disjoint.id, 0.0)], key=lambda pair: pair[0]),
    ]
    assert [e.id for e, _ in await store.vector_search_episodes(query, tenant, agent, min_score=1e-12)] == [
        aligned.id
    ]


async def test_vector_search_filters_tenant_agent_customer_and_model(store: MemoryStore) -> None:
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    vector = normalized([1.0, 1.0])
    mine = make_episode(
        tenant, agent, "mine", customer_profile_id=customer, embedding=vector, embedding_model="m1"
    )
    other_customer = make_episode(
        tenant, agent, "other customer", customer_profile_id=uuid4(), embedding=vector, embedding_model="m1"
    )
    other_model = make_episode(
        tenant, agent, "other model", customer_profile_id=customer, embedding=vector, embedding_model="m2"
    )
    other_agent = make_episode(tenant, uuid4(), "other agent", customer_profile_id=customer, embedding=vector)
    other_tenant = make_episode(
        new_tenant(), agent, "other tenant", customer_profile_id=customer, embedding=vector
    )
    for episode in (mine, other_customer, other_model, other_agent, other_tenant):
        await store.add_episode(episode)

    everything = await store.vector_search_episodes(vector, tenant, agent)
    assert set(hit_ids(everything)) == {mine.id, other_customer.id, other_model.id}
    by_customer = await store.vector_search_episodes(vector, tenant, agent, customer_profile_id=customer)
    assert set(hit_ids(by_customer)) == {mine.id, other_model.id}
    by_model = await store.vector_search_episodes(
        vector, tenant, agent, customer_profile_id=customer, embedding_model="m1"
    )
    assert hit_ids(by_model) == [mine.id]
    assert await store.vector_search_episodes(vector, tenant, agent, embedding_model="unknown") == []
    assert await store.vector_search_episodes(vector, new_tenant(), agent) == []


async def test_vector_search_respects_validity_windows(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    now = utc_now()
    vector = unit_vector(2)
    current = make_episode(tenant, agent, "current", embedding=vector, valid_from=now - timedelta(days=1))
    expired = make_episode(
        tenant,
        agent,
        "expired",
        embedding=vector,
        valid_from=now - timedelta(days=10),
        valid_to=now - timedelta(days=5),
    )
    future = make_episode(tenant, agent, "future", embedding=vector, valid_from=now + timedelta(days=1))
    for episode in (current, expired, future):
        await store.add_episode(episode)

    assert hit_ids(await store.vector_search_episodes(vector, tenant, agent)) == [current.id]
    seven_days_ago = await store.vector_search_episodes(vector, tenant, agent, as_of=now - timedelta(days=7))
    assert hit_ids(seven_days_ago) == [expired.id]
    in_two_days = await store.vector_search_episodes(vector, tenant, agent, as_of=now + timedelta(days=2))
    assert set(hit_ids(in_two_days)) == {current.id, future.id}
    # valid_from is inclusive, valid_to exclusive
    at_start = await store.vector_search_episodes(vector, tenant, agent, as_of=expired.valid_from)
    assert hit_ids(at_start) == [expired.id]
    assert expired.valid_to is not None
    at_end = await store.vector_search_episodes(vector, tenant, agent, as_of=expired.valid_to)
    assert at_end == []


@pytest.mark.parametrize(
    ("query", "kwargs"),
    [
        ([1.0] * (DIMS - 1), {}),
        ([1.0] * (DIMS + 1), {}),
        ([0.0] * DIMS, {}),
        ([1.0] * DIMS, {"limit": 0}),
        ([1.0] * DIMS, {"limit": 1001}),
        ([1.0] * DIMS, {"limit": -1}),
        ([1.0] * DIMS, {"min_score": 1.5}),
        ([1.0] * DIMS, {"min_score": -1.5}),
        ([1.0] * DIMS, {"as_of": datetime(2026, 1, 1)}),
        *((vector, {}) for vector in DEGENERATE_VECTORS.values()),
    ],
    ids=[
        "short",
        "long",
        "zero",
        "limit-0",
        "limit-1001",
        "limit-negative",
        "min-high",
        "min-low",
        "naive",
        *DEGENERATE_VECTORS,
    ],
)
async def test_vector_search_rejects_bad_arguments(
    store: MemoryStore, query: list[float], kwargs: dict[str, Any]
) -> None:
    tenant, agent = new_tenant(), uuid4()
    await store.add_episode(make_episode(tenant, agent, embedding=[1.0] * DIMS))
    with pytest.raises(InvalidDataError):
        await store.vector_search_episodes(query, tenant, agent, **kwargs)


async def test_vector_search_with_no_rows_is_an_empty_list(store: MemoryStore) -> None:
    assert await store.vector_search_episodes(unit_vector(0), new_tenant(), uuid4()) == []


# --- episodes: text search ----------------------------------------------------------------------


async def test_text_search_ranks_by_matched_terms(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    both = make_episode(tenant, agent, "Refund requested for damaged shoes")
    refund_only = make_episode(tenant, agent, "refund approved yesterday")
    shoes_only = make_episode(tenant, agent, "shoes shipped")
    unrelated = make_episode(tenant, agent, "weather forecast sunny")
    for episode in (refund_only, shoes_only, unrelated, both):
        await store.add_episode(episode)
    found = await store.text_search_episodes("REFUND shoes", tenant, agent)
    assert found[0] == both
    assert set(ids(found[1:])) == {refund_only.id, shoes_only.id}
    assert ids(await store.text_search_episodes("refund", tenant, agent, limit=1))[0] in {
        both.id,
        refund_only.id,
    }
    assert await store.text_search_episodes("zeppelin", tenant, agent) == []
    assert await store.text_search_episodes("?!", tenant, agent) == []


async def test_text_search_ties_prefer_newer_then_id(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    now = utc_now()
    older = make_episode(tenant, agent, "invoice question", recorded_at=now - timedelta(hours=1))
    same_time = [make_episode(tenant, agent, "invoice question", recorded_at=now) for _ in range(3)]
    for episode in (older, *same_time):
        await store.add_episode(episode)
    found = await store.text_search_episodes("invoice", tenant, agent)
    assert ids(found) == [*sorted(ids(same_time)), older.id]


async def test_text_search_filters_tenant_agent_customer_and_validity(store: MemoryStore) -> None:
    tenant, agent, customer = new_tenant(), uuid4(), uuid4()
    now = utc_now()
    mine = make_episode(tenant, agent, "password reset", customer_profile_id=customer)
    other_customer = make_episode(tenant, agent, "password reset", customer_profile_id=uuid4())
    other_agent = make_episode(tenant, uuid4(), "password reset", customer_profile_id=customer)
    other_tenant = make_episode(new_tenant(), agent, "password reset", customer_profile_id=customer)
    expired = make_episode(
        tenant, agent, "password reset", valid_from=now - timedelta(days=2), valid_to=now - timedelta(days=1)
    )
    future = make_episode(tenant, agent, "password reset", valid_from=now + timedelta(days=1))
    for episode in (mine, other_customer, other_agent, other_tenant, expired, future):
        await store.add_episode(episode)
    assert set(ids(await store.text_search_episodes("password", tenant, agent))) == {
        mine.id,
        other_customer.id,
    }
    assert ids(await store.text_search_episodes("password", tenant, agent, customer_profile_id=customer)) == [
        mine.id
    ]
    assert await store.text_search_episodes("password", new_tenant(), agent) == []


@pytest.mark.parametrize(("query", "limit"), [("", 10), ("   ", 10), ("refund", 0), ("refund", 1001)])
async def test_text_search_rejects_bad_arguments(store: MemoryStore, query: str, limit: int) -> None:
    with pytest.raises(InvalidDataError):
        await store.text_search_episodes(query, new_tenant(), uuid4(), limit=limit)


# --- episodes: delete_by_group ------------------------------------------------------------------


async def test_delete_by_group_deletes_only_that_tenants_group(store: MemoryStore) -> None:
    tenant, agent = new_tenant(), uuid4()
    grouped = [make_episode(tenant, agent, f"g{i}", group_id="conversation-7") for i in range(3)]
    other_group = make_episode(tenant, agent, "other", group_id="conversation-8")
    ungrouped = make_episode(tenant, agent, "ungrouped")
    foreign = make_episode(new_tenant(), agent, "foreign", group_id="conversation-7")
    for episode in (*grouped, other_group, ungrouped, foreign):
        await store.add_episode(episode)
    assert await store.delete_by_group(tenant, "conversation-7") == 3
    for episode in grouped:
        assert await store.get_episode(tenant, episode.id) is None
    assert await store.get_episode(tenant, other_group.id) == other_group
    assert await store.get_episode(tenant, ungrouped.id) == ungrouped
    assert await store.get_episode(foreign.tenant_id, foreign.id) == foreign
    assert await store.delete_by_group(tenant, "conversation-7") == 0
    # a deleted episode's id is free again
    assert await store.add_episode(grouped[0]) == grouped[0].id
    assert await store.get_episode(tenant, grouped[0].id) == grouped[0]
