"""Benchmark of episode vector search and ingestion on PostgreSQL + pgvector; prints JSON.

For each distribution (``clustered``: a few hundred Gaussian clusters, like topical embeddings;
``uniform``: random directions, the worst case for any index) and each size, in a fresh database
migrated with ``vector(D)`` (D = 1536 by default), 10 tenants with one agent each:

- ``load``: bulk load with binary COPY into the table without its HNSW index, then the index build
  (the migration's own definition, ``maintenance_work_mem`` 2GB, one parallel worker);
- ``search``: ``--queries`` queries for random tenants, after a warm-up, p50 / p95 / p99 in ms and
  recall@10 against the exact answer:
  - ``store``: ``PostgresMemoryStore.vector_search_episodes`` with its default plan choice;
  - ``store_index_plan`` / ``store_exact_plan``: the store forced to one plan, to show both;
  - ``raw_exact_scan`` (baseline, and the ground truth): raw SQL ``ORDER BY embedding <=> q`` with
    the tenant filter and index scans disabled;
  - ``raw_hnsw_no_iterative_scan``: raw SQL through the HNSW index with the tenant filter and
    pgvector's defaults (ef_search 40, no iterative scan, no exact re-ranking), ids only: the
    cheapest possible index query, and what it costs in recall;
- ``ingest`` with the index live, episodes/s into a new tenant: ``add_episode`` one at a time,
  ``add_episodes`` (COPY, one transaction per batch of 100) from 1, 2 and 4 concurrent writers,
  and a raw single-row ``INSERT`` baseline. With the embedded server it also reports the server's
  CPU time per row (immune to other load on the machine).

Plan floor: vector search under 100 ms at 10,000 items. Targets: p95 under 10 ms at 100,000
items with recall@10 >= 0.95 on clustered data; >= 500 episodes/s ingested with the index live.

Usage: ``python benchmarks/vector_search.py [--database-url URL] [--sizes 10000,100000]
[--queries 200] [--output benchmarks/results/vector_search.json]``. Without ``--database-url`` it
starts an embedded PostgreSQL in a temporary directory (``focal.db.embedded``); with it, the URL
must allow ``CREATE DATABASE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import numpy as np

from focal.db.embedded import EmbeddedPostgres, create_database, drop_database
from focal.db.migrate import upgrade
from focal.db.pool import create_pool
from focal.logging import configure_logging
from focal.memory.models import Episode
from focal.memory.stores import postgres_sql as sql
from focal.memory.stores.postgres import DEFAULT_EXACT_SCAN_MAX_ROWS, PostgresMemoryStore

K = 10
WARMUP_QUERIES = 20
WRITERS = (1, 2, 4)  # concurrent add_episodes callers in the ingestion measurement
COPY_CHUNK = 2000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- data ---------------------------------------------------------------------------------------


class DataSet:
    """Seeded vectors: ``clustered`` points around a few hundred random centers, or ``uniform``."""

    def __init__(self, distribution: str, dimensions: int, clusters: int, seed: int) -> None:
        self.distribution = distribution
        self.dimensions = dimensions
        self.rng = np.random.default_rng(seed)
        centers = self.rng.standard_normal((clusters, dimensions)).astype(np.float32)
        self.centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)

    def vectors(self, count: int) -> np.ndarray:
        if self.distribution == "uniform":
            return self.rng.standard_normal((count, self.dimensions)).astype(np.float32)
        chosen = self.centers[self.rng.integers(0, len(self.centers), count)]
        # noise of norm ~0.6 around unit centers: neighbours within a cluster have cosine ~0.75
        noise = self.rng.standard_normal((count, self.dimensions)).astype(np.float32)
        return chosen + noise * (0.6 / np.sqrt(self.dimensions))


def episode_records(vectors: np.ndarray, tenants: Sequence[tuple[UUID, UUID]]) -> list[tuple[Any, ...]]:
    """Rows in ``postgres_sql.EPISODE_COLUMNS`` order, tenants round-robin."""
    stamp = datetime.now(UTC)
    records = []
    for i, vector in enumerate(vectors):
        tenant, agent = tenants[i % len(tenants)]
        records.append(
            (uuid4(), tenant, agent, None, None, None, f"episode {i}", "TURN", 0.5, vector, "bench", stamp,
             None, stamp, "{}")
        )  # fmt: skip
    return records


# --- measuring ------------------------------------------------------------------------------------


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(samples_ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def backend_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU of server backends (local server only), from /proc."""
    try:
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


