"""Benchmark of one chat turn's platform overhead; prints JSON (and writes it with ``--output``).

Every turn runs the whole pipeline (``TurnEngine.run``: profile, session, embedding, scenario,
rule search, memory search, history, answer, session save, turn record, audit events, two
episodes) with the offline providers (``OfflineLLMProvider``, ``HashingEmbeddingProvider``), so
what is measured is Focal's own cost: stores, serialisation, pipeline logic. The agent is the demo
agent (``focal.demo``) and each conversation is ``DEMO_CONVERSATION`` (7 turns: rule answers,
a scenario entered, advanced and finished, with an order lookup and a return label made through
the demo shop's tools, served on loopback by ``focal.demo_shop``) on its own channel identity.

Cases, in one run:

- ``postgres_redis``: the production stores (PostgreSQL + pgvector, Redis two-tier sessions), built
  by ``focal.bootstrap.build_services`` exactly as ``focal serve`` builds them;
  ``sequential``: conversations one after another (one turn at a time), per-turn latency and per-step
  latency (p50/p95); ``concurrent``: ``--concurrency`` conversations at once, turns/s and latency.
- baselines measured beside it: ``inmemory`` (the same turns on the in-memory reference stores:
  pipeline cost without I/O, though the reference stores deep-copy every object, 1536 floats per
  vector, so they are not free either) and ``raw_roundtrip`` (one ``SELECT 1`` on the same asyncpg
  pool plus one Redis ``GET`` + ``SET`` on the same client, the floor any stateful turn pays; as
  many as there are turns, and as concurrent).
- The cases are interleaved conversation by conversation (and round by round), so a machine whose
  load drifts during the run (a shared CI box) biases none of them.

- ``first_delta``: time to the first streamed delta over HTTP with the real OpenAI SDK against the
  loopback vendor fake, against the SDK streaming alone, in the same run (``first_delta.py``);
  also alone (PostgreSQL + Redis, no other case): ``--first-delta-only``.

Targets (design README, issue #15): one turn's platform overhead p50 under 20 ms on PostgreSQL +
Redis; Focal adds under 10 ms before the first streamed byte.

Section ``constraint_checks`` (also alone, without servers: ``--constraints-only``): the cost of
the deterministic hard-constraint checks of one turn (``focal.alignment.turn.constraints
.deterministic_violations``) with ``--constraints`` always-on constraints (2 forbid + 1 require
RE2 patterns each) on an answer that passes them all (every pattern is evaluated), and the
in-memory demo turn with those constraints on the agent against the same turn without them.
Target (issue #14): the checks under 1 ms per turn with 20 constraints.

Usage: ``python benchmarks/turns.py [--database-url postgresql://... --redis-url redis://...]
[--output benchmarks/results/turns.json]``. Without URLs it starts embedded servers through
``focal.db.embedded`` in a temporary directory and migrates a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import first_delta  # benchmarks/first_delta.py, beside this script

from focal.alignment.models import Rule, Scope
from focal.alignment.turn import TurnEngine, TurnRequest
from focal.alignment.turn.constraints import deterministic_violations
from focal.bootstrap import FocalServices, build_memory_services, build_services
from focal.conversation.models import Channel
from focal.db.embedded import EmbeddedPostgres, EmbeddedRedis, create_database
from focal.db.migrate import upgrade
from focal.demo import DEMO_CONVERSATION, load_demo_agent
from focal.demo_shop import DemoShop, serve_demo_shop
from focal.logging import configure_logging
from focal.settings import Settings

TARGET_P50_MS = 20.0
TARGET_CONSTRAINT_CHECKS_MS = 1.0


def percentiles_ms(samples_ms: list[float]) -> dict[str, float]:
    if len(samples_ms) < 2:
        return {"p50_ms": round(samples_ms[0], 3) if samples_ms else 0.0, "samples": len(samples_ms)}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(samples_ms), 3),
        "p95_ms": round(cuts[94], 3),
        "p99_ms": round(cuts[98], 3),
        "samples": len(samples_ms),
    }


class TurnSamples:
    def __init__(self) -> None:
        self.latency_ms: list[float] = []
        self.steps_ms: dict[str, list[float]] = defaultdict(list)

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "turns": len(self.latency_ms),
            "turns_per_s": round(len(self.latency_ms) / elapsed_s, 1),
            "latency": percentiles_ms(self.latency_ms),
            "steps": {step: percentiles_ms(values) for step, values in self.steps_ms.items()},
        }


async def conversation(engine: TurnEngine, tenant_id: UUID, agent_id: UUID, samples: TurnSamples) -> None:
    session_id = None
    user = f"bench-{uuid4().hex}"
    for message in DEMO_CONVERSATION:
        started = time.perf_counter()
        result = await engine.run(
            TurnRequest(
                tenant_id=tenant_id,
                agent_id=agent_id,
                channel=Channel.WEB,
                user_channel_id=user,
                message=message,
                session_id=session_id,
            )
        )
        samples.latency_ms.append((time.perf_counter() - started) * 1000.0)
        for step, value in result.timings_ms.items():
            samples.steps_ms[step].append(value)
        session_id = result.session_id


class TurnCase:
    """One store stack with the demo agent loaded; measured in slices so cases can interleave."""

    def __init__(self, services: FocalServices, shop: DemoShop) -> None:
        self.services = services
        self.shop = shop
        self.tenant_id = uuid4()
        self.engine = TurnEngine.from_services(services)
        self.sequential, self.concurrent = TurnSamples(), TurnSamples()
        self.sequential_s = self.concurrent_s = 0.0

    async def prepare(self, warmup: int) -> None:
        self.agent_id = (await load_demo_agent(self.services, self.tenant_id, self.shop)).id
        for _ in range(warmup):
            await conversation(self.engine, self.tenant_id, self.agent_id, TurnSamples())

    async def one_sequential(self) -> None:
        started = time.perf_counter()
        await conversation(self.engine, self.tenant_id, self.agent_id, self.sequential)
        self.sequential_s += time.perf_counter() - started

    async def one_concurrent_round(self, concurrency: int) -> None:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                conversation(self.engine, self.tenant_id, self.agent_id, self.concurrent)
                for _ in range(concurrency)
            )
        )
        self.concurrent_s += time.perf_counter() - started

    def summary(self, concurrency: int) -> dict[str, Any]:
        return {
            "sequential": self.sequential.summary(self.sequential_s),
            f"concurrent_{concurrency}": self.concurrent.summary(self.concurrent_s),
        }


class RawRoundtrip:
    """The floor: one ``SELECT 1`` on the pool plus one Redis GET and SET of 2 KB."""

    def __init__(self, services: FocalServices) -> None:
        pool, redis = services.checks.pool, services.checks.redis
        assert pool is not None and redis is not None
        self.pool, self.redis = pool, redis
        self.key = f"bench:raw:{uuid4().hex}"
        self.sequential: list[float] = []
        self.concurrent: list[float] = []
        self.concurrent_s = 0.0

    async def once(self) -> float:
        started = time.perf_counter()
        await self.pool.fetchval("SELECT 1")
        await self.redis.get(self.key)
        await self.redis.set(self.key, "x" * 2048)
        return (time.perf_counter() - started) * 1000.0

    async def some_sequential(self, count: int) -> None:
        self.sequential += [await self.once() for _ in range(count)]

    async def one_concurrent_round(self, concurrency: int) -> None:
        started = time.perf_counter()
        self.concurrent += await asyncio.gather(*(self.once() for _ in range(concurrency)))
        self.concurrent_s += time.perf_counter() - started

    def summary(self, concurrency: int) -> dict[str, Any]:
        return {
            "what": "one SELECT 1 (asyncpg pool) + one Redis GET + one SET of 2 KB",
            "sequential": percentiles_ms(self.sequential),
            f"concurrent_{concurrency}": {
                **percentiles_ms(self.concurrent),
                "roundtrips_per_s": round(len(self.concurrent) / self.concurrent_s, 1),
            },
        }


async def interleaved(
    production: TurnCase, inmemory: TurnCase, raw: RawRoundtrip, args: argparse.Namespace
) -> None:
    """Alternate the cases slice by slice: on a shared machine the load drifts during a run, and
    measuring one case after the other would charge the drift to whichever case ran in the busy part."""
    await production.prepare(args.warmup)
    await inmemory.prepare(args.warmup)
    for _ in range(50):
        await raw.once()
    per_conversation = len(DEMO_CONVERSATION)
    for _ in range(args.conversations):
        await production.one_sequential()
        await inmemory.one_sequential()
        await raw.some_sequential(per_conversation)
    for _ in range(args.rounds):
        await production.one_concurrent_round(args.concurrency)
        await inmemory.one_concurrent_round(args.concurrency)
        for _ in range(per_conversation):
            await raw.one_concurrent_round(args.concurrency)
    await raw.redis.delete(raw.key)


# What hard constraints of a shop typically forbid or require (none matches the demo's answers).
CONSTRAINT_PATTERNS = [
    ([r"(?i)\b(full|guaranteed)\s+refund\b", r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b"], [r"\S"]),
    ([r"(?i)\bpassword\b", r"(?i)\b(lawsuit|attorney|lawyer)s?\b"], [r"[.!?]\s*$|\w$"]),
    ([r"(?i)\bfree\s+(of\s+charge|forever)\b", r"(?i)\b\d+\s*%\s+off\b"], [r"(?i)[a-z]"]),
    ([r"(?i)\b(stupid|idiot|dumb)\b", r"(?i)\bwe\s+guarantee\b"], [r"^[^\x00]*$"]),
]
SAMPLE_ANSWER = (
    "Thanks for your message! Shipping is free for orders above 50 EUR; below that it costs 4.90 EUR "
    "within the country. Returns are accepted within 30 days of delivery, as long as the item is in "
    "its original packaging. To start a return, tell me your order number (it looks like FD-12345) "
    "and the reason, and I will prepare a return label for you. Our support team is available "
    "Monday to Friday, 9:00 to 17:00, if you would rather talk to a person."
)


def demo_constraints(agent_tenant: UUID, agent_id: UUID, count: int) -> list[Rule]:
    """``count`` GLOBAL hard constraints with 2 forbid + 1 require patterns each."""
    rules = []
    for n in range(count):
        forbid, require = CONSTRAINT_PATTERNS[n % len(CONSTRAINT_PATTERNS)]
        rules.append(
            Rule(
                tenant_id=agent_tenant,
                agent_id=agent_id,
                name=f"constraint {n}",
                condition_text=f"policy paragraph {n}",
                action_text=f"Hard constraint number {n}.",
                is_hard_constraint=True,
                forbid_patterns=forbid,
                require_patterns=require,
            )
        )
    return rules


async def constraint_read_ms(
    services: FocalServices, shop: DemoShop, count: int, samples: int
) -> dict[str, Any]:
    """``ConfigStore.get_hard_constraints`` (the per-turn read) with ``count`` constraints stored."""
    tenant_id = uuid4()
    agent_id = (await load_demo_agent(services, tenant_id, shop)).id
    for rule in demo_constraints(tenant_id, agent_id, count):
        await services.config_store.save_rule(rule)
    scopes = [(Scope.GLOBAL, None)]
    for _ in range(50):
        await services.config_store.get_hard_constraints(tenant_id, agent_id, scopes=scopes)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        found = await services.config_store.get_hard_constraints(tenant_id, agent_id, scopes=scopes)
        timings.append((time.perf_counter() - started) * 1000.0)
    assert len(found) >= count  # the demo agent has hard constraints of its own
    return percentiles_ms(timings)


async def constraint_cost(
    args: argparse.Namespace, shop: DemoShop, production: FocalServices | None = None
) -> dict[str, Any]:
    """The ``constraint_checks`` section (see the module docstring); ``shop`` serves the demo
    agent's tools."""
    constraints = demo_constraints(uuid4(), uuid4(), args.constraints)
    assert deterministic_violations(constraints, SAMPLE_ANSWER) == []  # every pattern is evaluated
    for _ in range(200):
        deterministic_violations(constraints, SAMPLE_ANSWER)  # warm the compiled-pattern cache
    checks_ms = []
    for _ in range(args.constraint_samples):
        started = time.perf_counter()
        deterministic_violations(constraints, SAMPLE_ANSWER)
        checks_ms.append((time.perf_counter() - started) * 1000.0)

    settings = Settings.load(
        storage="memory",
        auth={"jwt_secret": "benchmark-secret-not-used-for-anything-0123456789"},
        embedding={"provider": "hashing", "dimensions": args.dimensions},
        llm={"provider": "offline"},
    )
    plain = TurnCase(build_memory_services(settings), shop)
    constrained = TurnCase(build_memory_services(settings), shop)
    await plain.prepare(args.warmup)
    await constrained.prepare(0)
    for rule in demo_constraints(constrained.tenant_id, constrained.agent_id, args.constraints):
        await constrained.services.config_store.save_rule(rule)
    for _ in range(args.warmup):
        await conversation(constrained.engine, constrained.tenant_id, constrained.agent_id, TurnSamples())
    for _ in range(args.conversations):  # interleaved, like the main cases
        await plain.one_sequential()
        await constrained.one_sequential()
    checks = percentiles_ms(checks_ms)
    turn_with = constrained.sequential.summary(constrained.sequential_s)
    turn_without = plain.sequential.summary(plain.sequential_s)
    reads: dict[str, Any] = {}
    if production is not None:  # runs beside the rule search in a turn, so it adds no latency alone
        read = await constraint_read_ms(production, shop, args.constraints, 500)
        reads["postgres_get_hard_constraints"] = read
    return {
        "what": "deterministic checks of one answer against N always-on constraints (2 forbid + 1 require "
        "RE2 patterns each), every pattern evaluated",
        "constraints": args.constraints,
        "patterns": 3 * args.constraints,
        "answer_chars": len(SAMPLE_ANSWER),
        "checks_per_turn": checks,
        "inmemory_demo_turn": {
            "without_constraints": turn_without["latency"],
            f"with_{args.constraints}_constraints": turn_with["latency"],
        },
        **reads,
        "target": {"checks_p99_under_ms": TARGET_CONSTRAINT_CHECKS_MS, "met": checks["p99_ms"] < 1.0},
    }


