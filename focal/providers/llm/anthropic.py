"""``AnthropicProvider``: Claude through the official ``anthropic`` SDK's async client.

Structured output is a forced tool call whose ``input_schema`` is the Pydantic model's JSON
schema; an invalid tool input is answered with an ``is_error`` tool result listing the validation
errors (one repair), as the tool-use protocol intends.

``temperature`` is validated but not sent: the Messages API of the installed SDK (anthropic 2.x)
no longer has sampling parameters, and sending an unknown field would make every call a 400.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import anthropic
from anthropic.lib.streaming import AsyncMessageStream
from anthropic.types import AssistantMessageParam, Message, MessageParam, ToolUseBlock, UserMessageParam
from pydantic import SecretStr

from focal.errors import (
    ConfigurationError,
    InvalidResponseError,
    ProviderError,
    ProviderUnavailableError,
)
from focal.providers.errors import error_for_status
from focal.providers.llm.base import (
    FinishReason,
    GenerationRequest,
    LLMProvider,
    LLMResponse,
    ModelT,
    StreamDone,
    StreamEvent,
    TextDelta,
    TokenUsage,
    broken_stream_errors,
    normalise_finish_reason,
    repair_instructions,
    schema_name,
    structured_with_one_repair,
    validate_generation_args,
    validate_schema,
)
from focal.providers.llm.types import ToolCall, ToolRound
from focal.providers.retry import ProviderCall, RetryPolicy

PROVIDER = "anthropic"
DEFAULT_BASE_URL = "https://api.anthropic.com"
CONNECT_TIMEOUT_SECONDS = 10.0

_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "refusal": "content_filter",
}

_CONTEXT_WINDOW_MARKERS = ("prompt is too long", "context window", "context length", "too many tokens")


@contextmanager
def anthropic_errors() -> Iterator[None]:
    """Translate every ``anthropic`` SDK exception into the Focal provider error tree."""
    try:
        yield
    except anthropic.APITimeoutError as exc:
        raise ProviderUnavailableError(f"{PROVIDER}: request timed out", provider=PROVIDER) from exc
    except anthropic.APIConnectionError as exc:
        raise ProviderUnavailableError(f"{PROVIDER}: connection failed: {exc}", provider=PROVIDER) from exc
    except anthropic.APIStatusError as exc:
        message = exc.api_message or str(exc)
        lowered = message.lower()
        raise error_for_status(
            provider=PROVIDER,
            status_code=exc.status_code,
            message=message,
            headers=exc.response.headers,
            context_window_exceeded=any(marker in lowered for marker in _CONTEXT_WINDOW_MARKERS),
        ) from exc
    except anthropic.APIResponseValidationError as exc:
        raise InvalidResponseError(f"{PROVIDER}: malformed response: {exc}", provider=PROVIDER) from exc
    except anthropic.AnthropicError as exc:
        raise ProviderError(f"{PROVIDER}: {exc}", provider=PROVIDER) from exc
    except ValueError as exc:  # a 200 whose body is not JSON
        raise InvalidResponseError(f"{PROVIDER}: unreadable response body: {exc}", provider=PROVIDER) from exc


class AnthropicProvider(LLMProvider):
    """Claude models. ``base_url`` is the host (``http://127.0.0.1:8080``), not ``.../v1``.

    ``retry_policy``, when given, replaces the one built from ``max_attempts``.
    """

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        model: str,
        base_url: str | None = None,
        timeout_seconds: float = 60,
        max_attempts: int = 3,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key or not key.strip():
            raise ConfigurationError("AnthropicProvider needs an API key (ANTHROPIC_API_KEY)")
        if not model or not model.strip():
            raise ConfigurationError("AnthropicProvider needs a model name (FOCAL_LLM__MODEL)")
        if timeout_seconds <= 0:
            raise ConfigurationError(f"timeout_seconds must be > 0, got {timeout_seconds}")
        self._model = model
        self._api_key = SecretStr(key)
        self._policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        # base_url is always explicit so the SDK never reads ANTHROPIC_BASE_URL behind our back.
        self._client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=base_url or DEFAULT_BASE_URL,
            timeout=anthropic.Timeout(timeout_seconds, connect=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS)),
            max_retries=0,
        )

    @property
    def model_id(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self._model!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        messages, options = _request(request)
        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="generate", policy=self._policy
        ) as call:
            message = await call.run(partial(self._create, messages, request.max_tokens, options))
            response = _to_response(message)
            call.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
            return response

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        messages, options = _request(request)
        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="stream", policy=self._policy
        ) as call:
            # Opening the stream (the HTTP status) is retried like any call; once events flow, a
            # failure ends the stream with an error: text already handed out cannot be taken back.
            stream = await call.run(partial(self._open_stream, messages, request.max_tokens, options))
            try:
                with broken_stream_errors(PROVIDER), anthropic_errors():
                    async for event in stream:
                        if event.type == "text" and event.text:
                            yield TextDelta(text=event.text)
                    message = await stream.get_final_message()
            finally:
                await stream.close()
            response = _to_response(message)
            call.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
            yield StreamDone(response=response)

    async def generate_structured(
        self,
        prompt: str,
        schema: type[ModelT],
        *,
        system_prompt: str | None = None,
        max_tokens: int = 1024,
    ) -> tuple[ModelT, LLMResponse]:
        validate_generation_args(prompt, system_prompt=system_prompt, max_tokens=max_tokens)
        validate_schema(schema)
        tool_name = schema_name(schema)
        options: dict[str, Any] = {
            "tools": [
                {
                    "name": tool_name,
                    "description": f"Return the answer as a {schema.__name__} object.",
                    "input_schema": schema.model_json_schema(),
                }
            ],
            "tool_choice": {"type": "tool", "name": tool_name, "disable_parallel_tool_use": True},
        }
        if system_prompt:
            options["system"] = system_prompt
        messages: list[MessageParam] = [{"role": "user", "content": prompt}]

        async def ask(call: ProviderCall) -> tuple[LLMResponse, Message]:
            message = await call.run(partial(self._create, messages, max_tokens, options))
            return _to_response(message), message

        def parse(_: LLMResponse, message: Message) -> ModelT:
            tool_use = _tool_use(message)
            if tool_use is None:
                raise ValueError("the answer did not call the tool")
            return schema.model_validate(tool_use.input)

        def add_repair_turns(_: LLMResponse, message: Message, errors: str) -> None:
            messages.extend(_repair_turns(message, _tool_use(message), errors))

        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="generate_structured", policy=self._policy
        ) as call:
            return await structured_with_one_repair(call, ask, parse, add_repair_turns)

    async def _create(
        self, messages: list[MessageParam], max_tokens: int, options: dict[str, Any]
    ) -> Message:
        with anthropic_errors():
            message: Message = await self._client.messages.create(
                model=self._model, max_tokens=max_tokens, messages=messages, **options
            )
        return message

    async def _open_stream(
        self, messages: list[MessageParam], max_tokens: int, options: dict[str, Any]
    ) -> AsyncMessageStream[Any]:
        with anthropic_errors():
            manager = self._client.messages.stream(
                model=self._model, max_tokens=max_tokens, messages=messages, **options
            )
            stream: AsyncMessageStream[Any] = await manager.__aenter__()
        return stream


def _request(request: GenerationRequest) -> tuple[list[MessageParam], dict[str, Any]]:
    """The Messages API ``messages`` and the other options of a generate/stream call.

    ``temperature`` is not sent (see the module docstring)."""
    messages = [_message_param(m.role, m.content) for m in request.history]
    messages.append(_message_param("user", request.prompt))
    for round_ in request.tool_rounds:
        messages.extend(_round_turns(round_))
    options: dict[str, Any] = {}
    if request.system_prompt:
        options["system"] = request.system_prompt
    if request.stop_sequences:
        options["stop_sequences"] = list(request.stop_sequences)
    if request.tools:
        options["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
            for tool in request.tools
        ]
        options["tool_choice"] = {"type": request.tool_choice}
    return messages, options


def _round_turns(round_: ToolRound) -> list[MessageParam]:
    """A tool round as the assistant's tool_use turn and the user's tool_result turn."""
    content: list[Any] = [{"type": "text", "text": round_.text}] if round_.text.strip() else []
    # A tool_use input must be an object; arguments that were not one were already answered with
    # an error result, so the call is replayed with an empty input rather than a 400 for the turn.
    content.extend(
        {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": call.arguments if isinstance(call.arguments, dict) else {},
        }
        for call in round_.calls
    )
    results = [
        {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error}
        for r in round_.results
    ]
    assistant: MessageParam = {"role": "assistant", "content": content}
    user: MessageParam = {"role": "user", "content": cast(Any, results)}
    return [assistant, user]


def _message_param(role: str, content: str) -> MessageParam:
    if role == "user":
        return UserMessageParam(role="user", content=content)
    return AssistantMessageParam(role="assistant", content=content)


def _tool_use(message: Message) -> ToolUseBlock | None:
    """The answer's (forced) tool call, if the model made one."""
    return next((block for block in message.content if block.type == "tool_use"), None)


def _repair_turns(message: Message, tool_use: ToolUseBlock | None, errors: str) -> list[MessageParam]:
    """The assistant's invalid answer followed by the user turn asking for a corrected one."""
    assistant: MessageParam = {"role": "assistant", "content": message.to_param()["content"]}
    if tool_use is None:
        return [assistant, {"role": "user", "content": repair_instructions(errors)}]
    result: MessageParam = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": tool_use.id,
                "is_error": True,
                "content": repair_instructions(errors),
            }
        ],
    }
    return [assistant, result]


def _to_response(message: Message) -> LLMResponse:
    """Normalise a Messages API answer; a body missing the expected fields is InvalidResponseError."""
    try:
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = tuple(
            ToolCall(id=block.id, name=block.name, arguments=block.input)
            for block in message.content
            if block.type == "tool_use"
        )
        usage = message.usage
        cached_tokens = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        prompt_tokens = usage.input_tokens + cached_tokens
        completion_tokens = usage.output_tokens
        finish_reason = normalise_finish_reason(PROVIDER, message.stop_reason, _FINISH_REASONS)
        raw = message.model_dump(mode="json")
        model = str(message.model)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidResponseError(f"{PROVIDER}: malformed response: {exc}", provider=PROVIDER) from exc
    return LLMResponse(
        content=text,
        model=model,
        usage=TokenUsage.of(prompt_tokens, completion_tokens),
        finish_reason=finish_reason,
        tool_calls=calls,
        raw_response=raw,
    )
