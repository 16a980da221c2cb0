"""AnthropicProvider with the real ``anthropic`` SDK against the loopback fake of the Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import BaseModel, Field, SecretStr
from structlog.testing import capture_logs

from focal.errors import (
    AuthenticationError,
    ContentFilterError,
    ContextWindowExceededError,
    InvalidResponseError,
    ModelError,
    ProviderError,
    ProviderInputError,
    ProviderUnavailableError,
    RateLimitError,
)
from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.base import LLMMessage
from focal.providers.retry import RetryPolicy
from tests.unit.providers.fake_vendor import (
    FAST_RETRIES,
    FakeVendor,
    Reply,
    anthropic_error,
    anthropic_message,
    anthropic_tool_use,
)

API_KEY = "sk-ant-test-secret-4711"


class Refund(BaseModel):
    order_id: str
    amount: float = Field(ge=0)


def make_provider(vendor: FakeVendor, policy: RetryPolicy, *, timeout: float = 5.0) -> AnthropicProvider:
    return AnthropicProvider(
        api_key=SecretStr(API_KEY),
        model="claude-haiku-4-5",
        base_url=vendor.anthropic_url,
        timeout_seconds=timeout,
        retry_policy=policy,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def provider(fake_vendor_server: FakeVendor) -> AsyncIterator[AnthropicProvider]:
    """One client for the module's tests that need no special policy (building one costs ~30 ms)."""
    instance = make_provider(fake_vendor_server, FAST_RETRIES)
    yield instance
    await instance.aclose()


async def test_generate_forwards_arguments_and_parses_usage(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    vendor.enqueue(
        Reply(body=anthropic_message("Sure.", input_tokens=30, output_tokens=4, cache_read_input_tokens=6))
    )
    history = [LLMMessage(role="user", content="Hi"), LLMMessage(role="assistant", content="Hello!")]

    response = await provider.generate(
        "Where is my order?",
        system_prompt="You are a support agent.",
        history=history,
        max_tokens=77,
        temperature=0.3,
        stop_sequences=["END"],
    )

    assert response.content == "Sure."
    assert response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        36,
        4,
        40,
    )
    assert response.raw_response is not None and response.raw_response["id"] == "msg_fake"
    [request] = vendor.requests
    assert request.path == "/v1/messages"
    # anthropic 2.x sends the key as a bearer token; older versions used x-api-key.
    assert API_KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    assert request.body["model"] == "claude-haiku-4-5"
    assert request.body["system"] == "You are a support agent."
    assert request.body["max_tokens"] == 77
    assert request.body["stop_sequences"] == ["END"]
    assert request.body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Where is my order?"},
    ]
    # The Messages API of anthropic 2.x has no sampling parameters; see the module docstring.
    assert "temperature" not in request.body


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_use"),
        ("refusal", "content_filter"),
    ],
)
async def test_finish_reason_is_normalised(
    vendor: FakeVendor, provider: AnthropicProvider, stop_reason: str, expected: str
) -> None:
    vendor.enqueue(Reply(body=anthropic_message("partial", stop_reason=stop_reason)))
    response = await provider.generate("Tell me a long story", max_tokens=5)
    assert response.finish_reason == expected


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (anthropic_error(401, "authentication_error", "invalid x-api-key"), AuthenticationError),
        (anthropic_error(403, "permission_error", "not allowed"), AuthenticationError),
        (anthropic_error(404, "not_found_error", "model: claude-nope"), ModelError),
        (
            anthropic_error(
                400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"
            ),
            ContextWindowExceededError,
        ),
        (anthropic_error(400, "invalid_request_error", "messages: field required"), ProviderError),
    ],
)
async def test_non_retryable_errors_are_mapped_and_fail_at_once(
    vendor: FakeVendor, provider: AnthropicProvider, reply: Reply, error_type: type[ProviderError]
) -> None:
    vendor.enqueue(reply)
    with pytest.raises(error_type) as caught:
        await provider.generate("Hello")
    assert type(caught.value) is error_type
    assert caught.value.status_code == reply.status
    assert caught.value.provider == "anthropic"
    assert len(vendor.requests) == 1


