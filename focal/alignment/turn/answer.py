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

Hard constraints (``constraints.py``) wrap all of it: every applicable constraint is in the
prompt's "Hard constraints" section, and every candidate answer (EXCLUSIVE template, LLM answer,
FALLBACK template) is checked; a violating one is generated again, replaced by a compliant
FALLBACK template, or by the safe message. ``_generate`` itself only generates.

**Streaming** (``on_delta``): the answer's text is handed to ``on_delta`` as it is produced
(``streaming.py``: the pieces joined are always the recorded answer). Live, as the provider streams
it, when no check could refuse it afterwards; when a hard constraint of the turn has checks
(patterns, or a judge), the answer is generated and checked first and handed out in one piece: a
violating answer is never shown, not even in part. A template is one piece. When the provider
fails after some text was handed out, a FALLBACK template, if one applies, is the rest of the
answer (after a blank line) and the recorded answer is what the customer saw; without one the
error propagates and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from focal.alignment.models import Agent, Rule
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.checks import TurnChecks
from focal.alignment.turn.constraints import (
    ConstraintEnforcer,
    applicable_constraints,
    last_resort,
    regenerate_until_compliant,
)
from focal.alignment.turn.models import TurnConfig
from focal.alignment.turn.prompt import build_prompt
from focal.alignment.turn.records import Reply, TurnDraft
from focal.alignment.turn.respond import (
    TemplateAnswer,
    TemplateCatalog,
    exclusive_answer,
    fallback_answer,
    suggested_texts,
)
from focal.alignment.turn.retrieval import RuleMatch
from focal.alignment.turn.scenario import ScenarioOutcome
from focal.alignment.turn.streaming import DeltaSink, HandedOut
from focal.alignment.turn.tool_loop import ToolLedger, ToolRunner, converse, offered_tools
from focal.audit.models import TokenCounts
from focal.conversation.models import Session
from focal.errors import ConfigurationError, InvalidDataError, InvalidResponseError, ProviderError
from focal.logging import get_logger
from focal.memory.models import Episode
from focal.providers.llm.base import LLMMessage, LLMProvider
from focal.settings import ToolsSettings


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
    # The always-on hard constraints of the turn's scope (ConfigStore.get_hard_constraints).
    constraints: list[Rule] = field(default_factory=list)
    # What the tool loop calls go into (resolver calls made before the answer are there already).
    ledger: ToolLedger = field(default_factory=ToolLedger)
    # The prompt's "Known values:" lines, (name, value text): see variables.TurnVariables.
    known_values: list[tuple[str, str]] = field(default_factory=list)


