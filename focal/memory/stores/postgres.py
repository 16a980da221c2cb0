"""The PostgreSQL MemoryStore (asyncpg + pgvector), schema from migration 0005.

Episodes are hash-partitioned by tenant (16 partitions), and every query names its tenant, so a
search reads one partition: its HNSW graph holds that tenant's rows and those of the few tenants
hashed alongside, not the whole table's. Their ids are registered in ``episode_ids`` (primary key
``id``) in the same statement or transaction, so an id used by any tenant is a ``ConflictError``.

Vector search ranks like every backend: by ``CosineScorer`` (the exact cosine of the float32
vectors, rounded to 12 decimals), descending, ties by id. pgvector's ``<=>`` only chooses
candidates, and the few rows whose rank it cannot decide are scored in Python
(``focal.db.vector_ranking``), so this store returns the same rows in the same order, with the
same scores, as the in-memory one. It chooses its plan deliberately instead of leaving it to the
planner's estimates:

- it first counts the rows in the search scope (tenant, agent, optional customer and embedding
  model, validity), stopping at ``exact_scan_max_rows + 1`` so the probe costs at most that many
  index entries (an index-only scan of ``episodes_scope_idx``); the answer is remembered for
  ``plan_cache_seconds`` per scope;
- a scope of up to ``exact_scan_max_rows`` rows is scanned exactly: every row gets its pg score
  and the best ``limit + EXACT_PLAN_SLACK`` come back, so recall is 1; for small scopes this is
  also as fast as walking an HNSW graph filled with other tenants' rows
  (benchmarks/vector_search.py measures both plans). When rows tie (or nearly tie) across that
  cut, a second query fetches every row of the band, at most ``limit`` per identical embedding;
- a larger scope uses the partition's HNSW index with ``hnsw.iterative_scan = relaxed_order``
  (pgvector >= 0.8: the scan continues until enough rows pass the tenant filter, instead of
  returning the few among the first ``ef_search`` candidates: without it a 10%-selective filter
  returned about 4 of 10 rows), a raised ``hnsw.ef_search``, and ``enable_sort = off`` so the
  planner cannot swap the index scan for "filter, then sort everything". It asks for
  ``max(limit, candidate_pool)`` candidates. The exact plan answers instead when the scan comes
  back with fewer (it stops after ``hnsw.max_scan_tuples`` index tuples, 20,000 by default: a
  customer's 1,001 rows behind 22,000 closer rows of other customers gave 1 row of 5), or when
  rows beyond the candidates may tie into the result (``plans_run`` counts how often).

The settings are ``SET LOCAL`` in the search's own read-only transaction, so they never leak to
other users of a pooled connection. Text search, traversal and erasure are single statements (see
``postgres_sql``). Every database call runs inside ``translate_pg_errors``; input is checked
(``checks``) before anything is sent, so bad input changes nothing.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from focal.db.translate import translate_pg_errors
from focal.db.vector_ranking import Candidate, Ranking, rank_candidates, score_margin
from focal.errors import ConflictError
from focal.memory.models import Entity, Episode, Relationship
from focal.memory.stores import postgres_sql as sql
from focal.memory.stores.checks import (
    check_entity,
    check_episode,
    check_max_depth,
    check_relationship,
    check_text_query,
    check_vector_search,
    query_terms,
)
from focal.memory.stores.store import MemoryStore
from focal.validation import CosineScorer, check_aware, check_limit, check_text

__all__ = ["PostgresMemoryStore"]

# Measured with benchmarks/vector_search.py (1536 dimensions, 2 busy cores): at 1,000 rows per
# tenant the exact plan and the index plan both take ~4-9 ms, the exact one with recall 1; at
# 10,000 rows the exact plan takes ~50 ms and the index plan ~3-8 ms. ef_search 64 with 20
# candidates gave recall@10 0.9985 at 100,000 clustered rows (p95 3.9 ms); 40/10 gave 0.989,
# 100/40 no better recall for +40% time.
DEFAULT_EXACT_SCAN_MAX_ROWS = 1000
DEFAULT_EF_SEARCH = 64
DEFAULT_CANDIDATE_POOL = 20
# pgvector's maximum for hnsw.ef_search
MAX_EF_SEARCH = 1000
DEFAULT_PLAN_CACHE_SECONDS = 10.0
# Rows the exact plan fetches beyond ``limit``, so that the band (rows whose real score may tie
# with the last one returned) usually ends inside what was fetched; when it does not, one more
# query fetches the band.
EXACT_PLAN_SLACK = 8
PLAN_CACHE_MAX_ENTRIES = 10_000


class _PlanCache:
    """Which plan a search scope took, remembered for ``seconds`` (0 disables), so repeated
    searches skip the probe's round trip. A stale answer only costs speed, never correctness:
    both plans return the same rows (the index plan with recall close to 1), and scope sizes
    change slowly. Searches ``as_of`` a past instant are not cached (rarely repeated)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: OrderedDict[tuple[object, ...], tuple[float, bool]] = OrderedDict()

    def get(self, scope: tuple[object, ...]) -> bool | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        expires_at, use_index = entry
        if time.monotonic() >= expires_at:
            del self._entries[scope]
            return None
        return use_index

    def put(self, scope: tuple[object, ...], use_index: bool) -> None:
        if self.seconds <= 0 or scope[-1] is not None:  # scope[-1] is as_of
            return
        self._entries[scope] = (time.monotonic() + self.seconds, use_index)
        self._entries.move_to_end(scope)
        while len(self._entries) > PLAN_CACHE_MAX_ENTRIES:
            self._entries.popitem(last=False)


