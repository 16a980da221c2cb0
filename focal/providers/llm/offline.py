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

``generate_structured`` fills the schema from its JSON schema: string fields get the composed
answer, numbers their minimum (or 0), booleans False, enums and literals their first value,
optional fields None, lists their minimum length of items; fields with defaults keep them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from focal.errors import InvalidResponseError
from focal.providers.llm.base import (
    FinishReason,
    LLMMessage,
    LLMProvider,
    LLMResponse,
    ModelT,
    TokenUsage,
    validate_generation_args,
    validate_schema,
)

MODEL_ID = "offline"
RULES_HEADER = "Rules to follow:"
SUGGESTIONS_HEADER = "Suggested responses:"
CUSTOMER_PREFIX = "Customer:"


class OfflineLLMProvider(LLMProvider):
    """Deterministic answers composed from the prompt's rules and templates; see the module doc."""

    @property
    def model_id(self) -> str:
        return MODEL_ID

    def __repr__(self) -> str:
        return "OfflineLLMProvider()"

    async def generate(
        self,
        prompt: str,
        *,
        system_prompt: str | None = None,
        history: Sequence[LLMMessage] | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        stop_sequences: Sequence[str] | None = None,
    ) -> LLMResponse:
        validate_generation_args(
            prompt,
            system_prompt=system_prompt,
            history=history,
            max_tokens=max_tokens,
            temperature=temperature,
            stop_sequences=stop_sequences,
        )
        context = [system_prompt or "", *(m.content for m in history or ()), prompt]
        return _respond(compose_answer(prompt), context, max_tokens, stop_sequences)

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
