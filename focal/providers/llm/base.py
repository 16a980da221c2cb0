"""The LLM provider interface and the value objects it speaks.

Vendor SDK types never cross this boundary: callers get ``LLMResponse`` with a normalised
``finish_reason``, ``TokenUsage`` and neutral ``ToolCall`` objects, whatever the vendor. Argument
checks shared by every provider live here so that bad input raises ``ProviderInputError`` before
any network call.

Streaming (``LLMProvider.stream``) yields ``TextDelta`` events as the vendor sends text, then
exactly one ``StreamDone`` carrying the ``LLMResponse`` a ``generate`` call would have returned
(full text, usage, finish reason, tool calls). Failures before the first event are retried like
``generate``; a failure after it raises from the iteration (no retry: text was already given out).
A consumer that stops iterating early (``aclose`` or cancellation) closes the vendor connection.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from focal.errors import (
    ContentFilterError,
    FocalError,
    InvalidResponseError,
    ProviderError,
    ProviderInputError,
    ProviderUnavailableError,
)
from focal.logging import get_logger
from focal.providers.llm.types import ToolCall, ToolChoice, ToolRound, ToolSpec, validate_tool_args
from focal.providers.retry import ProviderCall

FinishReason = Literal["stop", "length", "content_filter", "tool_use"]

ModelT = TypeVar("ModelT", bound=BaseModel)
ReplyT = TypeVar("ReplyT")  # a vendor's own answer object (an Anthropic Message, a ChatCompletion)


class TokenUsage(BaseModel):
    """Tokens billed for a call (summed over a repair request when there was one)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> TokenUsage:
        """Usage with ``total_tokens`` as the sum of the two counts."""
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class LLMMessage(BaseModel):
    """One earlier turn of the conversation; ``history`` is passed oldest first."""

    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant"]
    content: str


class LLMResponse(BaseModel):
    """What a provider answered.

    ``finish_reason`` is normalised: "stop" (natural end or a stop sequence), "length"
    (max_tokens or the context window reached), "content_filter" (the vendor refused or filtered;
    ``content`` then holds whatever text it gave, e.g. the refusal) or "tool_use".
    ``tool_calls`` holds the calls the model asked for (then ``finish_reason`` is "tool_use");
    ``content`` may carry text the model said before them. ``raw_response`` is the vendor's JSON
    body, for debugging and audit.
    """

    content: str
    model: str
    usage: TokenUsage
    finish_reason: FinishReason
    tool_calls: tuple[ToolCall, ...] = ()
    raw_response: dict[str, Any] | None = None


class TextDelta(BaseModel):
    """A piece of the answer's text, in order; the pieces joined are ``StreamDone.response.content``."""

    model_config = ConfigDict(frozen=True)

    type: Literal["delta"] = "delta"
    text: str


class StreamDone(BaseModel):
    """The last event of a stream: the complete response, as ``generate`` would return it."""

    model_config = ConfigDict(frozen=True)

    type: Literal["done"] = "done"
    response: LLMResponse


StreamEvent = TextDelta | StreamDone


@dataclass(frozen=True)
class GenerationRequest:
    """The arguments of one ``generate``/``stream`` call, validated; each provider maps them to its
    vendor's request (``LLMProvider._generate`` / ``_stream``)."""

    prompt: str
    system_prompt: str | None = None
    history: tuple[LLMMessage, ...] = ()
    max_tokens: int = 1024
    temperature: float = 0.7
    stop_sequences: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_rounds: tuple[ToolRound, ...] = ()
    tool_choice: ToolChoice = "auto"

    @classmethod
    def checked(
        cls,
        prompt: str,
        system_prompt: str | None,
        history: Sequence[LLMMessage] | None,
        max_tokens: int,
        temperature: float,
        stop_sequences: Sequence[str] | None,
        tools: Sequence[ToolSpec] | None,
        tool_rounds: Sequence[ToolRound] | None,
        tool_choice: ToolChoice,
    ) -> GenerationRequest:
        """The request, or ``ProviderInputError`` for arguments no vendor would accept."""
        validate_generation_args(
            prompt,
            system_prompt=system_prompt,
            history=history,
            max_tokens=max_tokens,
            temperature=temperature,
            stop_sequences=stop_sequences,
            tools=tools,
            tool_rounds=tool_rounds,
            tool_choice=tool_choice,
        )
        return cls(
            prompt=prompt,
            system_prompt=system_prompt,
            history=tuple(history or ()),
            max_tokens=max_tokens,
            temperature=temperature,
            stop_sequences=tuple(stop_sequences or ()),
            tools=tuple(tools or ()),
            tool_rounds=tuple(tool_rounds or ()),
            tool_choice=tool_choice,
        )

    def context_texts(self) -> list[str]:
        """System prompt, history and prompt: the texts an offline provider counts as input."""
        return [self.system_prompt or "", *(m.content for m in self.history), self.prompt]


