"""Answering one turn: an EXCLUSIVE template, else the LLM, else (if the LLM failed) a FALLBACK.

``Answerer.answer`` gets everything the pipeline gathered for the turn (``AnswerContext``) and
returns a ``Reply``; it writes nothing. Template choice and rendering live in ``respond.py``, the
prompt layout in ``prompt.py``.

- An EXCLUSIVE template attached to a matched rule or the current step answers without any LLM
  call.
- Otherwise the LLM answers from the agent's system prompt, the matched rules, the SUGGEST
  templates, the recalled memory, the current step and the recent history. An empty answer, or one
  that no store could keep (``TurnChecks.answer``), is an ``InvalidResponseError``: the model's
  fault, not the customer's.
- A ``ProviderError`` (after the provider's own retries) is answered by a FALLBACK template when
  one applies; without one it propagates (502/503/429) and the turn writes nothing.

**Streaming** (``on_delta``): the answer's text is handed to ``on_delta`` as it is produced. An
EXCLUSIVE or FALLBACK template is one piece; the LLM's answer arrives as the provider streams it,
trimmed exactly like the non-streaming answer (leading whitespace dropped, trailing whitespace
held back until more text follows), and each piece is checked for text no store can keep before it
is handed out. The pieces joined are always the recorded answer. When the provider fails after
some text was handed out, a FALLBACK template, if one applies, is the rest of the answer (after a
blank line), and the recorded answer is what the customer saw; without one the error propagates.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from focal.alignment.models import Agent
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.checks import TurnChecks
from focal.alignment.turn.prompt import build_prompt
from focal.alignment.turn.records import Reply, TurnDraft
from focal.alignment.turn.respond import TemplateCatalog, exclusive_answer, fallback_answer, suggested_texts
from focal.alignment.turn.retrieval import RuleMatch
from focal.alignment.turn.scenario import ScenarioOutcome
from focal.audit.models import TokenCounts
from focal.conversation.models import Session
from focal.errors import InvalidDataError, InvalidResponseError, ProviderError
from focal.logging import get_logger
from focal.memory.models import Episode
from focal.providers.llm.base import (
    LLMMessage,
    LLMProvider,
    LLMResponse,
    StreamDone,
    StreamEvent,
    TextDelta,
)
from focal.validation import check_text

DeltaSink = Callable[[str], Awaitable[None]]
"""Receives each piece of a streamed answer, in order (``TurnEngine.run(on_delta=...)``)."""

FALLBACK_AFTER_PARTIAL = "\n\n"
"""Between the text a failed stream already handed out and the FALLBACK template that completes it."""


@dataclass(frozen=True)
class AnswerContext:
    """What the pipeline gathered for one turn before answering it."""

    agent: Agent
    session: Session
    draft: TurnDraft
    matches: list[RuleMatch]
    outcome: ScenarioOutcome
    memories: list[tuple[Episode, float]]
    history: list[LLMMessage]


class Answerer:
    """Produces a turn's ``Reply``; one instance serves every turn of a ``TurnEngine``."""

    def __init__(self, config_store: ConfigStore, llm: LLMProvider, checks: TurnChecks) -> None:
        self._config_store = config_store
        self._llm = llm
        self._checks = checks

    async def answer(self, ctx: AnswerContext, on_delta: DeltaSink | None = None) -> Reply:
        agent, session, outcome = ctx.agent, ctx.session, ctx.outcome
        catalog = TemplateCatalog(self._config_store, agent.tenant_id, agent.id)
        exclusive = await exclusive_answer(catalog, ctx.matches, outcome.step, session.variables)
        if exclusive is not None:
            t = exclusive.template
            if on_delta is not None:
                await on_delta(exclusive.text)
            return Reply(exclusive.text, template_id=t.id, template_name=t.name, template_mode=t.mode.value)
        prompt = build_prompt(
            ctx.draft.message,
            rule_actions=[m.rule.action_text for m in ctx.matches if not m.rule.is_hard_constraint],
            hard_constraints=[m.rule.action_text for m in ctx.matches if m.rule.is_hard_constraint],
            suggestions=await suggested_texts(catalog, ctx.matches, outcome.step, session.variables),
            memories=[(episode.recorded_at, _memory_line(episode)) for episode, _ in ctx.memories],
            scenario_step=_step_line(outcome),
        )
        handed_out = _HandedOut(on_delta) if on_delta is not None else None
        try:
            return await self._generate(ctx, prompt, handed_out)
        except ProviderError as exc:
            fallback = await fallback_answer(catalog, ctx.matches, outcome.step, session.variables)
            get_logger("focal.turn").warning(
                "turn_provider_failed",
                tenant_id=str(agent.tenant_id),
                session_id=str(session.session_id),
                error=type(exc).__name__,
                message=str(exc),
                fallback_template_id=str(fallback.template.id) if fallback else None,
                streamed_chars=len(handed_out.text) if handed_out else 0,
            )
            if fallback is None:
                raise
            text = fallback.text
            if handed_out is not None:
                rest = FALLBACK_AFTER_PARTIAL + text if handed_out.text else text
                await handed_out.send_final(rest)
                text = handed_out.text
            t = fallback.template
            return Reply(
                text,
                template_id=t.id,
                template_name=t.name,
                template_mode=t.mode.value,
                provider_error=exc,
            )

    async def _generate(self, ctx: AnswerContext, prompt: str, handed_out: _HandedOut | None = None) -> Reply:
        """The LLM's answer to ``prompt``; an answer no store can keep is ``InvalidResponseError``."""
        agent = ctx.agent
        if handed_out is None:
            response = await self._llm.generate(
                prompt,
                system_prompt=agent.system_prompt,
                history=ctx.history,
                max_tokens=agent.max_tokens,
                temperature=agent.temperature,
            )
        else:
            events = self._llm.stream(
                prompt,
                system_prompt=agent.system_prompt,
                history=ctx.history,
                max_tokens=agent.max_tokens,
                temperature=agent.temperature,
            )
            response = await self._streamed(events, handed_out)
        answer = response.content.strip()
        if not answer:
            raise InvalidResponseError("the model returned an empty answer", provider=self._llm.model_id)
        try:
            self._checks.answer(ctx.draft, answer)
        except InvalidDataError as exc:  # the model's fault, not the customer's: 502 or FALLBACK
            raise InvalidResponseError(
                f"the model's answer cannot be stored: {exc}", provider=self._llm.model_id
            ) from exc
        return Reply(
            answer,
            usage=TokenCounts(**response.usage.model_dump()),
            llm_model=response.model,
            finish_reason=response.finish_reason,
        )

    async def _streamed(
        self, events: AsyncGenerator[StreamEvent, None], handed_out: _HandedOut
    ) -> LLMResponse:
        """Hand the stream's text out as it arrives; the provider's final response. The stream is
        read to its end (its provider logs the call as complete), or closed at once when this is
        cancelled (the vendor connection is closed)."""
        final: LLMResponse | None = None
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    await handed_out.send(event.text, self._llm.model_id)
                elif isinstance(event, StreamDone):
                    final = event.response
        finally:
            await events.aclose()
        if final is None:
            raise InvalidResponseError(
                "the stream ended without its final response", provider=self._llm.model_id
            )
        return final