async def test_rate_limit_retry_after_is_honoured(vendor: FakeVendor, provider: AnthropicProvider) -> None:
    vendor.enqueue(anthropic_error(429, "rate_limit_error", "slow down", headers={"retry-after": "0.2"}))
    response = await provider.generate("Hello")
    assert response.content == "Hello from the fake Claude."
    first, second = vendor.requests
    assert second.received_at - first.received_at >= 0.2


async def test_rate_limit_error_carries_retry_after_when_attempts_run_out(vendor: FakeVendor) -> None:
    vendor.enqueue(anthropic_error(429, "rate_limit_error", "slow down", headers={"retry-after-ms": "1500"}))
    policy = RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.01)
    with pytest.raises(RateLimitError) as caught:
        await make_provider(vendor, policy).generate("Hello")
    assert caught.value.retry_after == pytest.approx(1.5)
    assert len(vendor.requests) == 1


async def test_overloaded_529_is_retried(vendor: FakeVendor, provider: AnthropicProvider) -> None:
    vendor.enqueue(anthropic_error(529, "overloaded_error", "Overloaded"))
    response = await provider.generate("Hello")
    assert response.finish_reason == "stop"
    assert len(vendor.requests) == 2


async def test_server_errors_are_retried_up_to_max_attempts(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    vendor.enqueue(*[anthropic_error(500, "api_error", "boom") for _ in range(5)])
    with pytest.raises(ProviderUnavailableError) as caught:
        await provider.generate("Hello")
    assert caught.value.status_code == 500
    assert len(vendor.requests) == FAST_RETRIES.max_attempts


async def test_deadline_stops_retrying(vendor: FakeVendor) -> None:
    # The vendor asks for 5 s; the call's deadline is 0.5 s, so no second request is made.
    vendor.enqueue(anthropic_error(429, "rate_limit_error", "slow down", headers={"retry-after": "5"}))
    policy = RetryPolicy(max_attempts=5, base_delay=0.001, max_delay=0.01, deadline=0.5)
    with pytest.raises(RateLimitError):
        await make_provider(vendor, policy).generate("Hello")
    assert len(vendor.requests) == 1


async def test_slow_response_times_out_as_unavailable(vendor: FakeVendor) -> None:
    vendor.enqueue(Reply(body=anthropic_message(), delay=1.0))
    policy = RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.01)
    with pytest.raises(ProviderUnavailableError, match="timed out"):
        await make_provider(vendor, policy, timeout=0.2).generate("Hello")
    assert len(vendor.requests) == 1


@pytest.mark.parametrize("body", ["this is not json {", '{"unexpected": true}'])
async def test_malformed_body_is_invalid_response(
    vendor: FakeVendor, provider: AnthropicProvider, body: str
) -> None:
    vendor.enqueue(Reply(body=body))
    with pytest.raises(InvalidResponseError):
        await provider.generate("Hello")
    assert len(vendor.requests) == 1


