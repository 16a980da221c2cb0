"""Time to the first streamed delta: what Focal adds before the first byte of an answer.

Used by ``benchmarks/turns.py`` (section ``first_delta``). The model is the real OpenAI SDK
provider pointed at the loopback vendor fake (``tests/unit/providers/fake_vendor.py``), which
streams its answer chunk by chunk with a known delay between chunks. In one run, alternately:

- ``raw``: ``OpenAIProvider.stream`` called directly, time until its first ``TextDelta``: the
  vendor's own latency (its first text chunk leaves one chunk delay after the request) plus the
  SDK;
- ``focal``: ``POST /v1/agents/{id}/chat`` with ``"stream": true`` to the app on a real loopback
  socket (the given stores: PostgreSQL + Redis in ``turns.py``), time until the first ``delta``
  event reaches an httpx client: the same vendor latency plus everything Focal does first
  (authentication, the session and profile reads, the embedding, the scenario move, the rule and
  memory searches, the history, the prompt) plus the HTTP hop to Focal.

``focal_added_ms`` is the difference of each interleaved pair (focal minus raw), so what both
share (the vendor's known delay, the SDK, the machine's load at that moment) cancels out.
Target: Focal adds under 10 ms before the first byte.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the vendor fake lives in tests/

from focal.api.app import create_app
from focal.api.auth import mint_token
from focal.bootstrap import FocalServices
from focal.providers.llm.base import TextDelta
from focal.providers.llm.openai import OpenAIProvider
from focal.providers.retry import RetryPolicy
from tests.loopback import serve_in_this_loop
from tests.unit.providers.fake_vendor import FakeVendor, FakeVendorServer, Reply, openai_stream

TARGET_ADDED_MS = 10.0
CHUNKS = ["Items can ", "be returned ", "within 30 days ", "and the label ", "is free."]


def _summary(samples_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(samples_ms), 3),
        "p95_ms": round(cuts[94], 3),
        "p99_ms": round(cuts[98], 3),
    }


async def _raw_first_delta(provider: OpenAIProvider, vendor: FakeVendor, delay: float) -> float:
    vendor.enqueue(Reply(stream=openai_stream(CHUNKS), chunk_delay=delay))
    started = time.perf_counter()
    elapsed: float | None = None
    async for event in provider.stream("Can I return an item?", max_tokens=100):  # to the end, like a turn
        if elapsed is None and isinstance(event, TextDelta):
            elapsed = (time.perf_counter() - started) * 1000.0
    assert elapsed is not None, "the stream had no text"
    return elapsed


async def _focal_first_delta(
    client: httpx.AsyncClient, vendor: FakeVendor, delay: float, path: str, body: dict[str, Any]
) -> float:
    vendor.enqueue(Reply(stream=openai_stream(CHUNKS), chunk_delay=delay))
    started = time.perf_counter()
    elapsed: float | None = None
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():  # read to the end: the turn is written
            if elapsed is None and line == "event: delta":
                elapsed = (time.perf_counter() - started) * 1000.0
    assert elapsed is not None, "the stream had no delta"
    return elapsed


async def measure(services: FocalServices, *, samples: int, chunk_delay_ms: float) -> dict[str, Any]:
    """Interleaved raw/focal samples on ``services`` (its LLM provider is swapped for the run)."""
    vendor = FakeVendor()
    server = FakeVendorServer(vendor)
    server.start()
    policy = RetryPolicy(max_attempts=1)
    provider = OpenAIProvider(
        api_key="sk-bench", model="gpt-fake", base_url=vendor.openai_url, retry_policy=policy
    )
    previous, services.llm_provider = services.llm_provider, provider
    delay = chunk_delay_ms / 1000.0
    secret = services.settings.auth.jwt_secret
    assert secret is not None
    tenant = uuid4()
    headers = {"Authorization": f"Bearer {mint_token(secret.get_secret_value(), tenant, 3600)}"}
    raw: list[float] = []
    focal: list[float] = []
    try:
        async with (
            serve_in_this_loop(create_app(services.settings, services=services)) as url,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client,
        ):
            agent = (await client.post("/v1/agents", json={"name": "first-delta"})).json()
            rule = {"name": "returns", "condition_text": "return an item", "action_text": "Explain returns."}
            await client.post(f"/v1/agents/{agent['id']}/rules", json=rule)
            path = f"/v1/agents/{agent['id']}/chat"
            for index in range(samples + 5):  # the first five warm connections and caches up
                body = {
                    "channel": "WEB",
                    "user_channel_id": f"u{index // 5}",  # conversations of five turns
                    "message": "Can I return an item?",
                    "stream": True,
                }
                raw_ms = await _raw_first_delta(provider, vendor, delay)
                focal_ms = await _focal_first_delta(client, vendor, delay, path, body)
                if index >= 5:
                    raw.append(raw_ms)
                    focal.append(focal_ms)
    finally:
        services.llm_provider = previous
        await provider.aclose()
    added = [f - r for f, r in zip(focal, raw, strict=True)]
    return {
        "what": "time to the first streamed delta; the vendor fake sends its first text chunk one chunk "
        "delay after the request",
        "vendor_chunk_delay_ms": chunk_delay_ms,
        "samples": samples,
        "raw_sdk_stream": _summary(raw),
        "focal_http_stream": _summary(focal),
        "focal_added_ms": _summary(added),
        "focal_minus_chunk_delay_ms": _summary([f - chunk_delay_ms for f in focal]),
        "target": {
            "focal_added_p50_under_ms": TARGET_ADDED_MS,
            "met": statistics.median(added) < TARGET_ADDED_MS,
        },
    }
