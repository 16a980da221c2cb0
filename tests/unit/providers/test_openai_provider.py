"""OpenAIProvider with the real ``openai`` SDK against the loopback fake of chat completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import BaseModel, Field
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
from focal.providers.llm.base import LLMMessage
from focal.providers.llm.openai import OpenAIProvider
from focal.providers.retry import RetryPolicy
from tests.unit.providers.fake_vendor import FAST_RETRIES, FakeVendor, Reply, openai_completion, openai_error

API_KEY = "sk-openai-test-secret-0815"


class Ticket(BaseModel):
    topic: str
    priority: int = Field(ge=1, le=5)
    note: str | None = None


def make_provider(vendor: FakeVendor, policy: RetryPolicy, *, timeout: float = 5.0) -> OpenAIProvider:
    return OpenAIProvider(
        api_key=API_KEY,
        model="gpt-4o-mini",
        base_url=vendor.openai_url,
        timeout_seconds=timeout,
        retry_policy=policy,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def provider(fake_vendor_server: FakeVendor) -> AsyncIterator[OpenAIProvider]:
    """One client for the module's tests that need no special policy (building one costs ~30 ms)."""
    instance = make_provider(fake_vendor_server, FAST_RETRIES)
    yield instance
    await instance.aclose()


async def test_generate_forwards_arguments_and_parses_usage(
    vendor: FakeVendor, provider: OpenAIProvider
) -> None:
    vendor.enqueue(Reply(body=openai_completion("On its way.", prompt_tokens=40, completion_tokens=3)))

    response = await provider.generate(
        "Where is my order?",
        system_prompt="You are a support agent.",
        history=[LLMMessage(role="user", content="Hi"), LLMMessage(role="assistant", content="Hello!")],
        max_tokens=64,
        temperature=0.2,
        stop_sequences=["END", "STOP"],
    )

    assert response.content == "On its way."
    assert response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        40,
        3,
        43,
    )
    [request] = vendor.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Where is my order?"},
    ]
    assert body["max_tokens"] == 64  # a base_url means an OpenAI-compatible server: the classic name
    assert body["temperature"] == 0.2
    assert body["stop"] == ["END", "STOP"]


@pytest.mark.parametrize(
    ("finish_reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_use"),
    ],
)
async def test_finish_reason_is_normalised(
    vendor: FakeVendor, provider: OpenAIProvider, finish_reason: str, expected: str
) -> None:
    vendor.enqueue(Reply(body=openai_completion("partial", finish_reason=finish_reason)))
    response = await provider.generate("Tell me a long story", max_tokens=5)
    assert response.finish_reason == expected


async def test_unknown_finish_reason_is_stop_with_a_warning(
    vendor: FakeVendor, provider: OpenAIProvider
) -> None:
    vendor.enqueue(Reply(body=openai_completion("done", finish_reason="eos_token")))
    with capture_logs() as logs:
        response = await provider.generate("Hello")
    assert response.finish_reason == "stop"
    assert any(
        log["event"] == "unknown_finish_reason" and log["vendor_reason"] == "eos_token" for log in logs
    )


async def test_refusal_is_reported_as_content_filter(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    vendor.enqueue(Reply(body=openai_completion(None, refusal="I can't help with that.")))
    response = await provider.generate("Something forbidden")
    assert response.finish_reason == "content_filter"
    assert response.content == "I can't help with that."


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (openai_error(401, "invalid_api_key", "Incorrect API key provided"), AuthenticationError),
        (openai_error(404, "model_not_found", "The model does not exist"), ModelError),
        (
            openai_error(400, "context_length_exceeded", "maximum context length is 128000"),
            ContextWindowExceededError,
        ),
        (openai_error(400, "content_policy_violation", "rejected by the safety system"), ContentFilterError),
        (openai_error(400, "invalid_value", "bad request"), ProviderError),
    ],
)
async def test_non_retryable_errors_are_mapped_and_fail_at_once(
    vendor: FakeVendor, provider: OpenAIProvider, reply: Reply, error_type: type[ProviderError]
) -> None:
    vendor.enqueue(reply)
    with pytest.raises(error_type) as caught:
        await provider.generate("Hello")
    assert type(caught.value) is error_type
    assert caught.value.status_code == reply.status
    assert len(vendor.requests) == 1


async def test_rate_limit_retry_after_ms_is_honoured(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    vendor.enqueue(openai_error(429, "rate_limit_exceeded", "slow down", headers={"retry-after-ms": "200"}))
    response = await provider.generate("Hello")
    assert response.content == "Hello from the fake GPT."
    first, second = vendor.requests
    assert second.received_at - first.received_at >= 0.2


async def test_rate_limit_exhausted_raises_rate_limit_error(
    vendor: FakeVendor, provider: OpenAIProvider
) -> None:
    vendor.enqueue(*[openai_error(429, "rate_limit_exceeded", "slow down") for _ in range(3)])
    with pytest.raises(RateLimitError) as caught:
        await provider.generate("Hello")
    assert caught.value.retry_after is None
    assert len(vendor.requests) == 3


async def test_server_errors_are_retried_up_to_max_attempts(
    vendor: FakeVendor, provider: OpenAIProvider
) -> None:
    vendor.enqueue(*[openai_error(503, None, "unavailable") for _ in range(5)])
    with pytest.raises(ProviderUnavailableError):
        await provider.generate("Hello")
    assert len(vendor.requests) == 3


async def test_server_error_then_success(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    vendor.enqueue(openai_error(500, None, "boom"), openai_error(502, None, "bad gateway"))
    response = await provider.generate("Hello")
    assert response.finish_reason == "stop"
    assert len(vendor.requests) == 3


async def test_deadline_cuts_a_slow_attempt(vendor: FakeVendor) -> None:
    vendor.enqueue(Reply(body=openai_completion(), delay=1.0))
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, deadline=0.3)
    with pytest.raises(ProviderUnavailableError, match="deadline"):
        await make_provider(vendor, policy).generate("Hello")
    assert len(vendor.requests) == 1


async def test_slow_response_times_out_as_unavailable(vendor: FakeVendor) -> None:
    vendor.enqueue(Reply(body=openai_completion(), delay=1.0))
    policy = RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.01)
    with pytest.raises(ProviderUnavailableError, match="timed out"):
        await make_provider(vendor, policy, timeout=0.2).generate("Hello")


