"""The tool loop of a turn: which tools the model is offered, how its calls run, what is kept.

**Offered.** A tool is offered when it is attached to a matched rule (``attached_tool_ids``) or to
the step the turn answers from (``ScenarioStep.tool_ids``), AND is activated and enabled for the
agent, AND has a live definition in the tenant. Names are looked up in the turn's own tenant only,
so another tenant's tool of the same name is never offered. A turn that names no tool costs no
query.

**Loop** (``converse``). The model is asked with the tools; when it answers with calls, they run
(below) and the exchange is appended as a ``ToolRound``; then it is asked again, at most
``max_rounds`` times. If it still asks for calls after that, one last request with
``tool_choice="none"`` makes it answer in text. Token usage is summed over every request, and the
answer is the text of every request, joined (what a model says before its calls is part of what
the customer is told; a streamed answer hands each request's text out as it comes). When a
hard constraint makes the turn regenerate its answer, the model is asked again with the rounds
already made and ``tool_choice="none"``: a regeneration never calls a tool twice.

**Calls** (``ToolRunner``). The calls of one round run concurrently, each bounded by its tool's
own timeout (the executor's). A call is refused without being sent (status ``invalid``, the
reason returned to the model) when its tool was not offered, its arguments do not satisfy the
tool's JSON Schema, or the round asked for more than ``max_calls_per_round`` calls. A tool that
fails (error, timeout, a bug in the executor) is an outcome the model is told about: a tool
failure never fails the turn. Every call, sent or not, goes into the turn's ``ToolLedger``: one
entry of ``TurnRecord.tools_executed`` (name, arguments, status, latency, size-capped result) and
one ``tool_called`` audit event.

Calls are side effects on the outside world made *before* the turn is written: a turn that then
fails to persist (a concurrent turn won the session, a store is down) has still made them. The
ledger is lost with the turn, but every call is logged by the executor (``tool_call``: tool,
host, status, latency), and the failure of the turn is logged too.

**Runs of one message** (``ToolLedger.memo``). A turn run again for the same message
(``ordering.py``, ``enqueue``) does not send again a call an earlier run of it made: the same
tool with the same arguments gets the earlier outcome (``focal.tools.memo``), and its entry says
``reused: true`` (its latency is that of the call when it was made). A call with other arguments
is sent. The calls earlier runs made that the last run did not ask for again are recorded after
its own, marked ``not_repeated: true`` (``ToolRunner.record_not_repeated``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from pydantic import JsonValue

from focal.alignment.models import ScenarioStep, ToolDefinition
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.retrieval import RuleMatch
from focal.alignment.turn.streaming import HandedOut, joined_segments, stream_response
from focal.errors import ConfigurationError
from focal.logging import get_logger
from focal.models import utc_now
from focal.providers.llm.base import LLMMessage, LLMProvider, LLMResponse, TokenUsage
from focal.providers.llm.types import ToolCall, ToolResult, ToolRound, ToolSpec
from focal.settings import ToolsSettings
from focal.tools.executor import ToolExecutor
from focal.tools.memo import MadeCall, MemoRun, ToolMemo
from focal.tools.models import ToolOutcome, ToolStatus
from focal.tools.record import capped, storable
from focal.tools.schema import argument_errors

__all__ = ["ToolExecution", "ToolLedger", "ToolRunner", "converse", "offered_tools"]

_log = get_logger("focal.turn")

CallSource = Literal["model", "resolver"]


@dataclass(frozen=True)
class ToolExecution:
    """One call of a turn, as the turn keeps it (values already storable and size-capped)."""

    call_id: str
    name: str
    source: CallSource
    round: int  # the model's round (1..); 0 for a variable resolver
    arguments: JsonValue
    status: ToolStatus
    latency_ms: float
    http_status: int | None
    error: str | None
    result: JsonValue
    reused: bool = False  # made by an earlier run of the same message (focal.tools.memo)
    # made by an earlier run of the same message, which the run that answered did not ask for
    not_repeated: bool = False

    def record(self) -> dict[str, JsonValue]:
        """The entry of ``TurnRecord.tools_executed``."""
        return {
            "call_id": self.call_id,
            "name": self.name,
            "source": self.source,
            "round": self.round,
            "arguments": self.arguments,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "http_status": self.http_status,
            "error": self.error,
            "result": self.result,
            "reused": self.reused,
            "not_repeated": self.not_repeated,
        }

    def event(self) -> dict[str, JsonValue]:
        """The data of its ``tool_called`` audit event (the arguments and result are in the record)."""
        return {
            "call_id": self.call_id,
            "name": self.name,
            "source": self.source,
            "round": self.round,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "http_status": self.http_status,
            "error": self.error,
            "reused": self.reused,
            "not_repeated": self.not_repeated,
        }


@dataclass
class ToolLedger:
    """Every tool call of one turn: resolvers first, then each round's calls in the model's order."""

    calls: list[ToolExecution] = field(default_factory=list)
    # The model's rounds of this turn: a regenerated answer (constraints.py) is asked again with
    # them, and no new call, so regenerating never repeats a side effect.
    rounds: list[ToolRound] = field(default_factory=list)
    # The calls earlier runs of the same message made (ordering.py gives every run of a message
    # a view of one memo); by default a memo of this turn alone.
    memo: MemoRun = field(default_factory=lambda: ToolMemo().run())
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"


async def offered_tools(
    config_store: ConfigStore,
    tenant_id: UUID,
    agent_id: UUID,
    matches: Sequence[RuleMatch],
    step: ScenarioStep | None,
) -> list[ToolDefinition]:
    """The tools this turn offers the model (see the module docstring), in attachment order."""
    wanted = list(dict.fromkeys([t for m in matches for t in m.rule.attached_tool_ids]))
    if step is not None:
        wanted = list(dict.fromkeys([*wanted, *step.tool_ids]))
    if not wanted:
        return []
    return await usable_tools(config_store, tenant_id, agent_id, wanted)


async def usable_tools(
    config_store: ConfigStore, tenant_id: UUID, agent_id: UUID, names: Sequence[str]
) -> list[ToolDefinition]:
    """The tools of ``names`` that are activated and enabled for the agent and defined (live) in
    the tenant, in the order of ``names``."""
    activations = await config_store.get_tool_activations(tenant_id, agent_id)
    enabled = {a.tool_id for a in activations if a.enabled}
    usable = [name for name in names if name in enabled]
    if not usable:
        return []
    by_name = {d.name: d for d in await config_store.get_tool_definitions(tenant_id, names=usable)}
    return [by_name[name] for name in usable if name in by_name]


def tool_spec(definition: ToolDefinition) -> ToolSpec:
    return ToolSpec(
        name=definition.name, description=definition.description, parameters=definition.parameters
    )


class ToolRunner:
    """Runs the calls of a turn through the executor and records them in the turn's ledger."""

    def __init__(self, executor: ToolExecutor | None, settings: ToolsSettings) -> None:
        self._executor = executor
        self.settings = settings

    async def call(
        self,
        tool: ToolDefinition,
        call_id: str,
        arguments: Any,
        *,
        source: CallSource,
        round_number: int,
        ledger: ToolLedger,
    ) -> MadeCall:
        """Validate and run one call (or reuse an earlier run's: ``ledger.memo``); the outcome is
        recorded in ``ledger`` and returned."""
        errors = argument_errors(tool.parameters, arguments)
        if errors:
            message = "invalid arguments: " + "; ".join(errors)
            made = MadeCall(ToolOutcome(status="invalid", content=message, error=message), utc_now())
        else:
            made = await ledger.memo.call(
                tool.name,
                arguments,
                lambda: self._execute(tool, arguments),
                details=(call_id, source, round_number),
            )
        self._record(
            ledger, call_id, tool.name, source, round_number, arguments, made.outcome, reused=made.reused
        )
        return made

    def record_not_repeated(self, ledger: ToolLedger) -> None:
        """Add to ``ledger`` the calls earlier runs of the message sent and this run did not make
        (``not_repeated``): they happened, so the turn record lists them."""
        for made in ledger.memo.not_repeated():
            assert made.sent is not None  # kept only by MemoRun.call, with what it was sent with
            call_id, source, round_number = made.sent.details
            sent, outcome = made.sent, made.outcome
            self._record(
                ledger, call_id, sent.tool, source, round_number, sent.arguments, outcome, not_repeated=True
            )

    def refuse(self, ledger: ToolLedger, call: ToolCall, round_number: int, message: str) -> ToolResult:
        """A model's call that is not sent at all (unknown tool, too many calls)."""
        outcome = ToolOutcome(status="invalid", content=message, error=message)
        self._record(ledger, call.id, call.name, "model", round_number, call.arguments, outcome)
        return ToolResult(call_id=call.id, name=call.name, content=message, is_error=True)

    async def _execute(self, tool: ToolDefinition, arguments: Mapping[str, Any]) -> ToolOutcome:
        if self._executor is None:
            raise ConfigurationError("this TurnEngine has no tool executor: build it with tool_executor=...")
        secret = tool.secret.get_secret_value() if tool.secret is not None else None
        try:
            return await self._executor.execute(tool.name, tool.http, arguments, secret=secret)
        except Exception as exc:  # a failing tool never fails the turn; the bug is logged
            _log.exception("tool_executor_failed", tool=tool.name, error=type(exc).__name__)
            message = f"the call failed inside Focal ({type(exc).__name__})"
            return ToolOutcome(status="error", content=message, error=message)

    def _record(
        self,
        ledger: ToolLedger,
        call_id: str,
        name: str,
        source: CallSource,
        round_number: int,
        arguments: Any,
        outcome: ToolOutcome,
        *,
        reused: bool = False,
        not_repeated: bool = False,
    ) -> None:
        cap = self.settings.record_result_bytes
        ledger.calls.append(
            ToolExecution(
                call_id=storable(call_id),
                name=storable(name),
                source=source,
                round=round_number,
                arguments=capped(arguments, cap),
                status=outcome.status,
                latency_ms=outcome.latency_ms,
                http_status=outcome.http_status,
                error=storable(outcome.error),
                result=capped(outcome.result, cap),
                reused=reused,
                not_repeated=not_repeated,
            )
        )

    async def run_round(
        self,
        calls: Sequence[ToolCall],
        offered: Mapping[str, ToolDefinition],
        *,
        round_number: int,
        ledger: ToolLedger,
    ) -> tuple[ToolResult, ...]:
        """Run one round's calls concurrently; one result per call, in the calls' order."""
        limit = self.settings.max_calls_per_round
        # One per call, so the turn's ledger keeps the calls' order; all on the turn's memo.
        own = [ToolLedger(memo=ledger.memo) for _ in calls]

        async def one(index: int, call: ToolCall) -> ToolResult:
            tool = offered.get(call.name)
            if tool is None:
                return self.refuse(own[index], call, round_number, f"tool {call.name!r} is not available")
            if index >= limit:
                message = f"more than {limit} calls in one round: this one was not made"
                return self.refuse(own[index], call, round_number, message)
            made = await self.call(
                tool, call.id, call.arguments, source="model", round_number=round_number, ledger=own[index]
            )
            outcome = made.outcome
            return ToolResult(
                call_id=call.id, name=call.name, content=outcome.content, is_error=outcome.status != "ok"
            )

        results = tuple(await asyncio.gather(*(one(i, call) for i, call in enumerate(calls))))
        for per_call in own:
            ledger.calls.extend(per_call.calls)
        return results


