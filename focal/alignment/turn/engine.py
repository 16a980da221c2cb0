"""``TurnEngine``: one customer message in, one answer out, everything remembered.

The pipeline depends only on the store and provider interfaces, so it runs the same on the
in-memory reference stores (unit tests, ``focal serve --memory``) and on PostgreSQL + Redis.

1. Load the agent (unknown: ``NotFoundError``; disabled: ``ConflictError``) and the session.
   A given ``session_id`` must exist in this tenant for this agent (else ``NotFoundError``: a
   foreign session looks absent), must not be CLOSED (``ConflictError``: the caller asked for that
   session explicitly, so quietly opening another would hide the problem; omit ``session_id`` to
   start afresh) and must belong to the same channel identity (``InvalidDataError``). Without an id,
   ``get_by_channel`` gives the identity's latest session, reused only when it is this agent's and
   not CLOSED; otherwise a new session is opened. All of this is read-only, so a refused turn
   writes nothing. The message is embedded once, concurrently with these reads; then the message
   goes through the checks of the stores that will keep it (``checks.py``), before any LLM call.
   Every other read of the turn starts at the same time, or as soon as what it needs is known
   (``reads.py``): the customer's profile (``ProfileStore.get_by_channel_identity``) then their
   memory, the variable definitions, the hard constraints, the scenario definitions and the history.
2. The scenario move (``scenario.py``) then rule retrieval for the scenario and step the turn now
   answers from (``retrieval.py``). The move comes before retrieval so that the step a message
   leads to supplies the rules and templates of the answer (the step's question is what the
   customer should see next).
   The scenario move first takes the fields the current step collects from the message
   (``variables.py``) and is gated on them. Of the always-on hard constraints
   (``ConfigStore.get_hard_constraints``) the turn keeps those of the scope it answers from, and the
   optional relevance check (``relevance.py``) filters the rule candidates.
3. Resolve the variables the answer needs with their resolver tools (``variables.py``), then
   answer (``answer.py``): EXCLUSIVE template, else LLM (with the tool loop of ``tool_loop.py``
   when tools are offered), else FALLBACK on a provider failure; the answer is checked against
   the hard constraints (``constraints.py``).
   An LLM answer that no store could keep is a provider failure too (``InvalidResponseError``).
   Every candidate answer is checked against the hard constraints (``constraints.py``).
4. Embed the answer; build every record of the turn (session, turn record, events, episodes) and
   run every store's checks on them (``checks.py``); create the customer's profile if they are new
   (``ProfileStore.get_or_create``, race-safe); then persist (``persist.py``): the session under
   its version check, the turn record, then events and episodes. A turn refused before this point
   (bad input, a record a store would refuse, provider error without FALLBACK) has written
   nothing at all, not even a profile; ``persist.py`` says what an infrastructure failure during
   the writes leaves behind.

Two concurrent turns without a ``session_id`` for a brand-new channel identity each open their own
session (both saves are first saves); turns naming one session serialise through its version.
With ``FOCAL_TURN__CONCURRENCY=enqueue`` turns of one conversation run one after the other instead
(``ordering.py``).

Session control (``control.py``, ``manual.py``, ``handoff.py``): a MANUAL session's message is
recorded without an answer (``record_manual_turn``, right after the message checks); a matched rule
with ``requests_handoff`` switches the session to MANUAL with the turn and, once it is persisted,
emits ``session.handoff_requested`` to the event sink. Operator replies are turns with an empty
``user_message``; the history skips empty sides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID, uuid4

from focal.alignment.models import Rule
from focal.alignment.stores.config_checks import in_scopes
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.answer import AnswerContext, Answerer
from focal.alignment.turn.checks import TurnChecks
from focal.alignment.turn.handoff import (
    EventSink,
    hand_over,
    handoff_rules,
    notify_handoff,
    with_handoff_event,
)
from focal.alignment.turn.manual import record_manual_turn
from focal.alignment.turn.models import StepTimer, TurnConfig, TurnRequest, TurnResult
from focal.alignment.turn.ordering import TurnOrdering
from focal.alignment.turn.persist import TurnStores, TurnWrites, persist_turn
from focal.alignment.turn.reads import ReadStores, TurnReads
from focal.alignment.turn.records import (
    Answered,
    TurnDraft,
    build_writes,
    matched_rules,
    scenario_position,
)
from focal.alignment.turn.relevance import RelevanceCheck
from focal.alignment.turn.retrieval import (
    RuleMatch,
    admitted_scopes,
    record_fires,
    retrieve_rules,
)
from focal.alignment.turn.scenario import ScenarioOutcome, advance_scenario
from focal.alignment.turn.streaming import DeltaSink
from focal.alignment.turn.tool_loop import ToolLedger, ToolRunner
from focal.alignment.turn.variables import StepCapture, TurnVariables, resolve_needed
from focal.audit.models import TokenCounts
from focal.audit.stores.store import AuditStore
from focal.conversation.locks import ConversationLocks
from focal.conversation.models import Session, SessionMode, SessionStatus
from focal.conversation.stores.store import SessionStore
from focal.memory.models import Episode
from focal.memory.stores.store import MemoryStore
from focal.models import utc_now
from focal.profile.models import CustomerProfile
from focal.profile.stores.store import ProfileStore
from focal.providers.embedding.base import EmbeddingProvider
from focal.providers.llm.base import LLMProvider, TokenUsage
from focal.settings import ToolsSettings
from focal.tools.executor import ToolExecutor
from focal.tools.memo import ToolMemo

if TYPE_CHECKING:
    from focal.bootstrap import FocalServices

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


async def _all_of(first: Awaitable[A], second: Awaitable[B], third: Awaitable[C]) -> tuple[A, B, C]:
    """Await all three concurrently; then raise the first failure in argument order.

    Unlike a plain ``gather``, no sibling is left running (or failing unobserved) after an error,
    and which error wins does not depend on timing: an unknown agent is reported before a foreign
    session, whatever answered first.
    """
    results = await asyncio.gather(first, second, third, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(A, results[0]), cast(B, results[1]), cast(C, results[2])


def _plus(counts: TokenCounts, usage: TokenUsage) -> TokenCounts:
    """The reply's tokens plus those of the turn's other model requests (variable extraction)."""
    if not usage.total_tokens:
        return counts
    return TokenCounts(
        prompt_tokens=counts.prompt_tokens + usage.prompt_tokens,
        completion_tokens=counts.completion_tokens + usage.completion_tokens,
        total_tokens=counts.total_tokens + usage.total_tokens,
    )


class TurnEngine:
    """Runs turns; holds no per-conversation state, so one instance serves every request."""

    def __init__(
        self,
        *,
        config_store: ConfigStore,
        session_store: SessionStore,
        memory_store: MemoryStore,
        audit_store: AuditStore,
        profile_store: ProfileStore,
        llm_provider: LLMProvider,
        embedding_provider: EmbeddingProvider,
        config: TurnConfig | None = None,
        tool_executor: ToolExecutor | None = None,
        tools: ToolsSettings | None = None,
        conversation_locks: ConversationLocks | None = None,
        event_sink: EventSink | None = None,
    ) -> None:
        """``tool_executor`` runs the tenants' tools (``focal.bootstrap`` builds it); an engine
        without one refuses a turn that would call a tool (``ConfigurationError``)."""
        self._config_store = config_store
        self._session_store = session_store
        self._memory_store = memory_store
        self._audit_store = audit_store
        self._profile_store = profile_store
        self._llm = llm_provider
        self._embedder = embedding_provider
        self._config = config or TurnConfig()
        self._stores = TurnStores(session_store, audit_store, memory_store, profile_store)
        self._checks = TurnChecks(memory_dimensions=memory_store.embedding_dimensions)
        self._tool_runner = ToolRunner(tool_executor, tools or ToolsSettings())
        self._answerer = Answerer(config_store, llm_provider, self._checks, self._config, self._tool_runner)
        self._ordering = TurnOrdering(conversation_locks, self._config)
        self._read_stores = ReadStores(
            config_store, session_store, profile_store, memory_store, audit_store, embedding_provider
        )
        self._event_sink = event_sink

    @classmethod
    def from_services(cls, services: FocalServices, config: TurnConfig | None = None) -> TurnEngine:
        return cls(
            config_store=services.config_store,
            session_store=services.session_store,
            memory_store=services.memory_store,
            audit_store=services.audit_store,
            profile_store=services.profile_store,
            llm_provider=services.llm_provider,
            embedding_provider=services.embedding_provider,
            config=config,
            tool_executor=services.tool_executor,
            tools=services.settings.tools,
            conversation_locks=services.conversation_locks,
            event_sink=services.webhooks,
        )

    async def run(
        self,
        request: TurnRequest,
        *,
        on_delta: DeltaSink | None = None,
        on_writing: Callable[[], None] | None = None,
    ) -> TurnResult:
        """One turn, under the configured concurrency policy (``ordering.py``).

        With ``on_delta`` the answer's text is handed out as it is produced (see ``answer.py``);
        the turn is written only once the answer is complete, and a caller that is cancelled
        before then (a client that went away) leaves nothing behind. A run whose text was handed
        out is never run again by the ``enqueue`` policy (the client would get it twice).
        ``on_writing`` is called as a run's writes begin: from then on cancelling the turn no
        longer stops it being written, so a caller that wants its outcome waits for it instead."""
        if on_delta is None:
            return await self._ordering.run(
                request, lambda again, memo: self._run_once(again, memo, on_writing=on_writing)
            )
        sink, handed_out = on_delta, False

        async def tracked(text: str) -> None:
            nonlocal handed_out
            handed_out = True
            await sink(text)

        return await self._ordering.run(
            request,
            lambda again, memo: self._run_once(again, memo, tracked, on_writing=on_writing),
            may_run_again=lambda: not handed_out,
        )

    async def _run_once(
        self,
        request: TurnRequest,
        memo: ToolMemo,
        on_delta: DeltaSink | None = None,
        *,
        on_writing: Callable[[], None] | None = None,
    ) -> TurnResult:
        """One run of the turn; ``memo``: the tool calls earlier runs of this message made."""
        started = time.perf_counter()
        timer = StepTimer()
        message = request.normalised_message()
        embedding_model = self._embedder.model_id
        self._checks.identity(request.channel, request.user_channel_id)

        reads = TurnReads(self._read_stores, request, message, self._config, timer)
        async with reads:  # every read still running when this block is left is cancelled
            with timer.measure("load_and_embed"):
                # Reads only (and the embedding, which writes nothing): a refused turn leaves no trace.
                agent, found, message_embedding = await reads.loaded()
            # ``before`` is kept as read (or as opened): persist saves it back if the turn cannot be
            # recorded. The turn works on a copy (a JSON round trip: ~10x cheaper than a deep copy).
            before = found or Session(
                tenant_id=request.tenant_id,
                agent_id=agent.id,
                channel=request.channel,
                user_channel_id=request.user_channel_id,
                config_version=agent.current_version,
            )
            session = Session.model_validate_json(before.model_dump_json())
            turn_number = session.turn_count + 1
            draft = TurnDraft(
                tenant_id=request.tenant_id,
                agent_id=agent.id,
                session_id=session.session_id,
                turn_id=uuid4(),
                turn_number=turn_number,
                message=message,
                message_embedding=message_embedding,
                embedding_model=embedding_model,
            )
            self._checks.message(draft)  # before the LLM is paid for a turn no store would keep
            if before.mode is SessionMode.MANUAL:  # a person answers: record the message, no LLM
                if on_writing is not None:  # nothing to wait for: the message is being recorded
                    on_writing()
                return await record_manual_turn(
                    stores=self._stores,
                    profiles=self._profile_store,
                    checks=self._checks,
                    request=request,
                    draft=draft,
                    before=before,
                    session=session,
                    timer=timer,
                    started=started,
                )

            async def customer_then_memory() -> tuple[CustomerProfile | None, list[tuple[Episode, float]]]:
                return await reads.profile(), await reads.memories()

            relevance = RelevanceCheck(self._llm, message) if self._config.relevance_check else None
            turn_variables = TurnVariables([], session, utc_now())  # definitions: read with the scenario

            async def scenario_then_rules() -> tuple[ScenarioOutcome, list[RuleMatch], list[Rule]]:
                with timer.measure("scenario"):
                    turn_variables.definitions = await reads.variables()
                    turn_variables.by_name = {v.name: v for v in turn_variables.definitions}
                    outcome = await advance_scenario(
                        self._config_store,
                        session,
                        message_embedding,
                        embedding_model=embedding_model,
                        turn_number=turn_number,
                        config=self._config,
                        capture=StepCapture(turn_variables, message, self._llm),
                        definitions=await reads.scenario_definitions(),
                    )
                scenario_id = outcome.scenario.id if outcome.scenario else None
                step_id = outcome.step.id if outcome.step else None
                scopes = admitted_scopes(scenario_id, step_id)
                with timer.measure("retrieve_rules"):
                    matches = await retrieve_rules(
                        self._config_store,
                        session,
                        message_embedding,
                        embedding_model=embedding_model,
                        scenario_id=scenario_id,
                        step_id=step_id,
                        turn_number=turn_number,
                        config=self._config,
                        relevance=relevance.keep if relevance is not None else None,
                        global_candidates=await reads.global_rule_candidates(),
                    )
                    # Read for every scope beside the others; kept: those the turn answers from.
                    constraints = [rule for rule in await reads.hard_constraints() if in_scopes(rule, scopes)]
                return outcome, matches, constraints

            (profile, memories), (outcome, matches, constraints), history = await _all_of(
                customer_then_memory(), scenario_then_rules(), reads.history()
            )
        record_fires(session, matches, turn_number)

        ledger = ToolLedger(memo=memo.run())  # an earlier run's call is not made again
        with timer.measure("resolve_variables"):
            await resolve_needed(
                turn_variables, self._tool_runner, self._config_store, agent, matches, outcome.step, ledger
            )
        with timer.measure("respond"):
            reply = await self._answerer.answer(
                AnswerContext(
                    agent,
                    session,
                    draft,
                    matches,
                    outcome,
                    memories,
                    history,
                    constraints,
                    ledger=ledger,
                    known_values=turn_variables.known_values(),
                ),
                on_delta,
            )
        if relevance is not None and relevance.outcome is not None:
            reply.usage += relevance.outcome.usage  # the relevance check's call is the turn's too
        reply.usage = _plus(reply.usage, turn_variables.usage)
        with timer.measure("embed_answer"):
            (answer_embedding,) = await self._embedder.embed_batch([reply.text])

        session.turn_count = turn_number
        session.status = SessionStatus.ACTIVE
        handoff = handoff_rules(matches)
        hand_over(session, handoff)
        self._tool_runner.record_not_repeated(ledger)  # calls of lost runs this one did not make
        answered = Answered(
            reply,
            answer_embedding,
            matches,
            outcome,
            memories,
            new_session=found is None,
            relevance=relevance.outcome if relevance is not None else None,
            tool_calls=tuple(ledger.calls),
            variables=turn_variables,
        )

        def build(profile_id: UUID) -> TurnWrites:
            latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
            writes = build_writes(draft, session, answered, profile_id, timer.snapshot(), latency_ms)
            return with_handoff_event(writes, handoff)

        # Every store's checks on every record, before the first write (see checks.py). A customer
        # seen for the first time is checked under a provisional id: no check depends on its value.
        writes = build(profile.id if profile is not None else uuid4())
        with timer.measure("check_records"):
            self._checks.writes(writes)

        async def write() -> Session:
            nonlocal writes
            if profile is None:
                # Race-safe: concurrent first turns of one identity get one profile. Created only
                # now, so a refused or failed turn leaves no profile behind.
                with timer.measure("create_customer"):
                    created = await self._profile_store.get_or_create(
                        request.tenant_id, request.channel, request.user_channel_id
                    )
                writes = build(created.id)

            async def announce() -> None:  # once the turn is recorded, even if an append failed
                await notify_handoff(self._event_sink, writes, handoff)  # never raises

            return await persist_turn(self._stores, writes, before, timer, recorded=announce)

        # The answer is complete: the writes run to their end even if the caller goes away now (a
        # streaming client that disconnects), so a turn is written whole or, before this, not at all.
        writing = asyncio.ensure_future(write())
        if on_writing is not None:
            on_writing()
        writing.add_done_callback(_observe)  # a failure after a cancel is logged by persist.py
        saved = await asyncio.shield(writing)

        latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
        return TurnResult(
            session_id=saved.session_id,
            turn_id=draft.turn_id,
            turn_number=turn_number,
            response=reply.text,
            matched_rules=matched_rules(matches),
            scenario=scenario_position(outcome),
            template_id=reply.template_id,
            usage=reply.usage,
            latency_ms=latency_ms,
            timings_ms=timer.snapshot(),
            new_session=found is None,
            session_mode=saved.mode,
        )


def _observe(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of a task nobody may await any more (its caller was cancelled) as seen;
    a failure of the writes is logged by ``persist.py``."""
    if not task.cancelled():
        task.exception()
