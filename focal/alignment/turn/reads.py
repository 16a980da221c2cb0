"""The reads of a turn before its answer, each started as soon as what it needs is known.

Time to the first streamed byte is mostly these reads, one round trip after another. Most of
them need nothing but the request (tenant, agent id, channel identity), so ``TurnReads`` starts
them all at once; the others chain on what they need:

- from the request alone: the agent, the session, the message's embedding, the customer's profile,
  the agent's variable definitions, and the agent's hard constraints (of every scope: the turn
  keeps those of the scope it answers from, ``config_checks.in_scopes``, once its scenario move is
  known, so the read does not wait for the move);
- once the session is known: the scenario definitions its move needs (``scenario
  .read_definitions``) and the history;
- once the embedding is known: the rule candidates of the GLOBAL scope (``retrieval
  .retrieve_rules`` searches the scenario and step scopes, when the turn answers from one, once its
  move is known, and merges);
- once the session, the profile and the embedding are known: the customer's memory.

All of it is reads (the embedding writes nothing either), each scoped to the request's tenant: a
read started before the agent is known to exist (or to be enabled) reads that tenant's rows for
that agent id and is discarded with the refused turn, so a refused turn still leaves no trace.

``loaded()`` gives the agent, the session and the embedding, raising the first failure among
them in that order (an unknown agent is reported before a foreign session, whatever answered
first). ``close()`` cancels every read still running and waits for it, and marks every failure
as seen: no read outlives the turn (a refused turn, a MANUAL session that needs none of them, a
client that went away), and none fails unobserved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from focal.alignment.models import Agent, Rule, Scope, Variable
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.models import StepTimer, TurnConfig, TurnRequest
from focal.alignment.turn.retrieval import SessionKey, recall_memory, rule_candidates
from focal.alignment.turn.scenario import ScenarioDefinitions, read_definitions
from focal.audit.stores.store import AuditStore
from focal.conversation.models import Session, SessionStatus
from focal.conversation.stores.store import SessionStore
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.memory.models import Episode
from focal.memory.stores.store import MemoryStore
from focal.profile.models import CustomerProfile
from focal.profile.stores.store import ProfileStore
from focal.providers.embedding.base import EmbeddingProvider
from focal.providers.llm.base import LLMMessage

__all__ = ["ReadStores", "TurnReads"]

T = TypeVar("T")


@dataclass(frozen=True)
class ReadStores:
    """What the reads of a turn read from."""

    config: ConfigStore
    sessions: SessionStore
    profiles: ProfileStore
    memory: MemoryStore
    audit: AuditStore
    embedder: EmbeddingProvider


class TurnReads:
    """``async with TurnReads(...) as reads``: every read of the turn, started on entry (see the
    module docstring); the awaitables below are the reads' results."""

    def __init__(
        self, stores: ReadStores, request: TurnRequest, message: str, config: TurnConfig, timer: StepTimer
    ) -> None:
        self._stores = stores
        self._request = request
        self._message = message
        self._config = config
        self._timer = timer
        self._tasks: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> TurnReads:
        request, stores = self._request, self._stores
        # Reads that wait on the network first, the embedding (CPU for a local embedder) after
        # them: their queries are in flight while it computes.
        self._agent = self._start(self._load_agent())
        self._found = self._start(self._find_session())
        self._profile = self._start(self._customer())
        self._variables = self._start(stores.config.get_variables(request.tenant_id, request.agent_id))
        self._constraints = self._start(
            stores.config.get_hard_constraints(request.tenant_id, request.agent_id)
        )
        self._embedding = self._start(stores.embedder.embed(self._message))
        self._scenarios = self._start(self._scenario_definitions())
        self._history = self._start(self._read_history())
        self._memories = self._start(self._recall())
        self._global_rules = self._start(self._global_rule_candidates())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _start(self, read: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(read)
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        """Cancel every read still running, wait for them, and mark their failures as seen."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- results ----------------------------------------------------------------------------

    async def loaded(self) -> tuple[Agent, Session | None, list[float]]:
        """The agent, the session to continue (None: open one) and the message's embedding."""
        first = (self._agent, self._found, self._embedding)
        await asyncio.wait(first)
        for task in first:
            error = task.exception()
            if error is not None:
                raise error
        return self._agent.result(), self._found.result(), self._embedding.result()

    def profile(self) -> Awaitable[CustomerProfile | None]:
        return self._profile

    def memories(self) -> Awaitable[list[tuple[Episode, float]]]:
        """The recalled episodes ([] for a customer seen for the first time)."""
        return self._memories

    def variables(self) -> Awaitable[list[Variable]]:
        return self._variables

    def hard_constraints(self) -> Awaitable[list[Rule]]:
        """The agent's enabled hard constraints of every scope (``ConfigStore.get_hard_constraints``)."""
        return self._constraints

    def scenario_definitions(self) -> Awaitable[ScenarioDefinitions]:
        return self._scenarios

    def history(self) -> Awaitable[list[LLMMessage]]:
        return self._history

    def global_rule_candidates(self) -> Awaitable[list[tuple[Rule, float]]]:
        """The GLOBAL scope's rule candidates (``retrieval.retrieve_rules``, ``global_candidates``)."""
        return self._global_rules

    # --- the reads --------------------------------------------------------------------------

    async def _load_agent(self) -> Agent:
        request = self._request
        agent = await self._stores.config.get_agent(request.tenant_id, request.agent_id)
        if agent is None:
            raise NotFoundError(f"agent {request.agent_id} not found")
        if not agent.enabled:
            raise ConflictError(f"agent {request.agent_id} is disabled; enable it to chat")
        return agent

    async def _find_session(self) -> Session | None:
        """The session to continue, or None to open a new one (see ``engine.py``)."""
        request, sessions = self._request, self._stores.sessions
        if request.session_id is not None:
            session = await sessions.get(request.tenant_id, request.session_id)
            if session is None or session.agent_id != request.agent_id:
                raise NotFoundError(f"session {request.session_id} not found for agent {request.agent_id}")
            if session.status is SessionStatus.CLOSED:
                raise ConflictError(
                    f"session {request.session_id} is closed; omit session_id to open a new one"
                )
            if (session.channel, session.user_channel_id) != (request.channel, request.user_channel_id):
                raise InvalidDataError(
                    f"session {request.session_id} belongs to another channel identity than "
                    f"{request.channel.value}/{request.user_channel_id}"
                )
            return session
        latest = await sessions.get_by_channel(request.tenant_id, request.channel, request.user_channel_id)
        if latest is None or latest.agent_id != request.agent_id or latest.status is SessionStatus.CLOSED:
            return None
        return latest

    async def _customer(self) -> CustomerProfile | None:
        # A read: a customer seen for the first time is only created once the turn succeeded.
        request = self._request
        with self._timer.measure("resolve_customer"):
            return await self._stores.profiles.get_by_channel_identity(
                request.tenant_id, request.channel, request.user_channel_id
            )

    async def _scenario_definitions(self) -> ScenarioDefinitions:
        found, request, config = await self._found, self._request, self._stores.config
        if found is None:
            return await read_definitions(config, request.tenant_id, request.agent_id, None, None)
        return await read_definitions(
            config, found.tenant_id, found.agent_id, found.active_scenario_id, found.current_step_id
        )

    async def _recall(self) -> list[tuple[Episode, float]]:
        profile, found = await self._profile, await self._found
        if profile is None:
            return []  # nothing to remember about someone new
        embedding = await self._embedding
        request = self._request
        key = SessionKey(request.tenant_id, request.agent_id, found.session_id if found else None)
        with self._timer.measure("recall_memory"):
            return await recall_memory(
                self._stores.memory,
                key,
                profile.id,
                embedding,
                embedding_model=self._stores.embedder.model_id,
                turn_number=(found.turn_count if found else 0) + 1,
                config=self._config,
            )

    async def _global_rule_candidates(self) -> list[tuple[Rule, float]]:
        if self._config.max_rules == 0:
            return []
        request, embedding = self._request, await self._embedding
        return await rule_candidates(
            self._stores.config,
            request.tenant_id,
            request.agent_id,
            embedding,
            [(Scope.GLOBAL, None)],
            embedding_model=self._stores.embedder.model_id,
            config=self._config,
        )

    async def _read_history(self) -> list[LLMMessage]:
        """The last ``history_turns`` turns of the session, oldest first, as LLM messages."""
        session = await self._found
        window = self._config.history_turns
        if session is None or session.turn_count == 0 or window == 0:
            return []
        with self._timer.measure("load_history"):
            turns = await self._stores.audit.list_turns_by_session(
                session.tenant_id,
                session.session_id,
                limit=window,
                offset=max(0, session.turn_count - window),
            )
        history: list[LLMMessage] = []
        for turn in turns[-window:]:
            # A MANUAL-mode message has no answer, an operator's reply (``control.py``) no
            # customer message: empty sides are left out, and what is then adjacent and of one
            # role is joined into one message.
            for role, content in (("user", turn.user_message), ("assistant", turn.assistant_response)):
                if not content:
                    continue
                if history and history[-1].role == role:
                    history[-1] = LLMMessage(role=role, content=f"{history[-1].content}\n\n{content}")
                else:
                    history.append(LLMMessage(role=role, content=content))
        return history