async def converse(
    llm: LLMProvider,
    runner: ToolRunner,
    prompt: str,
    tools: Sequence[ToolDefinition],
    ledger: ToolLedger,
    *,
    system_prompt: str | None,
    history: Sequence[LLMMessage],
    max_tokens: int,
    temperature: float,
    handed_out: HandedOut | None = None,
) -> tuple[LLMResponse, TokenUsage, str]:
    """The model's final response after at most ``max_rounds`` tool rounds, the tokens of every
    request, and the answer's text: the texts of every request, joined (``joined_segments``; a
    model may say something before its calls). Without tools: one plain request. With
    ``handed_out`` every request is streamed through it."""
    common: dict[str, Any] = {
        "system_prompt": system_prompt,
        "history": history,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    texts: list[str] = []
    usage = TokenUsage()

    async def ask(**options: Any) -> LLMResponse:
        nonlocal usage
        if handed_out is None:
            response = await llm.generate(prompt, **common, **options)
        else:
            response = await stream_response(
                llm.stream(prompt, **common, **options), handed_out, llm.model_id
            )
        usage += response.usage
        texts.append(response.content)
        return response

    if not tools:
        response = await ask()
        return response, usage, joined_segments(texts)
    specs = [tool_spec(tool) for tool in tools]
    if ledger.rounds:  # a regeneration: answer from the calls already made, make no new one
        response = await ask(tools=specs, tool_rounds=list(ledger.rounds), tool_choice="none")
        return response, usage, joined_segments(texts)
    offered = {tool.name: tool for tool in tools}
    for round_number in range(1, runner.settings.max_rounds + 1):
        response = await ask(tools=specs, tool_rounds=list(ledger.rounds), tool_choice="auto")
        if not response.tool_calls:
            return response, usage, joined_segments(texts)
        results = await runner.run_round(
            response.tool_calls, offered, round_number=round_number, ledger=ledger
        )
        ledger.rounds.append(ToolRound(text=response.content, calls=response.tool_calls, results=results))
    response = await ask(tools=specs, tool_rounds=list(ledger.rounds), tool_choice="none")
    return response, usage, joined_segments(texts)