async def test_structured_output_uses_a_forced_tool_call(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    vendor.enqueue(Reply(body=anthropic_tool_use("Refund", {"order_id": "A-1", "amount": 12.5})))
    refund, response = await provider.generate_structured(
        "Refund order A-1", Refund, system_prompt="Extract the refund."
    )
    assert refund == Refund(order_id="A-1", amount=12.5)
    assert response.finish_reason == "tool_use"
    assert response.usage.total_tokens == 30
    [request] = vendor.requests
    assert request.body["tool_choice"]["type"] == "tool"
    assert request.body["tool_choice"]["name"] == "Refund"
    assert request.body["tools"][0]["input_schema"] == Refund.model_json_schema()
    assert request.body["system"] == "Extract the refund."


async def test_structured_output_is_repaired_once(vendor: FakeVendor, provider: AnthropicProvider) -> None:
    vendor.enqueue(
        Reply(body=anthropic_tool_use("Refund", {"order_id": "A-1", "amount": -3})),
        Reply(body=anthropic_tool_use("Refund", {"order_id": "A-1", "amount": 3})),
    )
    refund, response = await provider.generate_structured("Refund A-1", Refund)
    assert refund.amount == 3
    assert response.usage.total_tokens == 60  # both requests are billed
    first, second = vendor.bodies()
    assert first["messages"] == [{"role": "user", "content": "Refund A-1"}]
    assert len(second["messages"]) == 3
    assistant, tool_result = second["messages"][1:]
    assert assistant["role"] == "assistant" and assistant["content"][0]["type"] == "tool_use"
    result_block = tool_result["content"][0]
    assert result_block["type"] == "tool_result" and result_block["is_error"] is True
    assert "amount" in result_block["content"]


async def test_structured_output_invalid_twice_raises(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    vendor.enqueue(
        Reply(body=anthropic_tool_use("Refund", {"order": "A-1"})),
        Reply(body=anthropic_message("I cannot use tools", stop_reason="end_turn")),
    )
    with pytest.raises(InvalidResponseError):
        await provider.generate_structured("Refund A-1", Refund)
    assert len(vendor.requests) == 2


async def test_structured_refusal_is_content_filter_error(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    vendor.enqueue(Reply(body=anthropic_message("I can't help with that.", stop_reason="refusal")))
    with pytest.raises(ContentFilterError, match=r"^anthropic: the model refused the request: I can't help"):
        await provider.generate_structured("Refund A-1", Refund)
    assert len(vendor.requests) == 1


async def test_one_log_event_per_call_without_the_key(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    vendor.enqueue(anthropic_error(529, "overloaded_error", "Overloaded"))
    with capture_logs() as logs:
        await provider.generate("Hello")
    events = [log for log in logs if log["event"] == "provider_call"]
    assert len(events) == 1
    event = events[0]
    assert event["provider"] == "anthropic" and event["model"] == "claude-haiku-4-5"
    assert event["attempts"] == 2 and event["outcome"] == "ok"
    assert event["prompt_tokens"] == 11 and event["completion_tokens"] == 7 and event["total_tokens"] == 18
    assert event["latency_ms"] >= 0
    assert API_KEY not in repr(logs)
    assert API_KEY not in repr(provider)


async def test_failed_call_logs_its_outcome(vendor: FakeVendor, provider: AnthropicProvider) -> None:
    vendor.enqueue(anthropic_error(401, "authentication_error", "invalid x-api-key"))
    with capture_logs() as logs, pytest.raises(AuthenticationError):
        await provider.generate("Hello")
    [event] = [log for log in logs if log["event"] == "provider_call"]
    assert event["outcome"] == "AuthenticationError" and event["attempts"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": ""},
        {"prompt": "   \n"},
        {"prompt": "hi", "max_tokens": 0},
        {"prompt": "hi", "temperature": 2.5},
        {"prompt": "hi", "temperature": -0.1},
        {"prompt": "hi", "stop_sequences": [""]},
        {"prompt": "hi", "history": [LLMMessage(role="user", content=" ")]},
    ],
)
async def test_bad_input_fails_before_any_request(
    vendor: FakeVendor, provider: AnthropicProvider, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ProviderInputError):
        await provider.generate(**kwargs)  # type: ignore[arg-type]
    assert vendor.requests == []


async def test_structured_bad_input_fails_before_any_request(
    vendor: FakeVendor, provider: AnthropicProvider
) -> None:
    with pytest.raises(ProviderInputError):
        await provider.generate_structured(" ", Refund)
    with pytest.raises(ProviderInputError):
        await provider.generate_structured("Refund A-1", dict)  # type: ignore[type-var]
    assert vendor.requests == []
