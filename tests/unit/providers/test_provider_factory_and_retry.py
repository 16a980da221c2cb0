"""The provider factory and the pieces of the retry policy that need no vendor."""

from __future__ import annotations

import random

import pytest
from pydantic import SecretStr

from focal.errors import ConfigurationError, ProviderUnavailableError, RateLimitError
from focal.providers.embedding.hashing import HashingEmbeddingProvider
from focal.providers.embedding.openai import OpenAIEmbeddingProvider
from focal.providers.errors import parse_retry_after
from focal.providers.factory import build_embedding_provider, build_llm_provider
from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.offline import OfflineLLMProvider
from focal.providers.llm.openai import OpenAIProvider
from focal.providers.retry import RetryPolicy
from focal.settings import EmbeddingSettings, LLMSettings, Settings


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"anthropic_api_key": None, "openai_api_key": None}
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def test_default_settings_build_the_offline_providers() -> None:
    assert isinstance(build_llm_provider(settings()), OfflineLLMProvider)
    embedding = build_embedding_provider(settings())
    assert isinstance(embedding, HashingEmbeddingProvider) and embedding.dimensions == 1536


def test_vendor_providers_are_built_with_their_keys() -> None:
    anthropic = build_llm_provider(
        settings(llm=LLMSettings(provider="anthropic"), anthropic_api_key=SecretStr("sk-ant-x"))
    )
    assert isinstance(anthropic, AnthropicProvider) and anthropic.model_id == "claude-haiku-4-5"
    openai = build_llm_provider(
        settings(llm=LLMSettings(provider="OpenAI", model="gpt-4o"), openai_api_key=SecretStr("sk-x"))
    )
    assert isinstance(openai, OpenAIProvider) and openai.model_id == "gpt-4o"
    embedding = build_embedding_provider(
        settings(
            embedding=EmbeddingSettings(provider="openai", dimensions=512), openai_api_key=SecretStr("sk-x")
        )
    )
    assert isinstance(embedding, OpenAIEmbeddingProvider) and embedding.dimensions == 512


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"llm": LLMSettings(provider="gemini")}, "unknown LLM provider"),
        ({"llm": LLMSettings(provider="anthropic")}, "ANTHROPIC_API_KEY"),
        ({"llm": LLMSettings(provider="openai"), "anthropic_api_key": SecretStr("k")}, "OPENAI_API_KEY"),
        ({"llm": LLMSettings(provider="openai"), "openai_api_key": SecretStr(" ")}, "OPENAI_API_KEY"),
        (
            {"llm": LLMSettings(provider="anthropic", model="gpt-4o"), "anthropic_api_key": SecretStr("k")},
            "not a Claude model",
        ),
        (
            {
                "llm": LLMSettings(provider="openai", model="claude-haiku-4-5"),
                "openai_api_key": SecretStr("k"),
            },
            "Claude model",
        ),
        ({"embedding": EmbeddingSettings(provider="anthropic")}, "unknown embedding provider"),
        ({"embedding": EmbeddingSettings(provider="openai")}, "OPENAI_API_KEY"),
    ],
)
def test_bad_configuration_is_an_error_not_a_fallback(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config = settings(**overrides)
        build_llm_provider(config)
        build_embedding_provider(config)


def test_keys_are_not_in_reprs() -> None:
    provider = AnthropicProvider(api_key="sk-ant-very-secret", model="claude-haiku-4-5")
    assert "very-secret" not in repr(provider) and "very-secret" not in str(vars(provider).get("_api_key"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5", "retry-after-ms": "100"}, 0.1),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # a date in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0, rng=random.Random(7))
    unavailable = ProviderUnavailableError("down")
    for failures in range(1, 8):
        ceiling = min(4.0, 2 ** (failures - 1))
        delays = [policy.delay_before_retry(failures, unavailable) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jitter spreads over the whole range
    limited = RateLimitError("slow", retry_after=3.0)
    assert all(policy.delay_before_retry(1, limited) >= 3.0 for _ in range(20))


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay": -1}, {"base_delay": 2.0, "max_delay": 1.0}, {"deadline": 0}],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
