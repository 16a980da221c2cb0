"""``OpenAIProvider``: chat completions through the official ``openai`` SDK's async client.

``base_url`` (ending in ``/v1``) points it at any OpenAI-compatible server: vLLM, llama.cpp
server, Ollama, LM Studio. The completion limit is sent as ``max_completion_tokens`` to OpenAI
itself (its current name, the only one reasoning models accept) and as ``max_tokens`` when a
``base_url`` is set, because that is the name every compatible server understands.

Structured output uses ``response_format`` with a strict JSON schema (built by the SDK's public
``pydantic_function_tool`` helper, which applies OpenAI's strict-mode rules); an answer that does
not validate is sent back once with the validation errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import openai
from openai import AsyncStream
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
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
    LLMMessage,
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

PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
CONNECT_TIMEOUT_SECONDS = 10.0

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}
_CONTEXT_WINDOW_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTENT_FILTER_CODES = {"content_filter", "content_policy_violation"}


@contextmanager
def openai_errors(provider: str = PROVIDER) -> Iterator[None]:
    """Translate every ``openai`` SDK exception into the Focal provider error tree."""
    try:
        yield
    except openai.APITimeoutError as exc:
        raise ProviderUnavailableError(f"{provider}: request timed out", provider=provider) from exc
    except openai.APIConnectionError as exc:
        raise ProviderUnavailableError(f"{provider}: connection failed: {exc}", provider=provider) from exc
    except openai.APIStatusError as exc:
        code = exc.code or ""
        raise error_for_status(
            provider=provider,
            status_code=exc.status_code,
            message=exc.message,
            headers=exc.response.headers,
            context_window_exceeded=code in _CONTEXT_WINDOW_CODES,
            content_filtered=code in _CONTENT_FILTER_CODES,
        ) from exc
    except openai.APIResponseValidationError as exc:
        raise InvalidResponseError(f"{provider}: malformed response: {exc}", provider=provider) from exc
    except openai.OpenAIError as exc:
        raise ProviderError(f"{provider}: {exc}", provider=provider) from exc
    except ValueError as exc:  # a 200 whose body is not JSON
        raise InvalidResponseError(f"{provider}: unreadable response body: {exc}", provider=provider) from exc


def build_openai_client(
    api_key: str | SecretStr, base_url: str | None, timeout_seconds: float
) -> tuple[openai.AsyncOpenAI, SecretStr]:
    """An SDK client with SDK retries off, explicit timeouts and an explicit base URL."""
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if not key or not key.strip():
        raise ConfigurationError("an OpenAI provider needs an API key (OPENAI_API_KEY)")
    if timeout_seconds <= 0:
        raise ConfigurationError(f"timeout_seconds must be > 0, got {timeout_seconds}")
    client = openai.AsyncOpenAI(
        api_key=key,
        base_url=base_url or DEFAULT_BASE_URL,
        timeout=openai.Timeout(timeout_seconds, connect=min(timeout_seconds, CONNECT_TIMEOUT_SECONDS)),
        max_retries=0,
    )
    return client, SecretStr(key)


class OpenAIProvider(LLMProvider):
    """OpenAI chat models or any OpenAI-compatible server (``base_url`` ends in ``/v1``).

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
        if not model or not model.strip():
            raise ConfigurationError("OpenAIProvider needs a model name (FOCAL_LLM__MODEL)")
        self._model = model
        self._client, self._api_key = build_openai_client(api_key, base_url, timeout_seconds)
        self._policy = retry_policy or RetryPolicy(max_attempts=max_attempts)
        self._limit_field = "max_tokens" if base_url else "max_completion_tokens"

    @property
    def model_id(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self._model!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        messages = _messages(request.prompt, request.system_prompt, request.history, request.tool_rounds)
        options = self._options(request)
        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="generate", policy=self._policy
        ) as call:
            completion = await call.run(partial(self._create, messages, options))
            response = _to_response(completion)
            call.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
            return response

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        messages = _messages(request.prompt, request.system_prompt, request.history, request.tool_rounds)
        options = self._options(request)
        # The usage arrives in a last chunk without choices, only when asked for.
        options.update(stream=True, stream_options={"include_usage": True})
        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="stream", policy=self._policy
        ) as call:
            # Opening the stream (the HTTP status) is retried like any call; once chunks flow, a
            # failure ends the stream with an error: text already handed out cannot be taken back.
            chunks = await call.run(partial(self._open_stream, messages, options))
            state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
            try:
                with broken_stream_errors(PROVIDER), openai_errors():
                    async for chunk in chunks:
                        state.handle_chunk(chunk)
                        for choice in chunk.choices[:1]:
                            if choice.delta.content:
                                yield TextDelta(text=choice.delta.content)
                    completion = state.get_final_completion()
            finally:
                await chunks.close()
            response = _to_response(completion)
            call.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
            yield StreamDone(response=response)

    def _options(self, request: GenerationRequest) -> dict[str, Any]:
        options: dict[str, Any] = {self._limit_field: request.max_tokens, "temperature": request.temperature}
        if request.stop_sequences:
            options["stop"] = list(request.stop_sequences)
        if request.tools:
            options["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
            options["tool_choice"] = request.tool_choice
        return options

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
        strict_schema = openai.pydantic_function_tool(schema)["function"]["parameters"]
        options: dict[str, Any] = {
            self._limit_field: max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name(schema), "schema": strict_schema, "strict": True},
            },
        }
        messages = _messages(prompt, system_prompt, None, None)

        async def ask(call: ProviderCall) -> tuple[LLMResponse, ChatCompletion]:
            completion = await call.run(partial(self._create, messages, options))
            return _to_response(completion), completion

        def parse(response: LLMResponse, _: ChatCompletion) -> ModelT:
            return schema.model_validate_json(response.content)

        def add_repair_turns(response: LLMResponse, _: ChatCompletion, errors: str) -> None:
            messages.append({"role": "assistant", "content": response.content})
            messages.append({"role": "user", "content": repair_instructions(errors)})

        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="generate_structured", policy=self._policy
        ) as call:
            return await structured_with_one_repair(call, ask, parse, add_repair_turns)

    # Both requests go through the SDK client's public ``post`` rather than
    # ``chat.completions.create``: ``create`` first walks the body against the SDK's parameter
    # TypedDicts (``async_maybe_transform``, to apply key aliases and value formats), about
    # 0.16 ms of CPU per message on every request before it leaves (1.9 ms for a turn with ten
    # messages of history), and that walk changes nothing here: the body is plain JSON built by
    # this module under the API's own key names, and chat completion parameters have no aliased
    # or formatted fields. Same client, URL, headers (the bearer key), timeouts and errors.

    async def _create(
        self, messages: list[ChatCompletionMessageParam], options: dict[str, Any]
    ) -> ChatCompletion:
        with openai_errors():
            completion: ChatCompletion = await self._client.post(
                "/chat/completions",
                body={"model": self._model, "messages": messages, **options},
                cast_to=ChatCompletion,
            )
        return completion

    async def _open_stream(
        self, messages: list[ChatCompletionMessageParam], options: dict[str, Any]
    ) -> AsyncStream[ChatCompletionChunk]:
        with openai_errors():
            chunks: AsyncStream[ChatCompletionChunk] = await self._client.post(
                "/chat/completions",
                body={"model": self._model, "messages": messages, **options},
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=AsyncStream[ChatCompletionChunk],
            )
        return chunks