class LLMProvider(ABC):
    """Turns a prompt (plus optional system prompt and history) into text or a validated object."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The model this provider calls ("offline" for the offline provider)."""

    async def generate(
        self,
        prompt: str,
        *,
        system_prompt: str | None = None,
        history: Sequence[LLMMessage] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        stop_sequences: Sequence[str] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_rounds: Sequence[ToolRound] | None = None,
        tool_choice: ToolChoice = "auto",
    ) -> LLMResponse:
        """Answer ``prompt`` as the next user turn after ``history``.

        With ``tools`` the model may answer with ``tool_calls`` instead of (or besides) text;
        ``tool_rounds`` are the earlier rounds of this turn's tool loop, appended after ``prompt``
        in order. ``tool_choice="none"`` forbids further calls (the model must answer in text).
        Bad arguments raise ``ProviderInputError`` before any network call.
        """
        request = GenerationRequest.checked(
            prompt,
            system_prompt,
            history,
            max_tokens,
            temperature,
            stop_sequences,
            tools,
            tool_rounds,
            tool_choice,
        )
        return await self._generate(request)

    def stream(
        self,
        prompt: str,
        *,
        system_prompt: str | None = None,
        history: Sequence[LLMMessage] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        stop_sequences: Sequence[str] | None = None,
        tools: Sequence[ToolSpec] | None = None,
        tool_rounds: Sequence[ToolRound] | None = None,
        tool_choice: ToolChoice = "auto",
    ) -> AsyncGenerator[StreamEvent, None]:
        """``generate`` as a stream: ``TextDelta`` events, then one ``StreamDone`` (module doc).
        Bad arguments raise ``ProviderInputError`` here, before the stream is iterated."""
        request = GenerationRequest.checked(
            prompt,
            system_prompt,
            history,
            max_tokens,
            temperature,
            stop_sequences,
            tools,
            tool_rounds,
            tool_choice,
        )
        return self._stream(request)

    @abstractmethod
    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        """``generate`` for a validated request: what each provider implements."""

    @abstractmethod
    def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """``stream`` for a validated request (an async generator): what each provider implements."""

    @abstractmethod
    async def generate_structured(
        self,
        prompt: str,
        schema: type[ModelT],
        *,
        system_prompt: str | None = None,
        max_tokens: int = 1024,
    ) -> tuple[ModelT, LLMResponse]:
        """Answer with an instance of ``schema``.

        An answer that does not validate gets one repair request (the validation errors are sent
        back); if that fails too, ``InvalidResponseError`` is raised.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op for providers without clients
        """Release network resources (HTTP connection pools). Safe to call more than once."""


@contextmanager
def broken_stream_errors(provider: str) -> Iterator[None]:
    """Errors while reading a stream that already started (around the vendor's own translation).

    Once events flow, the vendor signals trouble with an error event inside a 200 response (an
    overload, a server error), or the connection breaks off. Both mean "try again later":
    ``ProviderUnavailableError``. A non-Focal exception here can only come from the SDK's
    transport (its HTTP library's read errors are not wrapped during iteration), so it is
    translated too, with its type in the message.
    """
    try:
        yield
    except ProviderUnavailableError:
        raise
    except ProviderError as exc:
        if exc.status_code is not None and exc.status_code >= 400:
            raise
        raise ProviderUnavailableError(
            f"{provider}: the stream broke off: {exc}", provider=provider, status_code=exc.status_code
        ) from exc
    except FocalError:
        raise
    except Exception as exc:
        raise ProviderUnavailableError(
            f"{provider}: the stream broke off: {type(exc).__name__}: {exc}", provider=provider
        ) from exc


def validate_generation_args(
    prompt: str,
    *,
    system_prompt: str | None = None,
    history: Sequence[LLMMessage] | None = None,
    max_tokens: int = 1024,
    temperature: float = 0.7,
    stop_sequences: Sequence[str] | None = None,
    tools: Sequence[ToolSpec] | None = None,
    tool_rounds: Sequence[ToolRound] | None = None,
    tool_choice: str = "auto",
) -> None:
    """Raise ``ProviderInputError`` for arguments no vendor would accept."""
    validate_tool_args(tools, tool_rounds, tool_choice)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ProviderInputError("prompt must be a non-empty string")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ProviderInputError("system_prompt must be a string or None")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ProviderInputError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ProviderInputError(f"temperature must be between 0 and 2, got {temperature!r}")
    for index, message in enumerate(history or ()):
        if not isinstance(message, LLMMessage):
            raise ProviderInputError(f"history[{index}] must be an LLMMessage, got {type(message).__name__}")
        if not message.content.strip():
            raise ProviderInputError(f"history[{index}] has empty content")
    if stop_sequences is not None:
        if isinstance(stop_sequences, str):
            raise ProviderInputError("stop_sequences must be a list of strings, not a single string")
        for sequence in stop_sequences:
            if not isinstance(sequence, str) or not sequence.strip():
                raise ProviderInputError(f"stop sequences must be non-empty strings, got {sequence!r}")


def normalise_finish_reason(
    provider: str, vendor_reason: str | None, mapping: dict[str, FinishReason]
) -> FinishReason:
    """Map a vendor's stop reason; a missing one is "stop", an unknown one is "stop" plus a warning.

    Unknown values are logged rather than raised: a vendor adding a new reason must not take every
    conversation down, but it must not pass unnoticed either.
    """
    if vendor_reason is None:
        return "stop"
    reason = mapping.get(vendor_reason)
    if reason is None:
        get_logger("focal.providers").warning(
            "unknown_finish_reason", provider=provider, vendor_reason=vendor_reason, mapped_to="stop"
        )
        return "stop"
    return reason


def validate_schema(schema: object) -> None:
    """``generate_structured`` needs a Pydantic model class."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ProviderInputError(f"schema must be a Pydantic model class, got {schema!r}")


def schema_name(schema: type[BaseModel]) -> str:
    """The schema's class name in the character set vendors accept for tool/schema names."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in schema.__name__)
    return cleaned[:64] or "structured_output"


_WORD_CHUNK = re.compile(r"\S+\s*")


def word_chunks(text: str) -> list[str]:
    """``text`` cut into words, each with the whitespace after it (joined, they are ``text``
    without its leading whitespace): how the offline and scripted providers stream an answer."""
    return _WORD_CHUNK.findall(text)


def repair_instructions(errors: str) -> str:
    """The text sent back to the model when its structured answer did not validate."""
    return (
        "Your previous answer did not match the required JSON schema. Validation errors:\n"
        f"{errors}\nAnswer again with a corrected object that matches the schema exactly."
    )


async def structured_with_one_repair(
    call: ProviderCall,
    ask: Callable[[ProviderCall], Awaitable[tuple[LLMResponse, ReplyT]]],
    parse: Callable[[LLMResponse, ReplyT], ModelT],
    add_repair_turns: Callable[[LLMResponse, ReplyT, str], None],
) -> tuple[ModelT, LLMResponse]:
    """The ``generate_structured`` loop every vendor provider shares, inside its ``ProviderCall``.

    ``ask`` sends the conversation so far through ``call`` and returns the normalised response with
    the vendor's answer; ``parse`` turns them into the schema's instance (``ValidationError`` or
    ``ValueError`` when they do not fit). A refusal is ``ContentFilterError``; an invalid answer is
    sent back once (``add_repair_turns`` extends the conversation with it and the validation
    errors) and a second invalid one is ``InvalidResponseError``. The response returned carries
    the parsed object as its JSON content and the tokens of both requests.
    """
    provider = call.provider
    usage = TokenUsage()
    for attempt in (1, 2):
        response, reply = await ask(call)
        usage += response.usage
        call.add_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
        if response.finish_reason == "content_filter":
            refusal = f": {response.content}" if response.content else ""
            raise ContentFilterError(f"{provider}: the model refused the request{refusal}", provider=provider)
        try:
            parsed = parse(response, reply)
        except (ValidationError, ValueError) as exc:
            if attempt == 2:
                raise InvalidResponseError(
                    f"{provider}: structured answer still invalid after one repair: {exc}", provider=provider
                ) from exc
            add_repair_turns(response, reply, str(exc))
            continue
        return parsed, response.model_copy(update={"content": parsed.model_dump_json(), "usage": usage})
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
