"""``OfflineLLMProvider``: a deterministic stand-in that needs no network and no key.

It composes its answer from the prompt, following a tiny protocol the turn pipeline can rely on:

1. A line ``Suggested responses:`` followed by lines starting with ``- `` lists template texts;
   when present, the answer is those texts joined by a space, in order.
2. Otherwise a line ``Rules to follow:`` followed by ``- `` lines lists the matched rules' action
   texts; when present, the answer is those texts, each ending in punctuation, joined by a space.
3. Otherwise the answer acknowledges the customer's message: the text after ``Customer:`` on the
   last line starting with ``Customer:``, or the whole prompt (whitespace collapsed) if there is
   no such line: ``Thank you for your message: "<text>". (offline mode: no language model is
   configured)``.

A block ends at the first line that does not start with ``- ``; blank lines inside a block are
skipped. Tokens are whitespace-separated words: the answer is cut to ``max_tokens`` words
(``finish_reason="length"``) and at the first stop sequence. ``system_prompt`` and ``history`` count
towards ``prompt_tokens`` only. ``temperature`` is accepted and has no effect: the output depends
on the input alone, so two instances given the same input answer the same.

**Tools.** When tools are offered (``tool_choice="auto"``), the provider calls, in one round, every
offered tool it has not called yet in this turn whose required parameters it can fill, and answers
in text once none is left. A parameter is filled from a ``Known values:`` block (``- name: value``
lines, the turn's variables) when it names the parameter, else from the customer's message: the
first match of the parameter's ``pattern`` (anchors dropped), or the first of its ``enum`` values
that appears in the message as a word. Values are coerced to the parameter's integer/number type.
A tool without required parameters is always callable. After tool rounds, each failed call adds a
sentence ``I could not complete <tool>: <error>.`` to the answer; successful results add nothing
(templates render what the turn captured from them).

**Streaming** yields the ``generate`` answer word by word (each word with its following
whitespace), then the response.

``generate_structured`` fills the schema from its JSON schema: string fields get the composed
answer, numbers their minimum (or 0), booleans False, enums and literals their first value,
optional fields None, lists their minimum length of items; fields with defaults keep them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from pydantic import ValidationError

from focal.errors import InvalidResponseError
from focal.patterns import PatternError, compiled
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
    validate_generation_args,
    validate_schema,
    word_chunks,
)
from focal.providers.llm.types import ToolCall, ToolRound, ToolSpec

MODEL_ID = "offline"
RULES_HEADER = "Rules to follow:"
SUGGESTIONS_HEADER = "Suggested responses:"
CUSTOMER_PREFIX = "Customer:"
KNOWN_VALUES_HEADER = "Known values:"


class OfflineLLMProvider(LLMProvider):
    """Deterministic answers composed from the prompt's rules and templates; see the module doc."""

    @property
    def model_id(self) -> str:
        return MODEL_ID

    def __repr__(self) -> str:
        return "OfflineLLMProvider()"

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        context = request.context_texts()
        if request.tools and request.tool_choice == "auto":
            calls = choose_tool_calls(request.prompt, request.tools, request.tool_rounds)
            if calls:
                return LLMResponse(
                    content="",
                    model=MODEL_ID,
                    usage=_usage(context, ""),
                    finish_reason="tool_use",
                    tool_calls=calls,
                )
        answer = compose_answer(request.prompt)
        failures = [r for round_ in request.tool_rounds for r in round_.results if r.is_error]
        if failures:
            answer = " ".join([answer, *(f"I could not complete {r.name}: {r.content}." for r in failures)])
        return _respond(answer, context, request.max_tokens, request.stop_sequences)

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        response = await self._generate(request)
        for word in word_chunks(response.content):
            yield TextDelta(text=word)
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
        json_schema = schema.model_json_schema()
        value = _value_for(json_schema, json_schema, compose_answer(prompt))
        try:
            parsed = schema.model_validate(value)
        except ValidationError as exc:
            raise InvalidResponseError(
                f"offline provider cannot fill schema {schema.__name__}: {exc}", provider=MODEL_ID
            ) from exc
        usage = _usage([system_prompt or "", prompt], parsed.model_dump_json())
        response = LLMResponse(
            content=parsed.model_dump_json(), model=MODEL_ID, usage=usage, finish_reason="tool_use"
        )
        return parsed, response


def compose_answer(prompt: str) -> str:
    """The offline answer for ``prompt`` (before max_tokens and stop sequences apply)."""
    lines = prompt.splitlines()
    suggestions = _bullet_block(lines, SUGGESTIONS_HEADER)
    if suggestions:
        return " ".join(suggestions)
    rules = _bullet_block(lines, RULES_HEADER)
    if rules:
        return " ".join(text if text[-1] in ".!?" else f"{text}." for text in rules)
    customer_lines = [line.strip() for line in lines if line.strip().startswith(CUSTOMER_PREFIX)]
    said = customer_lines[-1][len(CUSTOMER_PREFIX) :].strip() if customer_lines else " ".join(prompt.split())
    return f'Thank you for your message: "{said}". (offline mode: no language model is configured)'


