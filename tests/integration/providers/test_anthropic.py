"""AnthropicProvider against the real Anthropic API (cheapest model); skipped without a key.

The model can be overridden with ``FOCAL_TEST_ANTHROPIC_MODEL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from focal.errors import AuthenticationError, ModelError
from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.base import LLMMessage, LLMProvider
from tests.integration.providers.shared_checks import (
    check_stream_deltas_join_to_the_response,
    check_tool_call_round_trip,
)

API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
MODEL = os.environ.get("FOCAL_TEST_ANTHROPIC_MODEL", "claude-haiku-4-5")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not API_KEY, reason="ANTHROPIC_API_KEY is not set: real Anthropic API tests need a key"
    ),
]


class Capital(BaseModel):
    country: str
    capital: str


@pytest.fixture
async def provider() -> AsyncIterator[AnthropicProvider]:
    instance = AnthropicProvider(api_key=API_KEY, model=MODEL, timeout_seconds=60)
    yield instance
    await instance.aclose()


async def test_generate_with_history_and_usage(provider: AnthropicProvider) -> None:
    response = await provider.generate(
        "What is my name? Answer with the name only.",
        system_prompt="You answer in as few words as possible.",
        history=[
            LLMMessage(role="user", content="My name is Ada."),
            LLMMessage(role="assistant", content="Hi Ada."),
        ],
        max_tokens=20,
    )
    assert "ada" in response.content.lower()
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


async def test_max_tokens_gives_length(provider: AnthropicProvider) -> None:
    response = await provider.generate("Count from 1 to 100, separated by commas.", max_tokens=5)
    assert response.finish_reason == "length"


async def test_structured_output(provider: AnthropicProvider) -> None:
    capital, response = await provider.generate_structured("What is the capital of France?", Capital)
    assert capital.capital.lower() == "paris"
    assert response.usage.total_tokens > 0


async def test_bad_key_is_authentication_error() -> None:
    bad = AnthropicProvider(api_key="sk-ant-invalid", model=MODEL, max_attempts=1)
    with pytest.raises(AuthenticationError):
        await bad.generate("Hello", max_tokens=5)
    await bad.aclose()


async def test_unknown_model_is_model_error() -> None:
    unknown = AnthropicProvider(api_key=API_KEY, model="claude-no-such-model", max_attempts=1)
    with pytest.raises(ModelError):
        await unknown.generate("Hello", max_tokens=5)
    await unknown.aclose()


async def test_tool_call_round_trip(provider: LLMProvider) -> None:
    await check_tool_call_round_trip(provider)


async def test_stream_deltas_join_to_the_response(provider: LLMProvider) -> None:
    await check_stream_deltas_join_to_the_response(provider)