class _HandedOut:
    """The text of a streamed answer handed to the sink so far, trimmed like the recorded answer:
    leading whitespace is dropped and trailing whitespace is held back until text follows it."""

    def __init__(self, sink: DeltaSink) -> None:
        self._sink = sink
        self.text = ""  # everything handed out, joined
        self._held = ""  # whitespace waiting for the text that would make it inner whitespace

    async def send(self, piece: str, provider: str) -> None:
        try:
            check_text(piece, "the model's answer")
        except InvalidDataError as exc:  # never hand out what the turn could not record
            raise InvalidResponseError(
                f"the model's answer cannot be stored: {exc}", provider=provider
            ) from exc
        if not self.text:
            piece = piece.lstrip()
        body = (self._held + piece).rstrip()
        self._held = (self._held + piece)[len(body) :]
        if body:
            await self._emit(body)

    async def send_final(self, piece: str) -> None:
        """A last piece (a FALLBACK completing a failed stream): held whitespace is dropped."""
        self._held = ""
        await self._emit(piece)

    async def _emit(self, piece: str) -> None:
        self.text += piece
        await self._sink(piece)


def _step_line(outcome: ScenarioOutcome) -> str | None:
    if outcome.scenario is None or outcome.step is None:
        return None
    description = f": {outcome.step.description}" if outcome.step.description else ""
    return f"{outcome.scenario.name} / {outcome.step.name}{description}"


def _memory_line(episode: Episode) -> str:
    speaker = "you answered" if episode.metadata.get("role") == "agent" else "the customer said"
    return f"{speaker}: {episode.content}"
