"""Build the configured providers from ``Settings``; the only place that chooses a provider class.

``FOCAL_LLM__PROVIDER`` is ``offline`` | ``anthropic`` | ``openai`` and
``FOCAL_EMBEDDING__PROVIDER`` is ``hashing`` | ``openai``. A vendor provider without its key
(``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY``), an unknown provider name, or a model the chosen
vendor cannot serve is a ``ConfigurationError`` at start-up. Nothing falls back to the offline
providers: those run only when they are what the settings name.
"""

from __future__ import annotations

from pydantic import SecretStr

from focal.errors import ConfigurationError
from focal.providers.embedding.base import EmbeddingProvider
from focal.providers.embedding.hashing import HashingEmbeddingProvider
from focal.providers.llm.base import LLMProvider
from focal.providers.llm.offline import OfflineLLMProvider
from focal.providers.retry import RetryPolicy
from focal.settings import Settings

LLM_PROVIDERS = ("offline", "anthropic", "openai")
EMBEDDING_PROVIDERS = ("hashing", "openai")
DEFAULT_LLM_MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4o-mini"}


def build_llm_provider(settings: Settings) -> LLMProvider:
    """The LLM provider ``settings.llm`` names, or ``ConfigurationError`` naming the fix."""
    section = settings.llm
    name = section.provider.strip().lower()
    if name == "offline":
        return OfflineLLMProvider()
    if name not in LLM_PROVIDERS:
        raise ConfigurationError(
            f"unknown LLM provider {section.provider!r} (FOCAL_LLM__PROVIDER): "
            f"use one of {', '.join(LLM_PROVIDERS)}"
        )
    model = (section.model or DEFAULT_LLM_MODELS[name]).strip()
    policy = RetryPolicy(max_attempts=section.max_attempts, deadline=section.deadline_seconds)
    # The vendor SDKs are imported only when selected: importing them costs seconds at start-up.
    if name == "anthropic":
        from focal.providers.llm.anthropic import AnthropicProvider

        key = _required_key(settings.anthropic_api_key, "anthropic", "ANTHROPIC_API_KEY")
        if section.base_url is None and not model.startswith("claude"):
            raise ConfigurationError(
                f"model {model!r} is not a Claude model; FOCAL_LLM__PROVIDER=anthropic needs e.g. "
                f"FOCAL_LLM__MODEL={DEFAULT_LLM_MODELS['anthropic']}"
            )
        return AnthropicProvider(
            api_key=key,
            model=model,
            base_url=section.base_url,
            timeout_seconds=section.timeout_seconds,
            retry_policy=policy,
        )
    from focal.providers.llm.openai import OpenAIProvider

    key = _required_key(settings.openai_api_key, "openai", "OPENAI_API_KEY")
    if section.base_url is None and model.startswith("claude"):
        raise ConfigurationError(
            f"model {model!r} is a Claude model; set FOCAL_LLM__PROVIDER=anthropic or an OpenAI model"
        )
    return OpenAIProvider(
        api_key=key,
        model=model,
        base_url=section.base_url,
        timeout_seconds=section.timeout_seconds,
        retry_policy=policy,
    )


def build_embedding_provider(settings: Settings) -> EmbeddingProvider:
    """The embedding provider ``settings.embedding`` names, or ``ConfigurationError``."""
    section = settings.embedding
    name = section.provider.strip().lower()
    if name == "hashing":
        return HashingEmbeddingProvider(dimensions=section.dimensions)
    if name != "openai":
        raise ConfigurationError(
            f"unknown embedding provider {section.provider!r} (FOCAL_EMBEDDING__PROVIDER): "
            f"use one of {', '.join(EMBEDDING_PROVIDERS)}"
        )
    from focal.providers.embedding.openai import DEFAULT_MODEL as DEFAULT_OPENAI_EMBEDDING_MODEL
    from focal.providers.embedding.openai import NATIVE_DIMENSIONS, OpenAIEmbeddingProvider

    key = _required_key(settings.openai_api_key, "openai", "OPENAI_API_KEY")
    model = (section.model or DEFAULT_OPENAI_EMBEDDING_MODEL).strip()
    # Forward dimensions only when they differ from the model's native length, so models that do
    # not accept the parameter (ada-002) work at their native size.
    dimensions = None if NATIVE_DIMENSIONS.get(model) == section.dimensions else section.dimensions
    return OpenAIEmbeddingProvider(
        api_key=key,
        model=model,
        dimensions=dimensions,
        base_url=section.base_url,
        timeout_seconds=section.timeout_seconds,
        max_attempts=section.max_attempts,
    )


def _required_key(key: SecretStr | None, provider: str, variable: str) -> SecretStr:
    if key is None or not key.get_secret_value().strip():
        raise ConfigurationError(f"the {provider} provider is selected but {variable} is not set")
    return key
