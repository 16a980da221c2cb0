"""Configuration models: how an agent should behave.

Operators create these over the API; the ConfigStore keeps them. Enums are upper-case
``StrEnum`` values, matching the database CHECK constraints.

Two kinds of version, not to be confused:

- ``revision`` (every agent, rule, scenario, template, variable and tool activation) is the row's
  optimistic-concurrency counter. The store keeps it: 1 when the row is created, +1 on every
  save, whatever value the saved model carries. ``save_*(..., expected_revision=n)`` writes only
  if the stored revision is still ``n`` (``StaleRevisionError`` otherwise); the API exposes it as
  the ``ETag`` and honours ``If-Match``.
- ``Agent.current_version`` and ``Scenario.version`` are *behaviour* versions that sessions record
  (``Session.config_version``, ``active_scenario_version``) and migration plans refer to. A
  scenario's ``version`` changes only when its flow changes and never decreases: a save that
  would lower it is a ``ConflictError``.

Scenario size is bounded (``ScenarioLimits``, checked by ``scenario_limit_errors`` when a
scenario is saved), so loading one for a turn stays cheap for every tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field, JsonValue, SecretStr, field_validator, model_validator

from focal.conversation.models import Channel
from focal.errors import InvalidDataError
from focal.models import MAX_INT4, FocalModel, JsonDict, require_embedding_model, utc_now
from focal.patterns import PatternError, compiled
from focal.tools.models import HttpToolSpec, header_value_error, url_placeholders
from focal.tools.schema import check_parameters_schema

TOOL_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""Tool ids: a lower-case letter, then up to 63 lower-case letters, digits or underscores. They
appear in URL paths (``/tools/{tool_id}``), so they never hold ``/``, spaces or other escapes."""


def _revision() -> Any:
    return Field(default=1, ge=1, le=MAX_INT4, description="row revision, kept by the store")


class Scope(StrEnum):
    GLOBAL = "GLOBAL"
    SCENARIO = "SCENARIO"
    STEP = "STEP"


class TemplateMode(StrEnum):
    SUGGEST = "SUGGEST"  # offered to the LLM as a suggested answer
    EXCLUSIVE = "EXCLUSIVE"  # returned verbatim (rendered), bypassing the LLM
    FALLBACK = "FALLBACK"  # used when the LLM provider fails


class VariableUpdatePolicy(StrEnum):
    REPLACE = "REPLACE"
    APPEND = "APPEND"
    MERGE = "MERGE"


class MigrationPlanStatus(StrEnum):
    DRAFT = "DRAFT"
    APPROVED = "APPROVED"
    DEPLOYED = "DEPLOYED"
    REJECTED = "REJECTED"


class Agent(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    system_prompt: str | None = None
    default_model: str | None = Field(default=None, max_length=255)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1, le=200_000)
    enabled: bool = True
    current_version: int = Field(default=1, ge=1, le=MAX_INT4)
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None


class _Scoped(FocalModel):
    """Shared validation: ``scope_id`` is required unless the scope is GLOBAL."""

    scope: Scope = Scope.GLOBAL
    scope_id: UUID | None = None

    @model_validator(mode="after")
    def _scope_id_matches_scope(self) -> Self:
        if self.scope is Scope.GLOBAL and self.scope_id is not None:
            raise ValueError("scope_id must be empty for a GLOBAL scope")
        if self.scope is not Scope.GLOBAL and self.scope_id is None:
            raise ValueError(f"scope_id is required for scope {self.scope.value}")
        return self


