"""Builders for turn-pipeline tests: an in-memory stack, configuration with real embeddings, LLM doubles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from focal.alignment.models import (
    Agent,
    Rule,
    Scenario,
    ScenarioStep,
    Scope,
    StepTransition,
    Template,
    TemplateMode,
    Variable,
)
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.stores.inmemory import InMemoryConfigStore
from focal.alignment.turn import TurnConfig, TurnEngine, TurnRequest, TurnResult
from focal.audit.stores.inmemory import InMemoryAuditStore
from focal.audit.stores.store import AuditStore
from focal.conversation.locks import ConversationLocks
from focal.conversation.models import Channel
from focal.conversation.stores.inmemory import InMemorySessionStore
from focal.conversation.stores.store import SessionStore
from focal.errors import ProviderError
from focal.memory.stores.inmemory import InMemoryMemoryStore
from focal.memory.stores.store import MemoryStore
from focal.profile.stores.inmemory import InMemoryProfileStore
from focal.profile.stores.store import ProfileStore
from focal.providers.embedding.base import EmbeddingProvider
from focal.providers.embedding.hashing import HashingEmbeddingProvider
from focal.providers.llm.base import (
    GenerationRequest,
    LLMProvider,
    LLMResponse,
    ModelT,
    StreamEvent,
    TokenUsage,
)
from focal.settings import ToolsSettings
from focal.tools.executor import ToolExecutor

DIMENSIONS = 1536  # the default dimension: fewer hash collisions than a small one, so scores are lexical


class RecordingLLM(LLMProvider):
    """An LLMProvider test double: records every call, answers a fixed text or raises a given error.

    With ``rendezvous=n`` each call waits until ``n`` calls are in flight, which forces concurrent
    turns to interleave deterministically (no sleep involved).
    """

    def __init__(
        self,
        *,
        answer: str = "An answer from the model.",
        fail_with: ProviderError | None = None,
    ):
        self.answer = answer
        self.fail_with = fail_with
        self.calls: list[dict[str, Any]] = []
        self.rendezvous = 0
        self._arrived = asyncio.Condition()

    @property
    def model_id(self) -> str:
        return "recording"

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        self.calls.append(
            {
                "prompt": request.prompt,
                "system_prompt": request.system_prompt,
                "history": list(request.history),
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
            }
        )
        if self.rendezvous:
            async with self._arrived:
                self._arrived.notify_all()
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: len(self.calls) >= self.rendezvous), timeout=10
                )
        if self.fail_with is not None:
            raise self.fail_with
        return LLMResponse(
            content=self.answer,
            model="recording",
            usage=TokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
            finish_reason="stop",
        )

    async def generate_structured(
        self, prompt: str, schema: type[ModelT], *, system_prompt: str | None = None, max_tokens: int = 1024
    ) -> tuple[ModelT, LLMResponse]:
        raise NotImplementedError("the turn pipeline does not use structured output")

    def _stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("the turn pipeline does not stream yet")


@dataclass
class StepSpec:
    name: str
    transitions: list[tuple[str, str]] = field(default_factory=list)  # (target step name, condition)
    template_ids: list[UUID] = field(default_factory=list)
    is_terminal: bool = False
    description: str | None = None


@dataclass
class TurnStack:
    """Stores (in-memory unless given) and offline-style providers wired into a TurnEngine."""

    llm: LLMProvider
    embedder: HashingEmbeddingProvider = field(
        default_factory=lambda: HashingEmbeddingProvider(dimensions=DIMENSIONS)
    )
    config_store: ConfigStore = field(
        default_factory=lambda: InMemoryConfigStore(embedding_dimensions=DIMENSIONS)
    )
    memory_store: MemoryStore = field(
        default_factory=lambda: InMemoryMemoryStore(embedding_dimensions=DIMENSIONS)
    )
    session_store: SessionStore = field(default_factory=InMemorySessionStore)
    audit_store: AuditStore = field(default_factory=InMemoryAuditStore)
    profile_store: ProfileStore = field(default_factory=InMemoryProfileStore)
    tool_executor: ToolExecutor | None = None
    tools: ToolsSettings | None = None

    def engine(
        self,
        config: TurnConfig | None = None,
        *,
        embedder: EmbeddingProvider | None = None,
        conversation_locks: ConversationLocks | None = None,
    ) -> TurnEngine:
        """An engine on these stores; ``embedder`` replaces the stack's (e.g. one of another dimension);
        ``conversation_locks`` are needed by ``concurrency="enqueue"``."""
        return TurnEngine(
            config_store=self.config_store,
            session_store=self.session_store,
            memory_store=self.memory_store,
            audit_store=self.audit_store,
            profile_store=self.profile_store,
            llm_provider=self.llm,
            embedding_provider=embedder or self.embedder,
            config=config,
            tool_executor=self.tool_executor,
            tools=self.tools,
            conversation_locks=conversation_locks,
        )

    async def agent(self, tenant_id: UUID, **fields: Any) -> Agent:
        agent = Agent(tenant_id=tenant_id, name=fields.pop("name", f"agent-{uuid4().hex[:8]}"), **fields)
        await self.config_store.save_agent(agent)
        return agent

    async def rule(self, agent: Agent, condition: str, action: str, **fields: Any) -> Rule:
        rule = Rule(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name=fields.pop("name", condition[:40]),
            condition_text=condition,
            action_text=action,
            embedding=await self.embedder.embed(condition),
            embedding_model=self.embedder.model_id,
            **fields,
        )
        await self.config_store.save_rule(rule)
        return rule

    async def template(self, agent: Agent, text: str, mode: TemplateMode, **fields: Any) -> Template:
        template = Template(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name=fields.pop("name", f"{mode.value.lower()}-{uuid4().hex[:6]}"),
            text=text,
            mode=mode,
            **fields,
        )
        await self.config_store.save_template(template)
        return template

    async def variable(self, agent: Agent, name: str, default_value: Any) -> Variable:
        variable = Variable(
            tenant_id=agent.tenant_id, agent_id=agent.id, name=name, default_value=default_value
        )
        await self.config_store.save_variable(variable)
        return variable

    async def scenario(
        self, agent: Agent, name: str, entry_condition: str, steps: list[StepSpec]
    ) -> Scenario:
        ids = {spec.name: uuid4() for spec in steps}
        built = [
            ScenarioStep(
                id=ids[spec.name],
                name=spec.name,
                description=spec.description,
                transitions=[
                    StepTransition(
                        to_step_id=ids[target],
                        condition_text=condition,
                        condition_embedding=await self.embedder.embed(condition),
                    )
                    for target, condition in spec.transitions
                ],
                template_ids=spec.template_ids,
                is_terminal=spec.is_terminal,
            )
            for spec in steps
        ]
        scenario = Scenario(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name=name,
            entry_step_id=built[0].id,
            entry_condition_text=entry_condition,
            entry_embedding=await self.embedder.embed(entry_condition),
            embedding_model=self.embedder.model_id,
            steps=built,
        )
        await self.config_store.save_scenario(scenario)
        return scenario

    async def turn(
        self,
        agent: Agent,
        message: str,
        *,
        user: str = "alice",
        channel: Channel = Channel.WEB,
        session_id: UUID | None = None,
        config: TurnConfig | None = None,
        engine: TurnEngine | None = None,
    ) -> TurnResult:
        request = TurnRequest(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            channel=channel,
            user_channel_id=user,
            message=message,
            session_id=session_id,
        )
        return await (engine or self.engine(config)).run(request)

    async def stored_state(self, agent: Agent, users: Sequence[str]) -> dict[str, list[Any]]:
        """Everything any store holds for the agent's tenant (and these WEB customers), as plain
        data: two equal states mean no store was written in between."""
        tenant = agent.tenant_id
        sessions = await self.session_store.list_by_agent(tenant, agent.id)
        profiles = [await self.profile_store.get_by_channel_identity(tenant, Channel.WEB, u) for u in users]
        turns = await self.audit_store.list_turns_by_tenant(tenant)
        events = await self.audit_store.list_events(tenant)
        query = await self.embedder.embed("anything at all")
        episodes = await self.memory_store.vector_search_episodes(
            query, tenant, agent.id, limit=1000, min_score=-1.0
        )
        return {
            "sessions": [session.model_dump() for session in sessions],
            "profiles": [profile.model_dump() if profile else None for profile in profiles],
            "turns": sorted((turn.model_dump() for turn in turns), key=lambda t: str(t["id"])),
            "events": sorted((event.model_dump() for event in events), key=lambda e: str(e["id"])),
            "episodes": sorted((episode.model_dump() for episode, _ in episodes), key=lambda e: str(e["id"])),
        }


def step_scope(step_id: UUID) -> dict[str, Any]:
    return {"scope": Scope.STEP, "scope_id": step_id}