def choose_tool_calls(
    prompt: str, tools: Sequence[ToolSpec], tool_rounds: Sequence[ToolRound]
) -> tuple[ToolCall, ...]:
    """The calls of the next round: every offered tool not yet called whose arguments can be filled."""
    lines = prompt.splitlines()
    message = _customer_text(lines)
    known = dict(item.split(": ", 1) for item in _bullet_block(lines, KNOWN_VALUES_HEADER) if ": " in item)
    called = {call.name for round_ in tool_rounds for call in round_.calls}
    calls: list[ToolCall] = []
    for tool in tools:
        if tool.name in called:
            continue
        arguments = _fill_arguments(tool.parameters, message, known)
        if arguments is not None:
            calls.append(
                ToolCall(
                    id=f"offline_{len(tool_rounds) + 1}_{len(calls) + 1}", name=tool.name, arguments=arguments
                )
            )
    return tuple(calls)


def _fill_arguments(schema: dict[str, Any], message: str, known: dict[str, str]) -> dict[str, Any] | None:
    """Arguments for ``schema`` from known values and the message; None if a required one is missing."""
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    arguments: dict[str, Any] = {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        raw = known.get(name)
        if raw is None:
            raw = _find_in_message(spec, message)
        value = _coerce(raw, spec.get("type")) if raw is not None else None
        if value is not None:
            arguments[name] = value
        elif name in required:
            return None
    return arguments


def _find_in_message(spec: dict[str, Any], message: str) -> str | None:
    pattern = spec.get("pattern")
    if isinstance(pattern, str):
        try:  # a tenant's pattern: RE2, linear whatever it is (focal.patterns)
            found = compiled(pattern.removeprefix("^").removesuffix("$")).search(message)
        except PatternError:
            return None
        return found.group(0) if found else None
    for option in spec.get("enum") or ():
        if isinstance(option, str) and re.search(rf"\b{re.escape(option)}\b", message, re.IGNORECASE):
            return option
    return None


def _coerce(raw: str, kind: Any) -> Any:
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        return None
    return raw


def _customer_text(lines: list[str]) -> str:
    customer_lines = [line.strip() for line in lines if line.strip().startswith(CUSTOMER_PREFIX)]
    return customer_lines[-1][len(CUSTOMER_PREFIX) :].strip() if customer_lines else ""


def _bullet_block(lines: list[str], header: str) -> list[str]:
    """The ``- `` items following the last line equal to ``header``."""
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    if not starts:
        return []
    items: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("- "):
            break
        item = stripped[2:].strip()
        if item:
            items.append(item)
    return items


def _respond(
    answer: str, context: list[str], max_tokens: int, stop_sequences: Sequence[str] | None
) -> LLMResponse:
    finish_reason: FinishReason = "stop"
    for sequence in stop_sequences or ():
        position = answer.find(sequence)
        if position >= 0:
            answer = answer[:position].rstrip()
    words = answer.split()
    if len(words) > max_tokens:
        answer = " ".join(words[:max_tokens])
        finish_reason = "length"
    return LLMResponse(
        content=answer, model=MODEL_ID, usage=_usage(context, answer), finish_reason=finish_reason
    )


def _usage(context: list[str], answer: str) -> TokenUsage:
    return TokenUsage.of(sum(len(text.split()) for text in context), len(answer.split()))


def _value_for(node: dict[str, Any], root: dict[str, Any], text: str) -> Any:
    """A deterministic JSON value satisfying the common JSON-schema shapes Pydantic emits."""
    if "$ref" in node:
        target: Any = root
        for part in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[part]
        return _value_for(target, root, text)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in node:
            variants = node[key]
            if any(variant.get("type") == "null" for variant in variants):
                return None
            return _value_for(variants[0], root, text)
    if "allOf" in node:
        return _value_for(node["allOf"][0], root, text)
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        required = set(node.get("required", ()))
        properties = node.get("properties", {})
        return {name: _value_for(sub, root, text) for name, sub in properties.items() if name in required}
    if kind == "array":
        count = int(node.get("minItems", 0))
        return [_value_for(node.get("items", {}), root, text) for _ in range(count)]
    if kind == "string":
        return text[: node["maxLength"]] if "maxLength" in node else text
    if kind in ("integer", "number"):
        if "minimum" in node:
            return node["minimum"]
        if "exclusiveMinimum" in node:
            return node["exclusiveMinimum"] + 1
        return 0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text  # no type constraint: any JSON value validates