class Answerer:
    """Produces a turn's ``Reply``; one instance serves every turn of a ``TurnEngine``."""

    def __init__(
        self,
        config_store: ConfigStore,
        llm: LLMProvider,
        checks: TurnChecks,
        config: TurnConfig | None = None,
        tools: ToolRunner | None = None,
    ) -> None:
        self._config_store = config_store
        self._llm = llm
        self._checks = checks
        self._config = config or TurnConfig()
        self._tools = tools

    async def answer(self, ctx: AnswerContext, on_delta: DeltaSink | None = None) -> Reply:
        """The turn's reply; with ``on_delta``, its text handed out as well (module docstring)."""
        constraints = applicable_constraints(ctx.constraints, ctx.matches)
        enforcer = ConstraintEnforcer(self._llm, self._config, constraints, ctx.draft.message)
        if on_delta is None:
            return await self._answer(ctx, enforcer, None)
        handed_out = HandedOut(on_delta)
        live = not enforcer.checks_answers()
        reply = await self._answer(ctx, enforcer, handed_out if live else None)
        if handed_out.text != reply.text:  # a template, a buffered answer, or a FALLBACK completing
            await handed_out.complete(reply.text)  # a stream that broke off
            reply.text = handed_out.text
        return reply

    async def _answer(
        self, ctx: AnswerContext, enforcer: ConstraintEnforcer, handed_out: HandedOut | None
    ) -> Reply:
        agent, session, outcome = ctx.agent, ctx.session, ctx.outcome
        catalog = TemplateCatalog(self._config_store, agent.tenant_id, agent.id)
        constraints = enforcer.constraints

        async def fallback() -> TemplateAnswer | None:
            return await fallback_answer(catalog, ctx.matches, outcome.step, session.variables)

        exclusive = await exclusive_answer(catalog, ctx.matches, outcome.step, session.variables)
        if exclusive is not None:
            t = exclusive.template
            reply = Reply(exclusive.text, template_id=t.id, template_name=t.name, template_mode=t.mode.value)
            if not await enforcer.check(reply.text, source="template", judge=False):
                return enforcer.accept(reply, "passed")
            return await last_resort(enforcer, fallback, None)
        suggestions = await suggested_texts(catalog, ctx.matches, outcome.step, session.variables)

        def prompt(corrections: list[str]) -> str:
            return build_prompt(
                ctx.draft.message,
                rule_actions=[m.rule.action_text for m in ctx.matches if not m.rule.is_hard_constraint],
                hard_constraints=[rule.action_text for rule in constraints],
                suggestions=suggestions,
                memories=[(episode.recorded_at, _memory_line(episode)) for episode, _ in ctx.memories],
                scenario_step=_step_line(outcome),
                corrections=corrections,
                known_values=ctx.known_values,
            )

        async def regenerate(corrections: list[str]) -> Reply:
            return await self._generate(ctx, prompt(corrections), handed_out)

        try:
            first = await self._generate(ctx, prompt([]), handed_out)
        except ProviderError as exc:
            found = await fallback()
            self._log_provider_failure(ctx, exc, found)
            if found is None:
                raise
            return await last_resort(enforcer, fallback, exc)
        accepted, error = await regenerate_until_compliant(enforcer, first, regenerate)
        if accepted is not None:
            return accepted
        if error is not None:
            self._log_provider_failure(ctx, error, None)
        return await last_resort(enforcer, fallback, error)

    @staticmethod
    def _log_provider_failure(
        ctx: AnswerContext, exc: ProviderError, fallback: TemplateAnswer | None
    ) -> None:
        get_logger("focal.turn").warning(
            "turn_provider_failed",
            tenant_id=str(ctx.agent.tenant_id),
            session_id=str(ctx.session.session_id),
            error=type(exc).__name__,
            message=str(exc),
            fallback_template_id=str(fallback.template.id) if fallback else None,
        )

    async def _generate(self, ctx: AnswerContext, prompt: str, handed_out: HandedOut | None = None) -> Reply:
        """The LLM's answer to ``prompt``, after the tool loop when tools are offered
        (``tool_loop.py``: its calls go into ``ctx.ledger``); an answer no store can keep is
        ``InvalidResponseError``."""
        agent = ctx.agent
        tools = await offered_tools(
            self._config_store, agent.tenant_id, agent.id, ctx.matches, ctx.outcome.step
        )
        if tools and self._tools is None:
            raise ConfigurationError("tools are offered but the Answerer has no ToolRunner")
        response, usage, text = await converse(
            self._llm,
            self._tools or _NO_TOOLS,
            prompt,
            tools,
            ctx.ledger,
            system_prompt=agent.system_prompt,
            history=ctx.history,
            max_tokens=agent.max_tokens,
            temperature=agent.temperature,
            handed_out=handed_out,
        )
        answer = text
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
            usage=TokenCounts(**usage.model_dump()),
            llm_model=response.model,
            finish_reason=response.finish_reason,
        )


_NO_TOOLS = ToolRunner(None, ToolsSettings())  # for turns that offer no tool: never calls anything


def _step_line(outcome: ScenarioOutcome) -> str | None:
    if outcome.scenario is None or outcome.step is None:
        return None
    description = f": {outcome.step.description}" if outcome.step.description else ""
    return f"{outcome.scenario.name} / {outcome.step.name}{description}"


def _memory_line(episode: Episode) -> str:
    speaker = "you answered" if episode.metadata.get("role") == "agent" else "the customer said"
    return f"{speaker}: {episode.content}"
