"""The offline providers: deterministic, no network, answers built from the prompt."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from focal.errors import ConfigurationError, ProviderInputError
from focal.providers.embedding.hashing import HashingEmbeddingProvider
from focal.providers.llm.base import LLMMessage
from focal.providers.llm.offline import OfflineLLMProvider

PIPELINE_PROMPT = """You are the support agent of Acme.
Rules to follow:
- Apologise for the delay
- Offer a 10% discount code.
Customer: my parcel is late
"""


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_offline_answers_from_rules() -> None:
    response = await OfflineLLMProvider().generate(PIPELINE_PROMPT)
    assert response.content == "Apologise for the delay. Offer a 10% discount code."
    assert response.model == "offline" and response.finish_reason == "stop"
    assert response.usage.completion_tokens == 9
    assert response.usage.total_tokens == response.usage.prompt_tokens + 9


async def test_offline_prefers_suggested_responses() -> None:
    prompt = (
        PIPELINE_PROMPT
        + "Suggested responses:\n- Sorry, your parcel is delayed.\n\n"
        + "- Here is 10% off: ACME10\nEnd of context\n"
        + "- not part of the block"
    )
    response = await OfflineLLMProvider().generate(prompt)
    assert response.content == "Sorry, your parcel is delayed. Here is 10% off: ACME10"


async def test_offline_acknowledges_the_last_customer_line() -> None:
    prompt = "Customer: hello\nAgent: hi\nCustomer:   where is my refund?  \n"
    response = await OfflineLLMProvider().generate(prompt)
    assert response.content == (
        'Thank you for your message: "where is my refund?". (offline mode: no language model is configured)'
    )


async def test_offline_echoes_a_plain_prompt() -> None:
    response = await OfflineLLMProvider().generate("  what\n are your   hours ")
    assert '"what are your hours"' in response.content


async def test_offline_is_deterministic_across_instances() -> None:
    history = [LLMMessage(role="user", content="earlier")]
    first = await OfflineLLMProvider().generate(PIPELINE_PROMPT, history=history, temperature=1.5)
    second = await OfflineLLMProvider().generate(PIPELINE_PROMPT, history=history, temperature=0.0)
    assert first == second
    assert OfflineLLMProvider().model_id == "offline"


async def test_offline_honours_max_tokens_and_stop_sequences() -> None:
    provider = OfflineLLMProvider()
    truncated = await provider.generate(PIPELINE_PROMPT, max_tokens=3)
    assert truncated.content == "Apologise for the"
    assert truncated.finish_reason == "length"
    stopped = await provider.generate(PIPELINE_PROMPT, stop_sequences=["Offer"])
    assert stopped.content == "Apologise for the delay."
    assert stopped.finish_reason == "stop"


@pytest.mark.parametrize(
    "kwargs",
    [{"prompt": ""}, {"prompt": " "}, {"prompt": "x", "max_tokens": 0}, {"prompt": "x", "temperature": 2.01}],
)
async def test_offline_rejects_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(ProviderInputError):
        await OfflineLLMProvider().generate(**kwargs)  # type: ignore[arg-type]


class Address(BaseModel):
    city: str


class Reply(BaseModel):
    text: str
    mood: Literal["calm", "angry"]
    confidence: float = Field(ge=0.5)
    tags: list[str] = Field(min_length=1)
    address: Address
    escalate: bool
    note: str | None
    language: str = "en"


async def test_offline_structured_fills_the_schema() -> None:
    parsed, response = await OfflineLLMProvider().generate_structured(PIPELINE_PROMPT, Reply)
    answer = "Apologise for the delay. Offer a 10% discount code."
    assert parsed == Reply(
        text=answer,
        mood="calm",
        confidence=0.5,
        tags=[answer],
        address=Address(city=answer),
        escalate=False,
        note=None,
    )
    assert response.content == parsed.model_dump_json()
    again, _ = await OfflineLLMProvider().generate_structured(PIPELINE_PROMPT, Reply)
    assert again == parsed


async def test_hashing_vectors_have_the_dimension_and_unit_norm() -> None:
    provider = HashingEmbeddingProvider(dimensions=64)
    vectors = await provider.embed_batch(["Where is my order?", "???", "a"])
    assert provider.dimensions == 64 and provider.model_id == "hashing-64"
    for vector in vectors:
        assert len(vector) == 64
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)


async def test_hashing_is_deterministic_across_instances_and_case() -> None:
    text = "I want a refund for order 1234"
    assert await HashingEmbeddingProvider().embed(text) == await HashingEmbeddingProvider().embed(text)
    assert await HashingEmbeddingProvider().embed(text.upper()) == await HashingEmbeddingProvider().embed(
        text
    )


def test_hashing_is_stable_across_processes() -> None:
    """blake2b, not hash(): another interpreter with another hash seed computes the same vector."""
    text = "refund my damaged order please"
    script = (
        "import asyncio, json; from focal.providers.embedding.hashing import HashingEmbeddingProvider; "
        f"print(json.dumps(HashingEmbeddingProvider(dimensions=32).vector({text!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == HashingEmbeddingProvider(dimensions=32).vector(text)


async def test_hashing_scores_shared_words_higher() -> None:
    provider = HashingEmbeddingProvider()
    query, related, unrelated = await provider.embed_batch(
        ["how do I get a refund for my order", "refund for a damaged order", "opening hours on sunday"]
    )
    assert cosine(query, related) > cosine(query, unrelated)
    assert cosine(query, related) > 0.2
    assert abs(cosine(query, unrelated)) < 0.1


async def test_hashing_rejects_bad_input() -> None:
    provider = HashingEmbeddingProvider(dimensions=8)
    for bad in ([], [""], ["ok", "  "]):
        with pytest.raises(ProviderInputError):
            await provider.embed_batch(bad)
    with pytest.raises(ProviderInputError):
        await provider.embed(" ")
    with pytest.raises(ConfigurationError):
        HashingEmbeddingProvider(dimensions=0)
