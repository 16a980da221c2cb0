"""OpenAIProvider and OpenAIEmbeddingProvider against the real OpenAI API; skipped without a key.

The models can be overridden with ``FOCAL_TEST_OPENAI_MODEL`` / ``FOCAL_TEST_OPENAI_EMBEDDING_MODEL``.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from focal.errors import AuthenticationError, ModelError
from focal.providers.embedding.openai import OpenAIEmbeddingProvider
from focal.providers.llm.base import LLMMessage, LLMProvider
from focal.providers.llm.openai import OpenAIProvider
from tests.integration.providers.shared_checks import (
    check_stream_deltas_join_to_the_response,
    check_tool_call_round_trip,
)

API_KEY = os.environ.get("OPENAI_API_KEY", "")
MODEL = os.environ.get("FOCAL_TEST_OPENAI_MODEL", "gpt-4o-mini")
EMBEDDING_MODEL = os.environ.get("FOCAL_TEST_OPENAI_EMBEDDING_MODEL", "text-embedding-3-small")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not API_KEY, reason="OPENAI_API_KEY is not set: real OpenAI API tests need a key"),
]


class Capital(BaseModel):
    country: str
    capital: str


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    instance = OpenAIProvider(api_key=API_KEY, model=MODEL, timeout_seconds=60)
    yield instance
    await instance.aclose()


async def test_generate_with_history_and_usage(provider: OpenAIProvider) -> None:
    response = await provider.generate(
        "What is my name? Answer with the name only.",
        system_prompt="You answer in as few words as possible.",
        history=[
            LLMMessage(role="user", content="My name is Ada."),
            LLMMessage(role="assistant", content="Hi Ada."),
        ],
        max_tokens=20,
        temperature=0,
    )
    assert "ada" in response.content.lower()
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


async def test_max_tokens_gives_length(provider: OpenAIProvider) -> None:
    response = await provider.generate("Count from 1 to 100, separated by commas.", max_tokens=5)
    assert response.finish_reason == "length"


async def test_structured_output(provider: OpenAIProvider) -> None:
    capital, response = await provider.generate_structured("What is the capital of France?", Capital)
    assert capital.capital.lower() == "paris"
    assert response.usage.total_tokens > 0


async def test_bad_key_is_authentication_error() -> None:
    bad = OpenAIProvider(api_key="sk-invalid", model=MODEL, max_attempts=1)
    with pytest.raises(AuthenticationError):
        await bad.generate("Hello", max_tokens=5)
    await bad.aclose()


async def test_unknown_model_is_model_error() -> None:
    unknown = OpenAIProvider(api_key=API_KEY, model="gpt-no-such-model", max_attempts=1)
    with pytest.raises(ModelError):
        await unknown.generate("Hello", max_tokens=5)
    await unknown.aclose()


async def test_embeddings_batch_and_dimensions() -> None:
    embedder = OpenAIEmbeddingProvider(api_key=API_KEY, model=EMBEDDING_MODEL, dimensions=256, batch_size=2)
    vectors = await embedder.embed_batch(["refund my order", "I want my money back", "opening hours"])
    await embedder.aclose()
    assert [len(v) for v in vectors] == [256, 256, 256]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


async def test_tool_call_round_trip(provider: LLMProvider) -> None:
    await check_tool_call_round_trip(provider)


async def test_stream_deltas_join_to_the_response(provider: LLMProvider) -> None:
    await check_stream_deltas_join_to_the_response(provider)