class _Search:
    """One ``vector_search_episodes`` call: its checked arguments and how its rows are ranked."""

    __slots__ = ("limit", "margin", "min_score", "query", "scope", "score_of")

    def __init__(
        self, query: list[float], scope: tuple[object, ...], limit: int, min_score: float, margin: float
    ) -> None:
        self.query = query
        self.scope = scope
        self.limit = limit
        self.min_score = min_score
        self.margin = margin
        self.score_of = CosineScorer(query)

    @property
    def pg_floor(self) -> float:
        """The lowest pg score a row can have and still reach ``min_score`` for real."""
        return self.min_score - self.margin

    def band_arguments(self, candidates: int) -> tuple[object, ...]:
        """$6.. of the exact and index queries: query, floor, candidates, limit, 2 * margin."""
        return (self.query, self.pg_floor, candidates, self.limit, 2.0 * self.margin)

    def rank(self, records: Sequence[asyncpg.Record], *, unseen_max: float | None) -> Ranking[asyncpg.Record]:
        """Rank the rows of ``records`` (a row of NULLs, carrying only stats, is skipped)."""
        candidates = [
            Candidate(r["id"], r["score"], r["embedding"], r) for r in records if r["id"] is not None
        ]
        return rank_candidates(
            self.score_of,
            candidates,
            limit=self.limit,
            min_score=self.min_score,
            margin=self.margin,
            unseen_max=unseen_max,
        )