@pytest.mark.parametrize("body", ["<html>bad gateway</html>", '{"choices": []}'])
async def test_malformed_body_is_invalid_response(
    vendor: FakeVendor, provider: OpenAIProvider, body: str
) -> None:
    vendor.enqueue(Reply(body=body))
    with pytest.raises(InvalidResponseError):
        await provider.generate("Hello")
    assert len(vendor.requests) == 1


async def test_structured_output_sends_a_strict_json_schema(
    vendor: FakeVendor, provider: OpenAIProvider
) -> None:
    vendor.enqueue(
        Reply(body=openai_completion(json.dumps({"topic": "billing", "priority": 2, "note": None})))
    )
    ticket, response = await provider.generate_structured(
        "Classify: I was charged twice", Ticket, system_prompt="Classify tickets.", max_tokens=100
    )
    assert ticket == Ticket(topic="billing", priority=2)
    assert json.loads(response.content) == {"topic": "billing", "priority": 2, "note": None}
    [request] = vendor.requests
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Ticket"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["note", "priority", "topic"]
    assert request.body["messages"][0] == {"role": "system", "content": "Classify tickets."}
    assert request.body["max_tokens"] == 100


async def test_structured_output_is_repaired_once(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    vendor.enqueue(
        Reply(body=openai_completion(json.dumps({"topic": "billing", "priority": 9}))),
        Reply(body=openai_completion(json.dumps({"topic": "billing", "priority": 5}))),
    )
    ticket, response = await provider.generate_structured("Classify", Ticket)
    assert ticket.priority == 5
    assert response.usage.total_tokens == 36
    second = vendor.bodies()[1]
    assert second["messages"][1] == {"role": "assistant", "content": '{"topic": "billing", "priority": 9}'}
    assert second["messages"][2]["role"] == "user" and "priority" in second["messages"][2]["content"]


async def test_structured_output_invalid_twice_raises(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    vendor.enqueue(
        Reply(body=openai_completion("not json at all")),
        Reply(body=openai_completion('{"topic": "billing"', finish_reason="length")),
    )
    with pytest.raises(InvalidResponseError):
        await provider.generate_structured("Classify", Ticket)
    assert len(vendor.requests) == 2


async def test_structured_refusal_is_content_filter_error(
    vendor: FakeVendor, provider: OpenAIProvider
) -> None:
    vendor.enqueue(Reply(body=openai_completion(None, refusal="I can't help with that.")))
    with pytest.raises(ContentFilterError, match=r"^openai: the model refused the request: I can't help"):
        await provider.generate_structured("Classify", Ticket)
    assert len(vendor.requests) == 1


async def test_one_log_event_per_structured_call(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    vendor.enqueue(
        openai_error(429, "rate_limit_exceeded", "slow down", headers={"retry-after-ms": "1"}),
        Reply(body=openai_completion("{}")),
        Reply(body=openai_completion(json.dumps({"topic": "x", "priority": 1, "note": "n"}))),
    )
    with capture_logs() as logs:
        await provider.generate_structured("Classify", Ticket)
    [event] = [log for log in logs if log["event"] == "provider_call"]
    assert event["operation"] == "generate_structured"
    assert event["attempts"] == 3 and event["outcome"] == "ok"
    assert event["total_tokens"] == 36
    assert API_KEY not in repr(logs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": ""},
        {"prompt": "\t"},
        {"prompt": "hi", "max_tokens": -1},
        {"prompt": "hi", "temperature": 3},
        {"prompt": "hi", "stop_sequences": "END"},
    ],
)
async def test_bad_input_fails_before_any_request(
    vendor: FakeVendor, provider: OpenAIProvider, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ProviderInputError):
        await provider.generate(**kwargs)  # type: ignore[arg-type]
    assert vendor.requests == []


async def test_official_api_gets_max_completion_tokens(vendor: FakeVendor, provider: OpenAIProvider) -> None:
    # Without a base_url the provider targets api.openai.com; prove the field choice on the
    # wire by pointing the SDK client at the fake after construction.
    provider = OpenAIProvider(api_key=API_KEY, model="gpt-4o-mini", retry_policy=FAST_RETRIES)
    provider._client = provider._client.with_options(base_url=vendor.openai_url)
    await provider.generate("Hello", max_tokens=12)
    [request] = vendor.requests
    assert request.body["max_completion_tokens"] == 12
    assert "max_tokens" not in request.body
