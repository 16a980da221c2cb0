"""OpenAIEmbeddingProvider with the real ``openai`` SDK against the loopback fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from focal.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidResponseError,
    ProviderInputError,
    RateLimitError,
)
from focal.providers.embedding.openai import OpenAIEmbeddingProvider
from focal.providers.retry import RetryPolicy
from tests.unit.providers.fake_vendor import FAST_RETRIES, FakeVendor, Reply, fake_embedding, openai_error


def make_provider(
    vendor: FakeVendor, policy: RetryPolicy, *, dimensions: int | None = 8, batch_size: int = 2048
) -> OpenAIEmbeddingProvider:
    return OpenAIEmbeddingProvider(
        api_key="sk-embed-test",
        dimensions=dimensions,
        base_url=vendor.openai_url,
        retry_policy=policy,
        batch_size=batch_size,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def embedder(fake_vendor_server: FakeVendor) -> AsyncIterator[OpenAIEmbeddingProvider]:
    instance = make_provider(fake_vendor_server, FAST_RETRIES)
    yield instance
    await instance.aclose()


async def test_embed_forwards_model_and_dimensions(vendor: FakeVendor, fast_retries: RetryPolicy) -> None:
    provider = make_provider(vendor, fast_retries, dimensions=16)
    vector = await provider.embed("reset my password")
    assert vector == fake_embedding("reset my password", 16)
    assert provider.dimensions == 16 and provider.model_id == "text-embedding-3-small"
    [request] = vendor.requests
    assert request.path == "/v1/embeddings"
    assert request.body["model"] == "text-embedding-3-small"
    assert request.body["dimensions"] == 16
    assert request.body["encoding_format"] == "float"
    assert request.body["input"] == ["reset my password"]
    await provider.aclose()


async def test_dimensions_are_not_sent_when_not_given(vendor: FakeVendor, fast_retries: RetryPolicy) -> None:
    provider = OpenAIEmbeddingProvider(
        api_key="sk-embed-test",
        model="text-embedding-ada-002",
        base_url=vendor.openai_url,
        retry_policy=fast_retries,
    )
    assert provider.dimensions == 1536
    # The fake answers with its default length when no dimensions are sent: a mismatch we refuse.
    with pytest.raises(InvalidResponseError, match="dimensions"):
        await provider.embed("hello")
    assert "dimensions" not in vendor.requests[0].body


async def test_large_batches_are_split_in_order(vendor: FakeVendor, fast_retries: RetryPolicy) -> None:
    texts = [f"text number {i}" for i in range(10)]
    vectors = await make_provider(vendor, fast_retries, batch_size=4).embed_batch(texts)
    assert vectors == [fake_embedding(text, 8) for text in texts]
    assert [request.body["input"] for request in vendor.requests] == [texts[0:4], texts[4:8], texts[8:10]]


async def test_batch_is_retried_per_request(vendor: FakeVendor, fast_retries: RetryPolicy) -> None:
    texts = [f"t{i}" for i in range(4)]
    vendor.enqueue(openai_error(503, None, "unavailable"))
    vectors = await make_provider(vendor, fast_retries, batch_size=2).embed_batch(texts)
    assert vectors == [fake_embedding(text, 8) for text in texts]
    assert [request.body["input"] for request in vendor.requests] == [texts[0:2], texts[0:2], texts[2:4]]


async def test_wrong_vector_length_is_invalid_response(
    vendor: FakeVendor, embedder: OpenAIEmbeddingProvider
) -> None:
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "m",
    }
    vendor.enqueue(Reply(body=body))
    with pytest.raises(InvalidResponseError):
        await embedder.embed("hello")


async def test_missing_vectors_are_invalid_response(
    vendor: FakeVendor, embedder: OpenAIEmbeddingProvider
) -> None:
    body = {"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    vendor.enqueue(Reply(body=body))
    with pytest.raises(InvalidResponseError):
        await embedder.embed_batch(["a", "b"])


async def test_errors_are_mapped(vendor: FakeVendor, embedder: OpenAIEmbeddingProvider) -> None:
    vendor.enqueue(openai_error(401, "invalid_api_key", "bad key"))
    with pytest.raises(AuthenticationError):
        await embedder.embed("hello")
    vendor.enqueue(*[openai_error(429, "rate_limit_exceeded", "slow", headers={"retry-after": "0"})] * 3)
    with pytest.raises(RateLimitError):
        await embedder.embed("hello")
    assert len(vendor.requests) == 1 + 3


@pytest.mark.parametrize("texts", [[], ["fine", ""], ["  "], "a string"])
async def test_bad_input_fails_before_any_request(
    vendor: FakeVendor, embedder: OpenAIEmbeddingProvider, texts: list[str]
) -> None:
    with pytest.raises(ProviderInputError):
        await embedder.embed_batch(texts)
    with pytest.raises(ProviderInputError):
        await embedder.embed("")
    assert vendor.requests == []


def test_unknown_model_needs_dimensions() -> None:
    with pytest.raises(ConfigurationError, match="DIMENSIONS"):
        OpenAIEmbeddingProvider(api_key="k", model="nomic-embed-text", base_url="http://127.0.0.1:1/v1")
    provider = OpenAIEmbeddingProvider(api_key="k", model="nomic-embed-text", dimensions=768)
    assert provider.dimensions == 768
