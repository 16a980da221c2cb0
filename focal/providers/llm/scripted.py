"""``ScriptedLLMProvider``: answers from a queue of scripted replies, for tests of anything that
depends on what the model says.

Each call (``generate``, ``stream``, ``generate_structured``) takes the next ``ScriptedReply`` off
the queue, first in, first out, and records what it was asked (``calls``). A reply can be text,
tool calls, an error to raise, a structured object, explicit stream chunks, and for streams a
failure after some chunks or a pause (``hold``) the test releases. An empty queue is a test bug:
``ScriptExhaustedError`` (an ``AssertionError``, so no pipeline mistakes it for a provider outage).

The arguments are validated exactly as the vendor providers validate them, so a test cannot pass
with a call that a real provider would refuse.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from focal.errors import InvalidResponseError, ProviderError
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
    validate_generation_args,
    validate_schema,
    word_chunks,
)
from focal.providers.llm.types import ToolCall, ToolRound, ToolSpec

MODEL_ID = "scripted"


class ScriptExhaustedError(AssertionError):
    """The code under test called the model more often than the test scripted."""


@dataclass
class ScriptedReply:
    """One scripted answer.

    - ``text``: the answer's text (``content``); ``tool_calls``: calls the model asks for
      (``finish_reason`` becomes "tool_use" unless given).
    - ``error``: raised instead of answering (for ``stream``: before the first chunk, unless
      ``fail_after_chunks`` is set, then after that many chunks).
    - ``structured``: the object ``generate_structured`` validates against the schema (a dict).
    - ``chunks``: the stream's text pieces (default: ``text`` word by word); joined they must be
      ``text``.
    - ``hold``: a stream waits for this event after its first chunk (a test can observe the first
      chunk while the rest is still "on the wire").
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: FinishReason | None = None
    usage: TokenUsage = field(default_factory=lambda: TokenUsage.of(10, 5))
    error: ProviderError | None = None
    structured: dict[str, Any] | None = None
    chunks: Sequence[str] | None = None
    fail_after_chunks: int | None = None
    hold: asyncio.Event | None = None

    def response(self) -> LLMResponse:
        reason: FinishReason = self.finish_reason or ("tool_use" if self.tool_calls else "stop")
        return LLMResponse(
            content=self.text,
            model=MODEL_ID,
            usage=self.usage,
            finish_reason=reason,
            tool_calls=tuple(self.tool_calls),
        )

    def stream_chunks(self) -> list[str]:
        chunks = list(self.chunks) if self.chunks is not None else word_chunks(self.text)
        if "".join(chunks) != self.text:
            raise AssertionError(f"scripted chunks {chunks!r} do not join to the text {self.text!r}")
        return chunks


@dataclass(frozen=True)
class RecordedCall:
    """What the provider was asked: the operation and its arguments."""

    operation: Literal["generate", "stream", "generate_structured"]
    prompt: str
    system_prompt: str | None = None
    history: tuple[LLMMessage, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_rounds: tuple[ToolRound, ...] = ()
    tool_choice: str = "auto"
    schema: type[Any] | None = None


class ScriptedLLMProvider(LLMProvider):
    """Replies from a queue (see the module docstring); ``calls`` records every request."""

    def __init__(self, replies: Iterable[ScriptedReply | str] = ()) -> None:
        self._queue: deque[ScriptedReply] = deque()
        self.calls: list[RecordedCall] = []
        self.streams_closed_early = 0  # streams whose consumer stopped before their last event
        self.enqueue(*replies)

    @property
    def model_id(self) -> str:
        return MODEL_ID

    def __repr__(self) -> str:
        return f"ScriptedLLMProvider(queued={len(self._queue)})"

    def enqueue(self, *replies: ScriptedReply | str) -> None:
        """Add replies; a plain string is a text reply."""
        self._queue.extend(ScriptedReply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def _next(self, call: RecordedCall) -> ScriptedReply:
        self.calls.append(call)
        if not self._queue:
            raise ScriptExhaustedError(
                f"no scripted reply left for call #{len(self.calls)} ({call.operation})"
            )
        return self._queue.popleft()

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        reply = self._next(_recorded("generate", request))
        if reply.error is not None:
            raise reply.error
        return reply.response()

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        reply = self._next(_recorded("stream", request))
        if reply.error is not None and reply.fail_after_chunks is None:
            raise reply.error
        finished = False
        try:
            for index, chunk in enumerate(reply.stream_chunks()):
                if reply.error is not None and index == reply.fail_after_chunks:
                    finished = True
                    raise reply.error
                yield TextDelta(text=chunk)
                if index == 0 and reply.hold is not None:
                    await reply.hold.wait()
            finished = True
            if reply.error is not None:
                raise reply.error
            yield StreamDone(response=reply.response())
        finally:
            if not finished:  # closed or cancelled by its consumer
                self.streams_closed_early += 1

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
        call = RecordedCall(
            operation="generate_structured", prompt=prompt, system_prompt=system_prompt, schema=schema
        )
        reply = self._next(call)
        if reply.error is not None:
            raise reply.error
        if reply.structured is None:
            raise AssertionError("a generate_structured call needs a ScriptedReply with structured=...")
        try:
            parsed = schema.model_validate(reply.structured)
        except ValidationError as exc:
            raise InvalidResponseError(
                f"scripted structured answer invalid: {exc}", provider=MODEL_ID
            ) from exc
        response = LLMResponse(
            content=parsed.model_dump_json(), model=MODEL_ID, usage=reply.usage, finish_reason="tool_use"
        )
        return parsed, response


def _recorded(operation: Literal["generate", "stream"], request: GenerationRequest) -> RecordedCall:
    return RecordedCall(
        operation=operation,
        prompt=request.prompt,
        system_prompt=request.system_prompt,
        history=request.history,
        tools=request.tools,
        tool_rounds=request.tool_rounds,
        tool_choice=request.tool_choice,
    )