async def constraint_cost_alone(args: argparse.Namespace) -> dict[str, Any]:
    """``--constraints-only``: the section without database servers (the demo shop still runs)."""
    shop = DemoShop()
    async with serve_demo_shop(shop):
        return await constraint_cost(args, shop)


def settings_for(database_url: str, redis_url: str, args: argparse.Namespace) -> Settings:
    return Settings.load(
        storage="external",
        database={"url": database_url, "pool_max_size": args.pool_size},
        redis={"url": redis_url, "key_prefix": f"bench{uuid4().hex[:8]}"},
        auth={"jwt_secret": "benchmark-secret-not-used-for-anything-0123456789"},
        embedding={"provider": "hashing", "dimensions": args.dimensions},
        llm={"provider": "offline"},
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    async with contextlib.AsyncExitStack() as servers:
        database_url, redis_url = args.database_url, args.redis_url
        if database_url is None or redis_url is None:
            scratch = Path(tempfile.mkdtemp(prefix="focal-bench-turns-"))
            os.chmod(scratch, 0o755)  # the embedded PostgreSQL runs as an unprivileged user
            servers.callback(shutil.rmtree, scratch, ignore_errors=True)  # runs after the servers stop
        if database_url is None:
            postgres = EmbeddedPostgres(scratch / "postgres", database="postgres", fsync=not args.no_fsync)
            await postgres.start_async()
            servers.push_async_callback(postgres.stop_async)
            database_url = await create_database(postgres.admin_dsn, f"bench_turns_{uuid4().hex[:8]}")
            await upgrade(database_url, "head", embedding_dimensions=args.dimensions)
        if redis_url is None:
            redis_server = EmbeddedRedis(scratch / "redis", persistence=False)
            await redis_server.start_async()
            servers.push_async_callback(redis_server.stop_async)
            redis_url = redis_server.url

        settings = settings_for(database_url, redis_url, args)
        if args.first_delta_only:
            services, stack = await build_services(settings)
            async with stack:
                streaming = await first_delta.measure(
                    services, samples=args.first_delta_samples, chunk_delay_ms=args.chunk_delay_ms
                )
            return {
                "benchmark": "turns (first_delta only)",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_1m": {
                    "before": round(load_before[0], 2),
                    "after": round(os.getloadavg()[0], 2),
                },
                "first_delta": streaming,
            }
        shop = DemoShop()  # the demo agent's tools call it (an order lookup, a return label)
        await servers.enter_async_context(serve_demo_shop(shop))
        services, stack = await build_services(settings)
        async with stack:
            production = TurnCase(services, shop)
            inmemory = TurnCase(
                build_memory_services(settings.model_copy(update={"storage": "memory"})), shop
            )
            raw = RawRoundtrip(services)
            await interleaved(production, inmemory, raw, args)
            constraint_checks = await constraint_cost(args, shop, services)
            streaming = await first_delta.measure(
                services, samples=args.first_delta_samples, chunk_delay_ms=args.chunk_delay_ms
            )

    production_summary = production.summary(args.concurrency)
    p50 = production_summary["sequential"]["latency"]["p50_ms"]
    return {
        "benchmark": "turns",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # The machine may be shared: 1-minute load averages around the run say how noisy the numbers are.
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "servers": {
            "postgres": "embedded" if args.database_url is None else "given",
            "postgres_fsync": not args.no_fsync if args.database_url is None else "unknown",
            "redis": "embedded, no persistence" if args.redis_url is None else "given",
            "pool_max_size": args.pool_size,
        },
        "providers": {"llm": "offline", "embedding": f"hashing-{args.dimensions}"},
        "workload": {
            "conversation_turns": len(DEMO_CONVERSATION),
            "sequential_conversations": args.conversations,
            "concurrent_conversations": args.concurrency,
            "concurrent_rounds": args.rounds,
        },
        "postgres_redis": production_summary,
        "baselines": {
            "inmemory": inmemory.summary(args.concurrency),
            "raw_roundtrip": raw.summary(args.concurrency),
        },
        "first_delta": streaming,
        "target": {"sequential_p50_under_ms": TARGET_P50_MS, "met": p50 < TARGET_P50_MS},
        "constraint_checks": constraint_checks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="a migrated database (with --dimensions)")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument(
        "--conversations", type=int, default=30, help="sequential conversations (7 turns each)"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="conversations running at once")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of concurrent conversations")
    parser.add_argument("--warmup", type=int, default=3, help="conversations run before measuring")
    parser.add_argument("--pool-size", type=int, default=20, help="asyncpg pool max size")
    parser.add_argument("--no-fsync", action="store_true", help="embedded PostgreSQL without fsync")
    parser.add_argument("--first-delta-samples", type=int, default=100, help="streamed turns timed")
    parser.add_argument("--chunk-delay-ms", type=float, default=20.0, help="the vendor fake's chunk delay")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    parser.add_argument("--constraints", type=int, default=20, help="always-on constraints measured")
    parser.add_argument("--constraint-samples", type=int, default=5000, help="timed constraint checks")
    parser.add_argument(
        "--constraints-only", action="store_true", help="only the constraint_checks section (no servers)"
    )
    parser.add_argument(
        "--first-delta-only",
        action="store_true",
        help="only the first_delta section (PostgreSQL + Redis, no turn or constraint cases)",
    )
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.constraints_only:
        result = {
            "benchmark": "turns (constraint_checks only)",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "constraint_checks": asyncio.run(constraint_cost_alone(args)),
        }
    else:
        result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