async def backend_pids(pool: asyncpg.Pool) -> list[int]:
    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        return [int(await c.fetchval("SELECT pg_backend_pid()")) for c in connections]
    finally:
        for connection in connections:
            await pool.release(connection)


async def timed_queries(
    queries: np.ndarray,
    tenants: Sequence[tuple[UUID, UUID]],
    run: Callable[[list[float], UUID, UUID], Awaitable[list[UUID]]],
) -> tuple[list[float], list[list[UUID]]]:
    latencies, answers = [], []
    for number, query in enumerate(queries):
        tenant, agent = tenants[number % len(tenants)]
        vector = query.tolist()
        started = time.perf_counter()
        answers.append(await run(vector, tenant, agent))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, answers


def recall(answers: list[list[UUID]], truth: list[list[UUID]]) -> float:
    return round(
        float(np.mean([len(set(a) & set(t)) / len(t) for a, t in zip(answers, truth, strict=True)])), 4
    )


# --- one data set ---------------------------------------------------------------------------------


async def bench_one(admin_dsn: str, distribution: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    name = f"vbench_{distribution}_{size}_{uuid4().hex[:6]}"
    dsn = await create_database(admin_dsn, name)
    try:
        await upgrade(dsn, "head", embedding_dimensions=args.dimensions)
        pool = await create_pool(dsn, min_size=2, max_size=max(WRITERS), command_timeout=3600)
        try:
            return await bench_database(pool, distribution, size, args)
        finally:
            await pool.close()
    finally:
        await drop_database(admin_dsn, name)


async def bench_database(
    pool: asyncpg.Pool, distribution: str, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    data = DataSet(distribution, args.dimensions, args.clusters, seed=size)
    tenants = [(uuid4(), uuid4()) for _ in range(args.tenants)]
    result: dict[str, Any] = {
        "distribution": distribution,
        "size": size,
        "rows_per_tenant": size // args.tenants,
    }

    # bulk load: COPY without the HNSW index, then build it with the migration's definition
    index_sql = await pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'episodes_embedding_hnsw_idx'"
    )
    index_sql = index_sql.replace(" ON ONLY ", " ON ")  # partitioned table: build every partition's index
    await pool.execute("DROP INDEX episodes_embedding_hnsw_idx")
    copy_seconds = 0.0
    for start in range(0, size, COPY_CHUNK):
        records = episode_records(data.vectors(min(COPY_CHUNK, size - start)), tenants)
        started = time.perf_counter()
        await pool.copy_records_to_table("episodes", records=records, columns=list(sql.EPISODE_COLUMNS))
        copy_seconds += time.perf_counter() - started
    async with pool.acquire() as connection:
        await connection.execute("SET maintenance_work_mem = '2GB'; SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        await connection.execute(index_sql)
        build_seconds = time.perf_counter() - started
        await connection.execute("VACUUM ANALYZE episodes")
        # session settings: the pool sends no reset on release (focal.db.pool.VectorConnection)
        await connection.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
    result["load"] = {
        "copy_rows_per_s": round(size / copy_seconds),
        "copy_seconds": round(copy_seconds, 2),
        "index_build_seconds": round(build_seconds, 2),
        "index_definition": index_sql,
    }
    print(f"[{distribution} {size}] loaded: {result['load']}", file=sys.stderr, flush=True)

    # search
    queries = data.vectors(args.queries)
    warmup = data.vectors(WARMUP_QUERIES)
    store = PostgresMemoryStore(pool, embedding_dimensions=args.dimensions)
    index_store = PostgresMemoryStore(pool, embedding_dimensions=args.dimensions, exact_scan_max_rows=0)
    exact_store = PostgresMemoryStore(pool, embedding_dimensions=args.dimensions, exact_scan_max_rows=10**9)

    async def raw_exact(vector: list[float], tenant: UUID, agent: UUID) -> list[UUID]:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SET LOCAL enable_indexscan = off")
            rows = await connection.fetch(
                "SELECT id, 1 - (embedding <=> $1::vector) AS score FROM episodes "
                "WHERE tenant_id = $2 AND agent_id = $3 ORDER BY embedding <=> $1::vector LIMIT $4",
                vector, tenant, agent, K,
            )  # fmt: skip
        return [row["id"] for row in rows]

    async def raw_hnsw_default(vector: list[float], tenant: UUID, agent: UUID) -> list[UUID]:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SET LOCAL enable_sort = off")  # make sure the index is used
            rows = await connection.fetch(
                "SELECT id FROM episodes WHERE tenant_id = $2 AND agent_id = $3 "
                "ORDER BY embedding <=> $1::vector LIMIT $4",
                vector, tenant, agent, K,
            )  # fmt: skip
        return [row["id"] for row in rows]

    def through(target: PostgresMemoryStore) -> Callable[[list[float], UUID, UUID], Awaitable[list[UUID]]]:
        async def run(vector: list[float], tenant: UUID, agent: UUID) -> list[UUID]:
            hits = await target.vector_search_episodes(vector, tenant, agent, limit=K, min_score=-1.0)
            return [episode.id for episode, _ in hits]

        return run

    variants = {
        "raw_exact_scan": raw_exact,
        "store": through(store),
        "store_index_plan": through(index_store),
        "store_exact_plan": through(exact_store),
        "raw_hnsw_no_iterative_scan": raw_hnsw_default,
    }
    search: dict[str, Any] = {}
    truth: list[list[UUID]] = []
    stores = {"store": store, "store_index_plan": index_store, "store_exact_plan": exact_store}
    for label, run in variants.items():
        await timed_queries(warmup, tenants, run)
        if label in stores:
            stores[label].plans_run.clear()
        latencies, answers = await timed_queries(queries, tenants, run)
        if label == "raw_exact_scan":
            truth = answers
        search[label] = {**percentiles(latencies), "recall_at_10": recall(answers, truth)}
        if label in stores:  # which plans answered (index_fallback: the exact plan after the index one)
            search[label]["plans_run"] = dict(stores[label].plans_run)
        if label == "raw_hnsw_no_iterative_scan":
            search[label]["mean_rows_returned"] = round(float(np.mean([len(a) for a in answers])), 2)
        print(f"[{distribution} {size}] {label}: {search[label]}", file=sys.stderr, flush=True)
    search["store"]["plan"] = "exact" if size // args.tenants <= store.exact_scan_max_rows else "hnsw"
    result["search"] = search
    result["ingest"] = await bench_ingest(pool, data, args)
    print(f"[{distribution} {size}] ingest: {result['ingest']}", file=sys.stderr, flush=True)
    return result


async def bench_ingest(pool: asyncpg.Pool, data: DataSet, args: argparse.Namespace) -> dict[str, Any]:
    """Episodes/s into a new tenant with the HNSW index live (and the server's CPU per row)."""
    store = PostgresMemoryStore(pool, embedding_dimensions=args.dimensions)
    pids = await backend_pids(pool)
    tenant, agent = uuid4(), uuid4()

    def episodes(count: int) -> list[Episode]:
        return [
            Episode(
                tenant_id=tenant,
                agent_id=agent,
                content=f"new {i}",
                embedding=v.tolist(),
                embedding_model="bench",
            )
            for i, v in enumerate(data.vectors(count))
        ]

    async def measure(count: int, work: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        cpu_before = backend_cpu_seconds(pids)
        started = time.perf_counter()
        await work()
        seconds = time.perf_counter() - started
        cpu_after = backend_cpu_seconds(pids)
        row: dict[str, Any] = {"rows": count, "episodes_per_s": round(count / seconds, 1)}
        if cpu_before is not None and cpu_after is not None:
            row["server_cpu_ms_per_row"] = round((cpu_after - cpu_before) * 1000 / count, 3)
        return row

    single = episodes(args.insert_rows // 4)

    async def one_at_a_time() -> None:
        for episode in single:
            await store.add_episode(episode)

    raw_rows = episode_records(data.vectors(args.insert_rows // 4), [(tenant, agent)])
    raw_insert = (
        f"INSERT INTO episodes ({', '.join(sql.EPISODE_COLUMNS)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(sql.EPISODE_COLUMNS)))}, "
        f"${len(sql.EPISODE_COLUMNS)}::jsonb)"
    )

    async def raw_single_inserts() -> None:
        for record in raw_rows:
            await pool.execute(raw_insert, *record)

    def batched_writers(writers: int) -> tuple[int, Callable[[], Awaitable[None]]]:
        batches = [episodes(args.batch_size) for _ in range(args.insert_rows // args.batch_size)]

        async def writer(mine: list[list[Episode]]) -> None:
            for batch in mine:
                await store.add_episodes(batch)

        async def work() -> None:
            await asyncio.gather(*(writer(batches[k::writers]) for k in range(writers)))

        return sum(map(len, batches)), work

    results = {
        "raw_single_row_insert": await measure(len(raw_rows), raw_single_inserts),
        "store_add_episode": await measure(len(single), one_at_a_time),
    }
    for writers in WRITERS:
        count, work = batched_writers(writers)
        results[f"store_add_episodes_batch_{args.batch_size}_{writers}_writers"] = await measure(count, work)
    return results


# --- main -----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    distributions = args.distributions.split(",")
    server: EmbeddedPostgres | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.database_url:
        admin_dsn = args.database_url
    else:
        tmp = tempfile.TemporaryDirectory(prefix="focal-vbench-")
        server = EmbeddedPostgres(Path(tmp.name) / "data", database="postgres")
        await server.start_async()
        # Room for 100k x 1536 vectors and their index in memory, few checkpoints during the load.
        connection = await asyncpg.connect(server.admin_dsn)
        for setting in (
            "shared_buffers = '3GB'",
            "max_wal_size = '8GB'",
            "max_parallel_maintenance_workers = 1",
        ):
            await connection.execute(f"ALTER SYSTEM SET {setting}")
        await connection.close()
        await server.stop_async()
        await server.start_async()
        admin_dsn = server.admin_dsn
    try:
        connection = await asyncpg.connect(admin_dsn)
        versions = {
            "postgres": await connection.fetchval("SHOW server_version"),
            "shared_buffers": await connection.fetchval("SHOW shared_buffers"),
            "fsync": await connection.fetchval("SHOW fsync"),
        }
        await connection.close()
        results = []
        for distribution in distributions:
            for size in sizes:
                results.append(await bench_one(admin_dsn, distribution, size, args))
    finally:
        if server is not None:
            await server.stop_async()
        if tmp is not None:
            tmp.cleanup()
    return {
        "benchmark": "vector_search",
        "config": {
            "dimensions": args.dimensions,
            "tenants": args.tenants,
            "clusters": args.clusters,
            "queries": args.queries,
            "k": K,
            "server": "external" if args.database_url else "embedded",
            **versions,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "exact_scan_max_rows": DEFAULT_EXACT_SCAN_MAX_ROWS,
        },
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=None, help="server to use (needs CREATE DATABASE)")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--distributions", default="clustered,uniform")
    parser.add_argument(
        "--insert-rows", type=int, default=1000, help="rows per batched ingestion measurement"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    configure_logging("WARNING", json_output=False)
    # SIGTERM behaves like Ctrl-C, so the embedded server is stopped by the `finally` in run()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