class Rule(_Scoped):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    condition_text: str = Field(min_length=1)
    action_text: str = Field(min_length=1)
    priority: int = Field(default=0, ge=-100, le=100)
    enabled: bool = True
    max_fires_per_session: int = Field(default=0, ge=0, le=MAX_INT4)  # 0 = unlimited
    cooldown_turns: int = Field(default=0, ge=0, le=MAX_INT4)
    is_hard_constraint: bool = False
    attached_tool_ids: list[str] = Field(default_factory=list)
    attached_template_ids: list[UUID] = Field(default_factory=list)
    # A turn matching this rule answers, then hands the session to a person (MANUAL mode) and
    # emits the ``session.handoff_requested`` webhook (``focal/alignment/turn/handoff.py``).
    requests_handoff: bool = False
    embedding: list[float] | None = None
    embedding_model: str | None = None
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None
    # The checks of a hard constraint (see focal.alignment.constraint_patterns and
    # focal.alignment.turn.constraints): RE2 patterns every answer must not / must match, and what
    # an LLM judge is asked to verify. Validated (syntax, limits) when the rule is written.
    forbid_patterns: list[str] = Field(default_factory=list)
    require_patterns: list[str] = Field(default_factory=list)
    judge_instructions: str | None = None

    @model_validator(mode="after")
    def _embedding_names_its_model(self) -> Self:
        require_embedding_model(self.embedding, self.embedding_model)
        return self

    @model_validator(mode="after")
    def _checks_belong_to_hard_constraints(self) -> Self:
        if not self.is_hard_constraint and (
            self.forbid_patterns or self.require_patterns or self.judge_instructions is not None
        ):
            raise ValueError(
                "forbid_patterns, require_patterns and judge_instructions need is_hard_constraint=true"
            )
        return self


class StepTransition(FocalModel):
    to_step_id: UUID
    condition_text: str = Field(min_length=1)
    condition_embedding: list[float] | None = None
    priority: int = 0


