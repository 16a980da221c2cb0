"""Time ``upgrade head`` on an empty database and print JSON.

    python benchmarks/migrations.py [--runs 5] [--dimensions 1536] [--database-url postgresql://...]

Each run creates a fresh database and times ``focal.db.migrate.upgrade(dsn, "head")`` end to end
(Alembic start-up, connection, advisory lock, every revision). The baseline, measured in the same
run on the same server, is the floor any migration tool pays: one asyncpg connection doing
``CREATE EXTENSION vector`` plus one ``CREATE TABLE`` with a vector column and an HNSW index.

Without ``--database-url`` (or ``FOCAL_TEST_DATABASE_URL``) it starts an embedded PostgreSQL in a
temporary directory, with fsync on (as ``focal serve`` runs it). Plan floor: under 30 s; target:
under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

import asyncpg

from focal.db.embedded import EmbeddedPostgres, create_database, drop_database
from focal.db.migrate import head_revision, history, upgrade
from focal.logging import configure_logging


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "min_s": round(ordered[0], 4),
        "max_s": round(ordered[-1], 4),
    }


async def time_upgrade(admin_dsn: str, dimensions: int) -> float:
    name = f"bench_migrate_{uuid4().hex[:10]}"
    dsn = await create_database(admin_dsn, name)
    try:
        started = time.perf_counter()
        await upgrade(dsn, "head", embedding_dimensions=dimensions)
        return time.perf_counter() - started
    finally:
        await drop_database(admin_dsn, name)


async def time_baseline(admin_dsn: str, dimensions: int) -> float:
    name = f"bench_baseline_{uuid4().hex[:10]}"
    dsn = await create_database(admin_dsn, name)
    try:
        started = time.perf_counter()
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
                column = f"vector({dimensions})" if dimensions <= 2000 else f"halfvec({dimensions})"
                ops = "vector_cosine_ops" if dimensions <= 2000 else "halfvec_cosine_ops"
                await connection.execute(f"CREATE TABLE items (id uuid PRIMARY KEY, embedding {column})")
                await connection.execute(f"CREATE INDEX ON items USING hnsw (embedding {ops})")
        finally:
            await connection.close()
        return time.perf_counter() - started
    finally:
        await drop_database(admin_dsn, name)


async def measure(admin_dsn: str, runs: int, dimensions: int) -> dict[str, object]:
    await time_upgrade(admin_dsn, dimensions)  # warm-up: imports, server caches
    upgrades, baselines = [], []
    for _ in range(runs):
        upgrades.append(await time_upgrade(admin_dsn, dimensions))
        baselines.append(await time_baseline(admin_dsn, dimensions))
    median_upgrade = statistics.median(upgrades)
    return {
        "benchmark": "migrations_upgrade_head_on_empty_database",
        "head": head_revision(),
        "revisions": len(history()),
        "embedding_dimensions": dimensions,
        "runs": runs,
        "upgrade_head": summary(upgrades),
        "baseline_raw_asyncpg_ddl": summary(baselines),
        "upgrade_over_baseline": round(median_upgrade / statistics.median(baselines), 1),
        "plan_floor_s": 30.0,
        "target_s": 5.0,
        "meets_target": median_upgrade < 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--database-url", default=os.environ.get("FOCAL_TEST_DATABASE_URL"))
    args = parser.parse_args()
    configure_logging("WARNING")  # logs to stderr: stdout carries only the JSON

    if args.database_url:
        result = asyncio.run(measure(args.database_url, args.runs, args.dimensions))
        result["server"] = "external"
    else:
        with tempfile.TemporaryDirectory(prefix="focal-bench-") as tmp:
            server = EmbeddedPostgres(Path(tmp) / "postgres", database="postgres")
            started = time.perf_counter()
            with server:
                startup = time.perf_counter() - started
                result = asyncio.run(measure(server.admin_dsn, args.runs, args.dimensions))
            result["server"] = "embedded (fsync on)"
            result["embedded_first_start_s"] = round(startup, 3)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