def _messages(
    prompt: str,
    system_prompt: str | None,
    history: Sequence[LLMMessage] | None,
    tool_rounds: Sequence[ToolRound] | None,
) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for message in history or ():
        if message.role == "user":
            messages.append({"role": "user", "content": message.content})
        else:
            messages.append({"role": "assistant", "content": message.content})
    messages.append({"role": "user", "content": prompt})
    for round_ in tool_rounds or ():
        messages.append(
            {
                "role": "assistant",
                "content": round_.text or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": _arguments_text(call.arguments)},
                    }
                    for call in round_.calls
                ],
            }
        )
        for result in round_.results:
            # Chat completions have no error flag on a tool message: the content says it.
            content = f"ERROR: {result.content}" if result.is_error else result.content
            messages.append({"role": "tool", "tool_call_id": result.call_id, "content": content})
    return messages


def _arguments_text(arguments: Any) -> str:
    """The arguments as the model sent them: undecodable text stays that text."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _arguments(text: str) -> Any:
    """Decoded call arguments; text that is not JSON is kept as the string (refused by the schema)."""
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def _to_response(completion: ChatCompletion) -> LLMResponse:
    """Normalise a chat completion; a body missing the expected fields is InvalidResponseError.

    A refusal (``message.refusal``) becomes ``finish_reason="content_filter"`` with the refusal
    text as content. Servers that omit ``usage`` report zero tokens.
    """
    try:
        choice = completion.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        content = message.content or refusal or ""
        calls = tuple(
            ToolCall(id=call.id, name=call.function.name, arguments=_arguments(call.function.arguments))
            for call in message.tool_calls or ()
            if call.type == "function"
        )
        finish_reason = normalise_finish_reason(PROVIDER, choice.finish_reason, _FINISH_REASONS)
        if refusal:
            finish_reason = "content_filter"
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        raw = completion.model_dump(mode="json")
        model = str(completion.model)
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        raise InvalidResponseError(f"{PROVIDER}: malformed response: {exc}", provider=PROVIDER) from exc
    if not isinstance(content, str):
        raise InvalidResponseError(f"{PROVIDER}: malformed response: content is not text", provider=PROVIDER)
    return LLMResponse(
        content=content,
        model=model,
        usage=TokenUsage.of(prompt_tokens, completion_tokens),
        finish_reason=finish_reason,
        tool_calls=calls,
        raw_response=raw,
    )