class ScenarioStep(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    transitions: list[StepTransition] = Field(default_factory=list)
    rule_ids: list[UUID] = Field(default_factory=list)
    template_ids: list[UUID] = Field(default_factory=list)
    is_terminal: bool = False
    collects_fields: list[str] = Field(default_factory=list)
    # Tools (definition names) offered to the model while the session is at this step, besides
    # those attached to matched rules; a tool must also be activated for the agent.
    tool_ids: list[str] = Field(default_factory=list)


class Scenario(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    version: int = Field(default=1, ge=1, le=MAX_INT4)
    entry_step_id: UUID
    entry_condition_text: str | None = None
    entry_embedding: list[float] | None = None
    embedding_model: str | None = None
    steps: list[ScenarioStep] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _entry_embedding_names_its_model(self) -> Self:
        require_embedding_model(self.entry_embedding, self.embedding_model)
        return self

    @model_validator(mode="after")
    def _graph_is_closed(self) -> Self:
        step_ids = {step.id for step in self.steps}
        if len(step_ids) != len(self.steps):
            raise ValueError("step ids must be unique within a scenario")
        if self.entry_step_id not in step_ids:
            raise ValueError(f"entry_step_id {self.entry_step_id} is not one of the scenario's steps")
        for step in self.steps:
            for transition in step.transitions:
                if transition.to_step_id not in step_ids:
                    raise ValueError(
                        f"step {step.name!r} has a transition to unknown step {transition.to_step_id}"
                    )
        return self

    def step(self, step_id: UUID | None) -> ScenarioStep | None:
        """The step with this id, or None."""
        return next((s for s in self.steps if s.id == step_id), None)


@dataclass(frozen=True)
class ScenarioLimits:
    """The largest scenario Focal accepts (``SCENARIO_LIMITS``; documented for operators).

    A scenario is loaded whole on every turn of a session in it, so its size is bounded: the
    largest one decodes in tens of milliseconds, in slices that leave the event loop free (see
    ``benchmarks/scenario_load.py``). Checked on save (``scenario_limit_errors``), not on read, so
    a row stored before the limits existed still loads.
    """

    max_steps: int = 100
    max_transitions_per_step: int = 20
    max_transitions: int = 200  # in the whole scenario
    max_condition_length: int = 1_000  # transition condition_text and entry_condition_text
    max_description_length: int = 2_000  # scenario and step descriptions
    max_tags: int = 32
    max_tag_length: int = 64
    max_step_references: int = 32  # rule_ids, template_ids, collects_fields, tool_ids of a step (each)
    max_field_name_length: int = 255  # an entry of collects_fields


SCENARIO_LIMITS = ScenarioLimits()


def scenario_limit_errors(scenario: Scenario, limits: ScenarioLimits = SCENARIO_LIMITS) -> list[str]:
    """What makes ``scenario`` larger than ``limits`` (empty when it fits), one message each."""
    errors: list[str] = []

    def longer(text: str | None, limit: int, what: str) -> None:
        if text is not None and len(text) > limit:
            errors.append(f"{what} has {len(text)} characters, more than {limit}")

    def more(items: list[Any], limit: int, what: str) -> None:
        if len(items) > limit:
            errors.append(f"{what} has {len(items)} entries, more than {limit}")

    more(scenario.steps, limits.max_steps, "steps")
    total = sum(len(step.transitions) for step in scenario.steps)
    if total > limits.max_transitions:
        errors.append(f"the scenario has {total} transitions, more than {limits.max_transitions}")
    longer(scenario.description, limits.max_description_length, "description")
    longer(scenario.entry_condition_text, limits.max_condition_length, "entry_condition_text")
    more(scenario.tags, limits.max_tags, "tags")
    for tag in scenario.tags:
        longer(tag, limits.max_tag_length, "a tag")
    for step in scenario.steps:
        where = f"step {step.name!r}"
        more(step.transitions, limits.max_transitions_per_step, f"{where} transitions")
        longer(step.description, limits.max_description_length, f"{where} description")
        more(step.rule_ids, limits.max_step_references, f"{where} rule_ids")
        more(step.template_ids, limits.max_step_references, f"{where} template_ids")
        more(step.collects_fields, limits.max_step_references, f"{where} collects_fields")
        more(step.tool_ids, limits.max_step_references, f"{where} tool_ids")
        for name in step.collects_fields:
            longer(name, limits.max_field_name_length, f"{where} collects_fields entry")
        for transition in step.transitions:
            longer(
                transition.condition_text, limits.max_condition_length, f"{where} transition condition_text"
            )
    return errors


class Template(_Scoped):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    text: str = Field(min_length=1)
    mode: TemplateMode = TemplateMode.SUGGEST
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None


VARIABLE_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")


MAX_EXTRACTION_PATTERN_LENGTH = 500


class Variable(FocalModel):
    """A value an agent keeps per session (``Session.variables``), and where it comes from.

    - ``resolver_tool_id``: a tool run before the answer when a template or the prompt of the
      turn needs the value and it is missing or older than ``cache_ttl_seconds`` (None: never
      expires). The tool's arguments are the session's variables of the same names.
    - ``extraction_pattern`` (an RE2 regular expression, ``focal.patterns``; the whole match, or
      its first group when it has one, is the value) and ``extract_with_llm`` (the model's
      structured output): how the value is taken from the customer's message while a step that
      collects it is current.
    - ``update_policy``: how a new value combines with the current one (REPLACE; APPEND to a
      list; MERGE an object into an object).
    - ``persist_to_profile``: each new value is also written to the customer's profile field of
      the variable's name (with history).
    """

    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255, pattern=VARIABLE_NAME_PATTERN.pattern)
    description: str | None = None
    default_value: JsonValue = None
    update_policy: VariableUpdatePolicy = VariableUpdatePolicy.REPLACE
    resolver_tool_id: str | None = None  # the API admits TOOL_ID_PATTERN names only
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_INT4)
    extraction_pattern: str | None = Field(
        default=None, min_length=1, max_length=MAX_EXTRACTION_PATTERN_LENGTH
    )
    extract_with_llm: bool = False
    persist_to_profile: bool = False
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None

    @field_validator("extraction_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                compiled(pattern)  # RE2: linear in the message, whatever the pattern (focal.patterns)
            except PatternError as exc:
                raise ValueError(f"extraction_pattern: {exc}") from exc
        return pattern


def _empty_parameters() -> JsonDict:
    return {"type": "object", "properties": {}}


MAX_TOOL_DESCRIPTION_LENGTH = 4_000
MAX_TOOL_SECRET_LENGTH = 4_096


class ToolDefinition(FocalModel):
    """A tool of a tenant: what the model is told (``name``, ``description``, the JSON Schema of
    its ``parameters``) and how Focal calls it (``kind`` "http": ``http``).

    ``name`` is the tool's key: activations (``ToolActivation.tool_id``), rules
    (``attached_tool_ids``), steps (``tool_ids``) and variables (``resolver_tool_id``) name it.
    Live names are unique per tenant.

    ``secret`` is the value of the header ``http.secret_header``: write-only over the API, hidden
    in ``repr`` and in JSON dumps (``SecretStr``), never logged, and sent only to this tool's own
    URL. Every ``{placeholder}`` of the URL template must be a declared parameter.
    """

    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    name: str = Field(pattern=TOOL_ID_PATTERN.pattern, description="see TOOL_ID_PATTERN")
    description: str = Field(default="", max_length=MAX_TOOL_DESCRIPTION_LENGTH)
    parameters: JsonDict = Field(default_factory=_empty_parameters)
    kind: Literal["http"] = "http"
    http: HttpToolSpec
    secret: SecretStr | None = Field(default=None, min_length=1, max_length=MAX_TOOL_SECRET_LENGTH)
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None

    @field_validator("parameters")
    @classmethod
    def _parameters_are_a_schema(cls, parameters: JsonDict) -> JsonDict:
        try:
            check_parameters_schema(parameters)
        except InvalidDataError as exc:
            raise ValueError(str(exc)) from exc
        return parameters

    @field_validator("secret")
    @classmethod
    def _secret_is_a_header_value(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            problem = header_value_error(secret.get_secret_value())
            if problem is not None:  # sent as a header value; never echoed
                raise ValueError(f"the secret {problem}")
        return secret

    @model_validator(mode="after")
    def _consistent_call(self) -> Self:
        declared = self.parameters.get("properties")
        names = set(declared) if isinstance(declared, dict) else set()
        missing = [p for p in url_placeholders(self.http.url_template) if p not in names]
        if missing:
            raise ValueError(f"url_template placeholders are not declared parameters: {', '.join(missing)}")
        if self.secret is not None and self.http.secret_header is None:
            raise ValueError("a secret needs http.secret_header, the header that carries it")
        return self


class ToolActivation(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    tool_id: str = Field(pattern=TOOL_ID_PATTERN.pattern, description="see TOOL_ID_PATTERN")
    enabled: bool = True
    policy_overrides: JsonDict = Field(default_factory=dict)
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)


class ScopeFilter(FocalModel):
    """Which sessions a scenario migration applies to."""

    include_channels: list[Channel] = Field(default_factory=list)
    exclude_channels: list[Channel] = Field(default_factory=list)
    include_step_names: list[str] = Field(default_factory=list)
    exclude_step_names: list[str] = Field(default_factory=list)
    max_session_age_days: int | None = Field(default=None, ge=0)
    min_session_age_days: int | None = Field(default=None, ge=0)


class MigrationPlan(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    scenario_id: UUID
    from_version: int = Field(ge=1, le=MAX_INT4)
    to_version: int = Field(ge=1, le=MAX_INT4)
    status: MigrationPlanStatus = MigrationPlanStatus.DRAFT
    transformation_map: JsonDict = Field(default_factory=dict)
    anchor_policies: JsonDict = Field(default_factory=dict)
    scope_filter: ScopeFilter | None = None
    created_at: AwareDatetime = Field(default_factory=utc_now)
    approved_at: AwareDatetime | None = None
    deployed_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _forward_only(self) -> Self:
        if self.to_version <= self.from_version:
            raise ValueError("to_version must be greater than from_version")
        return self
