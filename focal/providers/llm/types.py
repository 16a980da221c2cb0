"""Vendor-neutral types for tool calling, mapped by every SDK adapter.

Tool calling is a conversation the caller drives: ``generate(..., tools=[ToolSpec...])`` may answer
with ``LLMResponse.tool_calls`` (``finish_reason="tool_use"``); the caller runs the calls itself and
asks again with the exchange appended as a ``ToolRound`` (the model's calls and their results), up to
a bound it chooses. Providers never execute anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from focal.errors import ProviderInputError

# What both vendors accept as a function/tool name (Anthropic: ^[a-zA-Z0-9_-]{1,64}$, OpenAI the same).
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ToolChoice = Literal["auto", "none"]


def _empty_object_schema() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


class ToolSpec(BaseModel):
    """A tool offered to the model: its name, what it does, and the JSON Schema of its arguments."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, JsonValue] = Field(default_factory=_empty_object_schema)


class ToolCall(BaseModel):
    """A call the model asked for. ``arguments`` is the decoded JSON the model sent; when the model
    sent text that is not JSON, it is that text (a string), which no object schema accepts."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: JsonValue = None


class ToolResult(BaseModel):
    """The outcome of one ``ToolCall``, sent back to the model. ``is_error`` marks a failed call
    (invalid arguments, timeout, error status): the model is told, and decides what to say."""

    model_config = ConfigDict(frozen=True)

    call_id: str
    name: str
    content: str
    is_error: bool = False


class ToolRound(BaseModel):
    """One round of the tool loop: what the model said and asked for, and what the calls returned."""

    model_config = ConfigDict(frozen=True)

    text: str = ""
    calls: tuple[ToolCall, ...]
    results: tuple[ToolResult, ...]


def validate_tool_args(
    tools: Sequence[ToolSpec] | None, tool_rounds: Sequence[ToolRound] | None, tool_choice: str
) -> None:
    """``ProviderInputError`` for tool arguments no vendor would accept (before any network call)."""
    if tool_choice not in ("auto", "none"):
        raise ProviderInputError(f"tool_choice must be 'auto' or 'none', got {tool_choice!r}")
    names: set[str] = set()
    for tool in tools or ():
        if not isinstance(tool, ToolSpec):
            raise ProviderInputError(f"tools must be ToolSpec objects, got {type(tool).__name__}")
        if not TOOL_NAME_PATTERN.match(tool.name):
            raise ProviderInputError(f"tool name {tool.name!r} does not match {TOOL_NAME_PATTERN.pattern}")
        if tool.name in names:
            raise ProviderInputError(f"tool {tool.name!r} is offered twice")
        if tool.parameters.get("type") != "object":
            raise ProviderInputError(f"tool {tool.name!r}: parameters must be a JSON Schema of type object")
        names.add(tool.name)
    if tool_rounds and not tools:
        # Both vendors need the tool definitions to read a conversation that contains tool calls.
        raise ProviderInputError("tool_rounds need the tools they used (pass tools=...)")
    for index, round_ in enumerate(tool_rounds or ()):
        if not isinstance(round_, ToolRound):
            raise ProviderInputError(f"tool_rounds[{index}] must be a ToolRound, got {type(round_).__name__}")
        if not round_.calls:
            raise ProviderInputError(f"tool_rounds[{index}] has no calls")
        call_ids = [call.id for call in round_.calls]
        if sorted(call_ids) != sorted(result.call_id for result in round_.results) or len(
            set(call_ids)
        ) != len(call_ids):
            raise ProviderInputError(f"tool_rounds[{index}]: every call needs exactly one result")
