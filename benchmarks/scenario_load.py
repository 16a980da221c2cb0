"""Benchmark of loading a scenario for a turn, and of how long it holds the event loop; prints JSON.

The scenario is the largest ``SCENARIO_LIMITS`` allow (100 steps, 200 transitions, every text at
its maximum length) with D-dimensional transition embeddings (D = 1536 by default). Measured:

- ``stored``: what the PostgreSQL store keeps: bytes of steps JSON (no embeddings) and of the
  binary ``transition_embeddings``;
- ``get_scenario`` on PostgreSQL (embedded server, or ``--database-url``) and in memory: p50 / p95
  / max in ms over ``--runs`` loads, and ``loop_block_ms``: the longest the event loop went without
  running another task during a load (a ticker task records the largest gap between its turns:
  what ``GET /health`` would have waited at worst), and ``free_ms``: dropping the loaded scenario
  (freeing its Python floats: one block, proportional to the embeddings decoded);
- ``get_scenario_one_step_embeddings``: ``get_scenario(..., embeddings_of_step=...)``, all a turn
  needs to follow a transition from its current step;
- ``get_scenarios_without_transition_embeddings``: the light listing (entry conditions only);
- ``before`` (baseline): the same scenario as revision 0005 stored it, steps JSON with the
  embeddings inside, parsed the old way (``json.loads`` + ``Scenario.model_validate``, one
  synchronous block), and the issue's 2,000-transition scenario (no longer accepted) alike.

Usage: ``python benchmarks/scenario_load.py [--runs 20] [--dimensions 1536] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from focal.alignment.models import SCENARIO_LIMITS, Agent, Scenario, ScenarioStep, StepTransition
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.stores.inmemory import InMemoryConfigStore
from focal.alignment.stores.postgres import PostgresConfigStore
from focal.db.embedded import EmbeddedPostgres, create_database
from focal.db.migrate import upgrade
from focal.db.pool import create_pool
from focal.logging import configure_logging

LIMITS = SCENARIO_LIMITS
ISSUE_TRANSITIONS = 2000  # the scenario of the issue: 2,000 transitions, 16 MB of JSON


def build_scenario(owner: Agent, dimensions: int, *, steps: int, transitions: int, seed: int = 1) -> Scenario:
    rng = random.Random(seed)
    step_ids = [uuid4() for _ in range(steps)]
    text = "x" * LIMITS.max_condition_length
    return Scenario(
        tenant_id=owner.tenant_id,
        agent_id=owner.id,
        name="largest",
        description="s" * LIMITS.max_description_length,
        entry_step_id=step_ids[0],
        entry_condition_text=text,
        entry_embedding=[rng.uniform(-1, 1) for _ in range(dimensions)],
        embedding_model="bench",
        tags=[f"t{k}".ljust(LIMITS.max_tag_length, "-") for k in range(LIMITS.max_tags)],
        steps=[
            ScenarioStep(
                id=step_id,
                name=f"step {n}".ljust(255, "."),
                description="d" * LIMITS.max_description_length,
                transitions=[
                    StepTransition(
                        to_step_id=step_ids[(n + k + 1) % steps],
                        condition_text=text,
                        condition_embedding=[rng.uniform(-1, 1) for _ in range(dimensions)],
                    )
                    for k in range(transitions // steps + (1 if n < transitions % steps else 0))
                ],
                rule_ids=[uuid4() for _ in range(LIMITS.max_step_references)],
                template_ids=[uuid4() for _ in range(LIMITS.max_step_references)],
                collects_fields=[f"f{k}".ljust(64, "_") for k in range(LIMITS.max_step_references)],
            )
            for n, step_id in enumerate(step_ids)
        ],
    )


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


async def _timed_with_ticker(load: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """(duration of ``load`` in ms, longest gap between two turns of a ticker task in ms during it,
    time to free what it loaded in ms: one synchronous block when a turn drops its scenario)."""
    loop = asyncio.get_running_loop()
    running = True
    largest_gap = 0.0

    async def ticker() -> None:
        nonlocal largest_gap
        last = loop.time()
        while running:
            await asyncio.sleep(0)
            now = loop.time()
            largest_gap = max(largest_gap, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    loaded = [await load()]
    elapsed = time.perf_counter() - started
    running = False
    await task
    freeing = time.perf_counter()
    loaded.clear()
    freed = time.perf_counter() - freeing
    return elapsed * 1000, largest_gap * 1000, freed * 1000


async def _measure_loads(store: ConfigStore, scenario: Scenario, runs: int) -> dict[str, Any]:
    async def one() -> Any:
        return await store.get_scenario(scenario.tenant_id, scenario.id)

    async def one_step() -> Any:
        return await store.get_scenario(
            scenario.tenant_id, scenario.id, embeddings_of_step=scenario.steps[1].id
        )

    async def light() -> Any:
        return await store.get_scenarios(
            scenario.tenant_id, scenario.agent_id, include_transition_embeddings=False
        )

    loaded = await one()
    assert loaded is not None and len(loaded.steps) == len(scenario.steps)
    results: dict[str, Any] = {}
    for name, load in (
        ("get_scenario", one),
        ("get_scenario_one_step_embeddings", one_step),
        ("get_scenarios_without_transition_embeddings", light),
    ):
        durations, gaps, frees = [], [], []
        for _ in range(runs):
            duration, gap, freed = await _timed_with_ticker(load)
            durations.append(duration)
            gaps.append(gap)
            frees.append(freed)
        results[name] = {
            "ms": _summary(durations),
            "loop_block_ms": _summary(gaps),
            "free_ms": _summary(frees),
        }
    return results


def _old_format_parse(scenario: Scenario) -> dict[str, Any]:
    """Revision 0005's form: the steps JSON with the embeddings in it, parsed in one block."""
    steps_json = json.dumps(scenario.model_dump(mode="json")["steps"])
    fields = scenario.model_dump(exclude={"steps"})
    started = time.perf_counter()
    Scenario.model_validate({**fields, "steps": json.loads(steps_json)})
    elapsed = time.perf_counter() - started
    return {"steps_json_mb": round(len(steps_json) / 1e6, 2), "parse_ms_one_block": round(elapsed * 1000, 1)}