class PostgresMemoryStore(MemoryStore):
    """MemoryStore on PostgreSQL with pgvector. The caller owns (and closes) ``pool``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        embedding_dimensions: int = 1536,
        exact_scan_max_rows: int = DEFAULT_EXACT_SCAN_MAX_ROWS,
        ef_search: int = DEFAULT_EF_SEARCH,
        candidate_pool: int = DEFAULT_CANDIDATE_POOL,
        plan_cache_seconds: float = DEFAULT_PLAN_CACHE_SECONDS,
    ) -> None:
        self._pool = pool
        self.embedding_dimensions = embedding_dimensions
        self.exact_scan_max_rows = exact_scan_max_rows
        self.ef_search = ef_search
        self.candidate_pool = candidate_pool
        self._hnsw_search_sql = sql.vector_search_hnsw_sql(embedding_dimensions)
        self._margin = score_margin(embedding_dimensions)
        # How often each plan ran ("exact", "index", "index_fallback": the index plan could not
        # vouch for its answer, "band": the exact plan fetched its band): for benchmarks and ops.
        self.plans_run: Counter[str] = Counter()
        self._plans = _PlanCache(plan_cache_seconds)

    # --- episodes ---------------------------------------------------------------------------

    async def add_episode(self, episode: Episode) -> UUID:
        check_episode(episode, self.embedding_dimensions)
        duplicate = f"episode {episode.id} already exists"  # the in-memory store's words
        async with translate_pg_errors("add_episode", tenant_id=episode.tenant_id, duplicate=duplicate):
            await self._pool.execute(sql.INSERT_EPISODE, *sql.episode_values(episode))
        return episode.id

    async def add_episodes(self, episodes: Sequence[Episode]) -> list[UUID]:
        """Add a batch in one transaction with binary COPY: all rows or none (an existing id is a
        ``ConflictError``). Much faster than one ``add_episode`` per row: a few round trips and one
        commit for the whole batch (the HNSW insert of each row remains the main cost)."""
        for episode in episodes:
            check_episode(episode, self.embedding_dimensions)
        ids = [episode.id for episode in episodes]
        if len(set(ids)) != len(ids):
            raise ConflictError("the batch contains the same episode id twice")
        if not episodes:
            return []
        records = [sql.episode_values(episode) for episode in episodes]
        async with (
            translate_pg_errors("add_episodes", tenant_id=episodes[0].tenant_id),
            self._pool.acquire() as connection,
            connection.transaction(),
        ):
            await connection.copy_records_to_table(
                "episodes", records=records, columns=list(sql.EPISODE_COLUMNS)
            )
            await connection.execute(
                sql.REGISTER_EPISODE_IDS, ids, [episode.tenant_id for episode in episodes]
            )
        return ids

    async def get_episode(self, tenant_id: UUID, episode_id: UUID) -> Episode | None:
        async with translate_pg_errors("get_episode", tenant_id=tenant_id):
            row = await self._pool.fetchrow(sql.SELECT_EPISODE, tenant_id, episode_id)
        return sql.episode_from_row(row) if row is not None else None

    async def vector_search_episodes(
        self,
        query_embedding: Sequence[float],
        tenant_id: UUID,
        agent_id: UUID,
        *,
        customer_profile_id: UUID | None = None,
        limit: int = 10,
        min_score: float = 0.0,
        embedding_model: str | None = None,
        as_of: datetime | None = None,
    ) -> list[tuple[Episode, float]]:
        query = check_vector_search(
            query_embedding,
            self.embedding_dimensions,
            limit,
            min_score,
            as_of,
            embedding_model=embedding_model,
        )
        search = _Search(
            query,
            (tenant_id, agent_id, customer_profile_id, embedding_model, as_of),
            limit,
            min_score,
            self._margin,
        )
        async with (
            translate_pg_errors("vector_search_episodes", tenant_id=tenant_id),
            self._pool.acquire() as connection,
        ):
            # Round trips are the main cost of a small search on a busy server: with the plan
            # cached, the exact plan takes one, the index plan three (begin + knobs, search, end).
            use_index = self._plans.get(search.scope)
            if use_index is None:
                scope_rows = await connection.fetchval(
                    sql.PROBE_SCOPE, *search.scope, self.exact_scan_max_rows + 1
                )
                use_index = scope_rows > self.exact_scan_max_rows
                self._plans.put(search.scope, use_index)
            hits = await self._index_plan(connection, search) if use_index else None
            if hits is None:  # the exact plan, or the index plan could not vouch for its answer
                self.plans_run["index_fallback" if use_index else "exact"] += 1
                hits = await self._exact_plan(connection, search)
            else:
                self.plans_run["index"] += 1
        return [(sql.episode_from_row(record), score) for record, score in hits]

    async def _index_plan(
        self, connection: PoolConnectionProxy, search: _Search
    ) -> list[tuple[asyncpg.Record, float]] | None:
        """The nearest ``max(limit, candidate_pool)`` rows by the partition's HNSW index, ranked.
        ``None`` when the scan came back short (``hnsw.max_scan_tuples`` reached before enough
        rows passed the filter: a customer's 1,001 rows behind 22,000 closer ones of others gave
        1 row of 5) or when rows beyond the candidates may tie into the result: the exact plan
        then answers."""
        candidates = max(search.limit, self.candidate_pool)
        ef_search = min(max(self.ef_search, 2 * candidates), MAX_EF_SEARCH)
        await connection.execute(sql.begin_hnsw_search_sql(ef_search))
        try:
            records = await connection.fetch(
                self._hnsw_search_sql, *search.scope, *search.band_arguments(candidates)
            )
        finally:
            # read-only: ending it either way only drops the transaction-local settings
            await connection.execute("ROLLBACK")
        if records[0]["found"] < candidates:
            return None
        return search.rank(records, unseen_max=records[0]["lowest"]).hits

    async def _exact_plan(
        self, connection: PoolConnectionProxy, search: _Search
    ) -> list[tuple[asyncpg.Record, float]]:
        """Every row of the scope by pg score, the best ``limit + EXACT_PLAN_SLACK``; if the band
        reaches past them (ties at the cut), the whole band (see ``focal.db.vector_ranking``)."""
        wanted = search.limit + EXACT_PLAN_SLACK
        records = await connection.fetch(
            sql.VECTOR_SEARCH_EXACT, *search.scope, *search.band_arguments(wanted)
        )
        ranking = search.rank(
            records, unseen_max=records[0]["lowest"] if records[0]["found"] == wanted else None
        )
        if ranking.hits is None:
            self.plans_run["band"] += 1
            records = await connection.fetch(
                sql.VECTOR_SEARCH_BAND, *search.scope, search.query, ranking.floor, search.limit
            )
            ranking = search.rank(records, unseen_max=None)
        assert ranking.hits is not None  # nothing unseen: the band is complete
        return ranking.hits

    async def text_search_episodes(
        self,
        query: str,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        customer_profile_id: UUID | None = None,
        limit: int = 10,
    ) -> list[Episode]:
        """Full-text search (english configuration: stemming, stop words) over currently valid
        episodes. Any query word may match (OR); episodes containing more of the query's
        distinct words rank first, then by ``ts_rank_cd``, ``recorded_at`` desc, id."""
        check_text_query(query)
        check_limit(limit)
        # Words only (\\w+), so no websearch operator survives except the word "or", which is
        # an english stop word anyway and dropped here.
        terms = [term for term in query_terms(query) if term != "or"]
        if not terms:
            return []
        async with translate_pg_errors("text_search_episodes", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                sql.TEXT_SEARCH,
                " or ".join(terms),
                " ".join(terms),
                tenant_id,
                agent_id,
                customer_profile_id,
                limit,
            )
        return [sql.episode_from_row(row) for row in rows]

    async def delete_by_group(self, tenant_id: UUID, group_id: str) -> int:
        check_text(group_id, "group_id")
        async with translate_pg_errors("delete_by_group", tenant_id=tenant_id):
            status = await self._pool.execute(sql.DELETE_BY_GROUP, tenant_id, group_id)
        return _affected_rows(status)

    # --- entities ---------------------------------------------------------------------------

    async def add_entity(self, entity: Entity) -> UUID:
        check_entity(entity)
        duplicate = f"entity {entity.id} already exists"
        async with translate_pg_errors("add_entity", tenant_id=entity.tenant_id, duplicate=duplicate):
            await self._pool.execute(sql.INSERT_ENTITY, *sql.entity_values(entity))
        return entity.id

    async def get_entity(self, tenant_id: UUID, entity_id: UUID) -> Entity | None:
        async with translate_pg_errors("get_entity", tenant_id=tenant_id):
            row = await self._pool.fetchrow(sql.SELECT_ENTITY, tenant_id, entity_id)
        return sql.entity_from_row(row) if row is not None else None

    async def get_entities(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        entity_type: str | None = None,
        customer_profile_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Entity]:
        check_limit(limit)
        check_text(entity_type, "entity_type")
        async with translate_pg_errors("get_entities", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                sql.SELECT_ENTITIES, tenant_id, agent_id, entity_type, customer_profile_id, limit
            )
        return [sql.entity_from_row(row) for row in rows]

    # --- relationships ----------------------------------------------------------------------

    async def add_relationship(self, relationship: Relationship) -> UUID:
        """The composite foreign keys (tenant_id, entity id) make a missing entity, or one of
        another tenant, a ``ForeignKeyViolation``, translated to ``NotFoundError``."""
        check_relationship(relationship)
        tenant_id = relationship.tenant_id
        messages = {
            "relationships_source_fkey": (
                f"entity {relationship.source_entity_id} does not exist in tenant {tenant_id}"
            ),
            "relationships_target_fkey": (
                f"entity {relationship.target_entity_id} does not exist in tenant {tenant_id}"
            ),
        }
        duplicate = f"relationship {relationship.id} already exists"
        async with translate_pg_errors(
            "add_relationship", tenant_id=tenant_id, messages=messages, duplicate=duplicate
        ):
            await self._pool.execute(sql.INSERT_RELATIONSHIP, *sql.relationship_values(relationship))
        return relationship.id

    async def traverse_from_entities(
        self,
        tenant_id: UUID,
        entity_ids: Sequence[UUID],
        *,
        relationship_types: Sequence[str] | None = None,
        max_depth: int = 2,
        as_of: datetime | None = None,
    ) -> list[Relationship]:
        check_max_depth(max_depth)
        check_aware(as_of, "as_of")
        check_text(list(relationship_types or ()), "relationship_types")
        if not entity_ids:
            return []
        types = list(relationship_types) if relationship_types is not None else None
        async with translate_pg_errors("traverse_from_entities", tenant_id=tenant_id):
            rows = await self._pool.fetch(sql.TRAVERSE, tenant_id, list(entity_ids), max_depth, types, as_of)
        return [sql.relationship_from_row(row) for row in rows]

    # --- erasure ----------------------------------------------------------------------------

    async def delete_customer_data(self, tenant_id: UUID, customer_profile_id: UUID) -> int:
        async with translate_pg_errors("delete_customer_data", tenant_id=tenant_id):
            deleted = await self._pool.fetchval(sql.DELETE_CUSTOMER_DATA, tenant_id, customer_profile_id)
        return int(deleted)


def _affected_rows(status: str) -> int:
    """The row count of a command tag such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])
