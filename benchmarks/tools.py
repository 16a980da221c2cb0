"""Benchmark of the tool path's overhead in a turn; prints JSON (and writes it with ``--output``).

A loopback tool server (the demo shop, ``focal.demo_shop``, served by uvicorn in a thread of its
own, like any remote server) answers ``GET /orders/{number}``. In one run, interleaved sample by
sample so that drifting machine load biases no case:

- ``raw_call``: one ``httpx`` GET of that URL (with the key header) on a client like the one
  ``focal.bootstrap`` builds: the floor any tool call pays;
- ``turn_with_tool``: one whole turn (``TurnEngine.run`` on the in-memory stores, offline
  providers) whose matched rule offers the lookup tool; the offline model calls it (its argument
  found in the message by the parameter's pattern), then answers: two model requests, one call;
- ``turn_without_tool``: the same turn with the rule offering no tool (one model request).

``tool_overhead`` is what the tool path adds to a turn beyond the HTTP call itself:
``turn_with_tool - turn_without_tool - raw_call`` (p50 of each; p95 likewise), i.e. the tool
definitions' and activations' reads, argument validation, the executor, the second model request
(offline: microseconds), recording (ledger, turn record entry, audit event). Target: under 5 ms.
``executor_call`` is the call's latency as the executor measured it (``tools_executed``).

Usage: ``python benchmarks/tools.py [--samples 300] [--output benchmarks/results/tools.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import uvicorn
from pydantic import SecretStr

from focal.alignment.models import Agent, Rule, ToolActivation, ToolDefinition
from focal.alignment.turn import TurnEngine, TurnRequest
from focal.bootstrap import build_memory_services
from focal.conversation.models import Channel
from focal.demo_shop import KEY_HEADER, DemoShop
from focal.logging import configure_logging
from focal.settings import Settings
from focal.tools.models import HttpToolSpec

TARGET_OVERHEAD_MS = 5.0
MESSAGE = "where is my order FD-10234"


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(cuts[94], 3),
        "samples": len(samples),
    }


class ThreadedShop:
    """The demo shop on 127.0.0.1, served by uvicorn in its own thread and event loop."""

    def __init__(self) -> None:
        self.shop = DemoShop()
        config = uvicorn.Config(self.shop.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedShop:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the tool server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.shop.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


async def _agent(services: Any, tenant_id: Any, url: str, api_key: str, *, with_tool: bool) -> Agent:
    store, embedder = services.config_store, services.embedding_provider
    agent = Agent(tenant_id=tenant_id, name=f"bench-{uuid4().hex[:8]}")
    await store.save_agent(agent)
    condition = "where is my order"
    await store.save_rule(
        Rule(
            tenant_id=tenant_id,
            agent_id=agent.id,
            name="order status",
            condition_text=condition,
            action_text="Tell the customer where the order is.",
            attached_tool_ids=["lookup_order"] if with_tool else [],
            embedding=await embedder.embed(condition),
            embedding_model=embedder.model_id,
        )
    )
    if await store.get_tool_definition(tenant_id, "lookup_order") is None:
        await store.save_tool_definition(
            ToolDefinition(
                tenant_id=tenant_id,
                name="lookup_order",
                description="Find an order.",
                parameters={
                    "type": "object",
                    "properties": {"order_number": {"type": "string", "pattern": "^FD-[0-9]{5}$"}},
                    "required": ["order_number"],
                },
                http=HttpToolSpec(url_template=f"{url}/orders/{{order_number}}", secret_header=KEY_HEADER),
                secret=SecretStr(api_key),
            )
        )
    await store.save_tool_activation(
        ToolActivation(tenant_id=tenant_id, agent_id=agent.id, tool_id="lookup_order")
    )
    return agent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    settings = Settings.load(storage="memory", auth={"jwt_secret": "x" * 32}, embedding={"dimensions": 1536})
    with ThreadedShop() as server:
        assert server.shop.url is not None
        url, api_key = server.shop.url, server.shop.api_key
        services = build_memory_services(settings)  # its tool executor is built as in production
        tenant_id = uuid4()
        engine = TurnEngine.from_services(services)
        with_tool = await _agent(services, tenant_id, url, api_key, with_tool=True)
        without_tool = await _agent(services, tenant_id, url, api_key, with_tool=False)
        raw_client = httpx.AsyncClient(trust_env=False)
        samples: dict[str, list[float]] = {
            "raw_call": [],
            "turn_with_tool": [],
            "turn_without_tool": [],
            "executor_call": [],
        }

        async def turn(agent: Agent) -> float:
            started = time.perf_counter()
            result = await engine.run(
                TurnRequest(
                    tenant_id=tenant_id,
                    agent_id=agent.id,
                    channel=Channel.API,
                    user_channel_id=f"bench-{uuid4().hex}",
                    message=MESSAGE,
                )
            )
            elapsed = (time.perf_counter() - started) * 1000.0
            if agent is with_tool:
                (record,) = await services.audit_store.list_turns_by_session(tenant_id, result.session_id)
                (call,) = record.tools_executed
                assert call["status"] == "ok", call
                samples["executor_call"].append(float(call["latency_ms"]))  # type: ignore[arg-type]
            return elapsed

        async def raw() -> float:
            started = time.perf_counter()
            response = await raw_client.get(f"{url}/orders/FD-10234", headers={KEY_HEADER: api_key})
            response.json()
            return (time.perf_counter() - started) * 1000.0

        try:
            for _ in range(args.warmup):
                await raw()
                await turn(with_tool)
                await turn(without_tool)
            samples["executor_call"].clear()
            for _ in range(args.samples):
                samples["raw_call"].append(await raw())
                samples["turn_with_tool"].append(await turn(with_tool))
                samples["turn_without_tool"].append(await turn(without_tool))
        finally:
            await raw_client.aclose()
            await services.tool_executor.aclose()

    summary = {name: percentiles_ms(values) for name, values in samples.items()}
    overhead = {
        key: round(
            summary["turn_with_tool"][key] - summary["turn_without_tool"][key] - summary["raw_call"][key], 3
        )
        for key in ("p50_ms", "p95_ms")
    }
    return {
        "benchmark": "tools",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "stores": "in-memory",
        "providers": {"llm": "offline", "embedding": "hashing-1536"},
        **summary,
        "tool_overhead": overhead,
        "target": {
            "tool_overhead_p50_under_ms": TARGET_OVERHEAD_MS,
            "met": overhead["p50_ms"] < TARGET_OVERHEAD_MS,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    configure_logging("WARNING")
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