async def measure(admin_dsn: str, runs: int, dimensions: int) -> dict[str, Any]:
    dsn = await create_database(admin_dsn, f"focal_bench_scenarios_{uuid4().hex[:8]}")
    await upgrade(dsn, "head", embedding_dimensions=dimensions)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        owner = Agent(tenant_id=uuid4(), name="bench")
        scenario = build_scenario(
            owner, dimensions, steps=LIMITS.max_steps, transitions=LIMITS.max_transitions
        )
        result: dict[str, Any] = {}
        for name, store in (
            ("postgres", PostgresConfigStore(pool, embedding_dimensions=dimensions)),
            ("inmemory", InMemoryConfigStore(embedding_dimensions=dimensions)),
        ):
            await store.save_agent(owner)
            await store.save_scenario(scenario)
            result[name] = await _measure_loads(store, scenario, runs)
        sizes = await pool.fetchrow(
            "SELECT octet_length(steps::text) AS steps, octet_length(transition_embeddings) AS embeddings "
            "FROM scenarios WHERE id = $1",
            scenario.id,
        )
        result["stored"] = {
            "steps_json_mb": round(sizes["steps"] / 1e6, 3),
            "transition_embeddings_mb": round(sizes["embeddings"] / 1e6, 3),
        }
        issue = build_scenario(owner, dimensions, steps=LIMITS.max_steps, transitions=ISSUE_TRANSITIONS)
        result["before"] = {
            "largest_allowed_scenario": _old_format_parse(scenario),
            "issue_scenario_2000_transitions": _old_format_parse(issue),
        }
        return result
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--database-url", default=os.environ.get("FOCAL_TEST_DATABASE_URL"))
    parser.add_argument(
        "--no-gc", action="store_true", help="disable the cyclic GC, to separate its pauses from decoding"
    )
    args = parser.parse_args()
    if args.no_gc:
        gc.disable()
    configure_logging("WARNING")  # logs to stderr: stdout carries only the JSON

    header: dict[str, Any] = {
        "benchmark": "scenario_load",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "dimensions": args.dimensions,
        "runs": args.runs,
        "gc": "disabled" if args.no_gc else "enabled",
        "scenario": {
            "steps": LIMITS.max_steps,
            "transitions": LIMITS.max_transitions,
            "texts": "every text at its maximum length",
        },
    }
    if args.database_url:
        result = asyncio.run(measure(args.database_url, args.runs, args.dimensions))
        header["server"] = "external"
    else:
        with tempfile.TemporaryDirectory(prefix="focal-bench-") as tmp:
            with EmbeddedPostgres(Path(tmp) / "postgres", database="postgres") as server:
                result = asyncio.run(measure(server.admin_dsn, args.runs, args.dimensions))
            header["server"] = "embedded"
    json.dump(header | result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
