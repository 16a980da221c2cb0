"""Domain models refuse invalid input at construction, with pydantic's own message.

Stores re-check (``model_construct`` and ``model_copy(update=...)`` skip validation), but a
caller that builds a model the normal way learns about bad input right there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from focal.alignment.models import (
    Agent,
    MigrationPlan,
    MigrationPlanStatus,
    Rule,
    Scenario,
    ScenarioStep,
    Scope,
    StepTransition,
    Template,
    TemplateMode,
    ToolActivation,
    Variable,
    VariableUpdatePolicy,
)
from focal.audit.models import AuditEvent, TurnRecord
from focal.conversation.models import Channel, Session, SessionStatus, StepVisit
from focal.memory.models import Entity, Episode, EpisodeType, Relationship
from focal.models import MAX_INT4
from focal.profile.models import FieldSource, ProfileAsset, ProfileField

TENANT, AGENT = uuid4(), uuid4()
NAIVE = datetime(2026, 1, 1, 12, 0)
AWARE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def rule(**fields: Any) -> Rule:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "agent_id": AGENT,
        "name": "refunds",
        "condition_text": "asks for a refund",
        "action_text": "explain the policy",
    }
    return Rule(**(values | fields))


def two_step_scenario(**fields: Any) -> Scenario:
    first, second = uuid4(), uuid4()
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "agent_id": AGENT,
        "name": "returns",
        "entry_step_id": first,
        "steps": [
            ScenarioStep(
                id=first, name="ask", transitions=[StepTransition(to_step_id=second, condition_text="x")]
            ),
            ScenarioStep(id=second, name="done", is_terminal=True),
        ],
    }
    return Scenario(**(values | fields))


def session(**fields: Any) -> Session:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "agent_id": AGENT,
        "channel": Channel.WEB,
        "user_channel_id": "u1",
    }
    return Session(**(values | fields))


def turn(**fields: Any) -> TurnRecord:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "agent_id": AGENT,
        "session_id": uuid4(),
        "turn_number": 1,
        "user_message": "hi",
        "assistant_response": "hello",
    }
    return TurnRecord(**(values | fields))


def plan(**fields: Any) -> MigrationPlan:
    values: dict[str, Any] = {"tenant_id": TENANT, "scenario_id": uuid4(), "from_version": 1, "to_version": 2}
    return MigrationPlan(**(values | fields))


def error_of(build: Callable[[], object]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        build()
    return caught.value


def locations(error: ValidationError) -> list[tuple[int | str, ...]]:
    return [tuple(detail["loc"]) for detail in error.errors()]


# --- sizes and ranges ---------------------------------------------------------------------------


def test_name_longer_than_255_is_refused() -> None:
    assert Agent(tenant_id=TENANT, name="a" * 255).name == "a" * 255
    error = error_of(lambda: Agent(tenant_id=TENANT, name="a" * 256))
    assert locations(error) == [("name",)]
    assert "at most 255 characters" in str(error)
    assert "at least 1 character" in str(error_of(lambda: rule(name="")))


@pytest.mark.parametrize("priority", [-101, 101])
def test_rule_priority_outside_minus_100_to_100_is_refused(priority: int) -> None:
    error = error_of(lambda: rule(priority=priority))
    assert locations(error) == [("priority",)]
    assert "100" in str(error)


@pytest.mark.parametrize("priority", [-100, 0, 100])
def test_rule_priority_bounds_are_accepted(priority: int) -> None:
    assert rule(priority=priority).priority == priority


@pytest.mark.parametrize("temperature", [-0.1, 2.01])
def test_agent_temperature_outside_0_to_2_is_refused(temperature: float) -> None:
    error = error_of(lambda: Agent(tenant_id=TENANT, name="a", temperature=temperature))
    assert locations(error) == [("temperature",)]


def test_assignment_is_validated_too() -> None:
    agent = Agent(tenant_id=TENANT, name="a")
    with pytest.raises(ValidationError, match="temperature"):
        agent.temperature = 3.0
    assert agent.temperature == 0.7


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda v: rule(max_fires_per_session=v), "max_fires_per_session"),
        (lambda v: rule(cooldown_turns=v), "cooldown_turns"),
        (lambda v: Agent(tenant_id=TENANT, name="a", current_version=v), "current_version"),
        (lambda v: two_step_scenario(version=v), "version"),
        (lambda v: session(version=v), "version"),
        (lambda v: session(turn_count=v), "turn_count"),
        (lambda v: session(config_version=v), "config_version"),
        (lambda v: session(active_scenario_version=v), "active_scenario_version"),
        (lambda v: turn(turn_number=v), "turn_number"),
        (
            lambda v: StepVisit(step_id=uuid4(), step_name="s", step_content_hash="h", turn_number=v),
            "turn_number",
        ),
        (lambda v: plan(from_version=1, to_version=v), "to_version"),
    ],
)
def test_counters_and_versions_fit_a_postgres_integer(build: Callable[[int], object], field: str) -> None:
    built = build(MAX_INT4)
    assert getattr(built, field) == MAX_INT4
    error = error_of(lambda: build(MAX_INT4 + 1))
    assert locations(error) == [(field,)]
    assert "less than or equal to 2147483647" in str(error)


# --- scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [Scope.STEP, Scope.SCENARIO])
def test_scope_id_is_required_for_step_and_scenario_scopes(scope: Scope) -> None:
    assert "scope_id is required for scope" in str(error_of(lambda: rule(scope=scope)))
    assert rule(scope=scope, scope_id=uuid4()).scope is scope


def test_scope_id_must_be_empty_for_global_scope() -> None:
    error = error_of(lambda: rule(scope=Scope.GLOBAL, scope_id=uuid4()))
    assert "scope_id must be empty for a GLOBAL scope" in str(error)
    template = Template(tenant_id=TENANT, agent_id=AGENT, name="t", text="hi")
    assert template.scope is Scope.GLOBAL and template.scope_id is None
    with pytest.raises(ValidationError, match="scope_id is required"):
        Template(tenant_id=TENANT, agent_id=AGENT, name="t", text="hi", scope=Scope.STEP)


# --- scenario graphs --------------------------------------------------------------------------


def test_scenario_entry_step_must_be_one_of_its_steps() -> None:
    unknown = uuid4()
    error = error_of(lambda: two_step_scenario(entry_step_id=unknown))
    assert f"entry_step_id {unknown} is not one of the scenario's steps" in str(error)


def test_scenario_transition_target_must_be_one_of_its_steps() -> None:
    only, unknown = uuid4(), uuid4()
    steps = [
        ScenarioStep(
            id=only, name="ask", transitions=[StepTransition(to_step_id=unknown, condition_text="x")]
        )
    ]
    error = error_of(lambda: two_step_scenario(entry_step_id=only, steps=steps))
    assert f"step 'ask' has a transition to unknown step {unknown}" in str(error)


def test_scenario_step_ids_must_be_unique() -> None:
    same = uuid4()
    steps = [ScenarioStep(id=same, name="a"), ScenarioStep(id=same, name="b")]
    error = error_of(lambda: two_step_scenario(entry_step_id=same, steps=steps))
    assert "step ids must be unique within a scenario" in str(error)


def test_scenario_needs_at_least_one_step() -> None:
    assert locations(error_of(lambda: two_step_scenario(steps=[]))) == [("steps",)]


def test_scenario_graph_is_rechecked_on_assignment() -> None:
    scenario = two_step_scenario()
    entry = scenario.entry_step_id
    with pytest.raises(ValidationError, match="entry_step_id"):
        scenario.entry_step_id = uuid4()
    assert scenario.entry_step_id == entry  # a refused assignment changes nothing


def test_refused_scope_assignment_changes_nothing() -> None:
    scoped = rule()
    fields_set = set(scoped.model_fields_set)
    assert "scope" not in fields_set
    with pytest.raises(ValidationError, match="scope_id is required"):
        scoped.scope = Scope.STEP
    assert scoped.scope is Scope.GLOBAL
    assert scoped.model_fields_set == fields_set


# --- variables and JSON payloads ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["Order", "1st", "order-id", "order id", "", "é"])
def test_variable_name_must_be_lower_snake_case(name: str) -> None:
    error = error_of(lambda: Variable(tenant_id=TENANT, agent_id=AGENT, name=name))
    assert locations(error) == [("name",)]


@pytest.mark.parametrize("name", ["order", "_private", "order_id_2"])
def test_lower_snake_case_variable_names_are_accepted(name: str) -> None:
    assert Variable(tenant_id=TENANT, agent_id=AGENT, name=name).name == name


@pytest.mark.parametrize("value", [uuid4(), AWARE, (1, 2), {1: "int key"}, b"bytes", {"nested": [object()]}])
def test_variable_default_value_must_be_json(value: object) -> None:
    error = error_of(lambda: Variable(tenant_id=TENANT, agent_id=AGENT, name="v", default_value=value))
    assert locations(error)[0][0] == "default_value"


def test_json_values_are_accepted() -> None:
    value = {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, {"k": []}]}
    assert Variable(tenant_id=TENANT, agent_id=AGENT, name="v", default_value=value).default_value == value
    assert Variable(tenant_id=TENANT, agent_id=AGENT, name="v", default_value=3).default_value == 3


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda bad: ToolActivation(tenant_id=TENANT, agent_id=AGENT, tool_id="t", policy_overrides=bad),
            "policy_overrides",
        ),
        (lambda bad: plan(transformation_map=bad), "transformation_map"),
        (lambda bad: plan(anchor_policies=bad), "anchor_policies"),
        (lambda bad: Episode(tenant_id=TENANT, agent_id=AGENT, content="c", metadata=bad), "metadata"),
        (
            lambda bad: Entity(tenant_id=TENANT, agent_id=AGENT, name="n", entity_type="T", attributes=bad),
            "attributes",
        ),
        (
            lambda bad: Relationship(
                tenant_id=TENANT,
                source_entity_id=uuid4(),
                target_entity_id=uuid4(),
                relationship_type="R",
                metadata=bad,
            ),
            "metadata",
        ),
        (lambda bad: session(variables=bad), "variables"),
        (lambda bad: session(pending_migration=bad), "pending_migration"),
        (lambda bad: turn(context_extracted=bad), "context_extracted"),
        (lambda bad: turn(scenario_state=bad), "scenario_state"),
        (lambda bad: turn(tools_executed=[bad]), "tools_executed"),
        (lambda bad: AuditEvent(tenant_id=TENANT, event_type="e", event_data=bad), "event_data"),
        (
            lambda bad: ProfileField(tenant_id=TENANT, profile_id=uuid4(), field_name="f", field_value=bad),
            "field_value",
        ),
        (
            lambda bad: ProfileAsset(
                tenant_id=TENANT, profile_id=uuid4(), asset_type="a", asset_reference="r", metadata=bad
            ),
            "metadata",
        ),
    ],
)
def test_free_form_payloads_must_be_json(build: Callable[[Any], object], field: str) -> None:
    assert build({"ok": [1, "two", None]}) is not None
    error = error_of(lambda: build({"id": uuid4()}))
    assert locations(error)[0][0] == field
    assert "not a valid JSON value" in str(error)


def test_json_payloads_are_copied_in() -> None:
    payload: dict[str, Any] = {"list": [1]}
    event = AuditEvent(tenant_id=TENANT, event_type="e", event_data=payload)
    payload["list"].append(2)
    assert event.event_data == {"list": [1]}


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda t: Agent(tenant_id=TENANT, name="a", created_at=t), "created_at"),
        (lambda t: Agent(tenant_id=TENANT, name="a", deleted_at=t), "deleted_at"),
        (lambda t: rule(updated_at=t), "updated_at"),
        (lambda t: plan(approved_at=t), "approved_at"),
        (lambda t: plan(deployed_at=t), "deployed_at"),
        (lambda t: Episode(tenant_id=TENANT, agent_id=AGENT, content="c", valid_from=t), "valid_from"),
        (lambda t: Episode(tenant_id=TENANT, agent_id=AGENT, content="c", valid_to=t), "valid_to"),
        (lambda t: Episode(tenant_id=TENANT, agent_id=AGENT, content="c", recorded_at=t), "recorded_at"),
        (lambda t: session(last_activity_at=t), "last_activity_at"),
        (
            lambda t: StepVisit(
                step_id=uuid4(), step_name="s", step_content_hash="h", turn_number=0, entered_at=t
            ),
            "entered_at",
        ),
        (lambda t: turn(created_at=t), "created_at"),
        (lambda t: AuditEvent(tenant_id=TENANT, event_type="e", created_at=t), "created_at"),
        (
            lambda t: ProfileField(tenant_id=TENANT, profile_id=uuid4(), field_name="f", valid_to=t),
            "valid_to",
        ),
    ],
)
def test_naive_timestamps_are_refused(build: Callable[[datetime], object], field: str) -> None:
    assert getattr(build(AWARE), field) == AWARE
    error = error_of(lambda: build(NAIVE))
    assert locations(error) == [(field,)]
    assert "Input should have timezone info" in str(error)


def test_any_timezone_is_accepted_and_defaults_are_utc() -> None:
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert Agent(tenant_id=TENANT, name="a", created_at=plus_two).created_at == AWARE
    assert Agent(tenant_id=TENANT, name="a").created_at.tzinfo is UTC


def test_naive_timestamp_assignment_is_refused() -> None:
    agent = Agent(tenant_id=TENANT, name="a")
    with pytest.raises(ValidationError, match="timezone"):
        agent.updated_at = NAIVE


# --- embeddings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda model: rule(embedding=[0.1, 0.2], embedding_model=model),
        lambda model: two_step_scenario(entry_embedding=[0.1, 0.2], embedding_model=model),
        lambda model: Episode(
            tenant_id=TENANT, agent_id=AGENT, content="c", embedding=[0.1], embedding_model=model
        ),
    ],
    ids=["rule", "scenario", "episode"],
)
def test_embedding_requires_embedding_model(build: Callable[[str | None], object]) -> None:
    assert build("hashing-8") is not None
    for missing in (None, ""):
        assert "embedding_model is required when embedding is set" in str(error_of(partial(build, missing)))


def test_embedding_model_without_embedding_is_fine() -> None:
    assert rule(embedding_model="m").embedding is None


def test_removing_the_model_of_an_embedded_rule_is_refused() -> None:
    embedded = rule(embedding=[1.0], embedding_model="m")
    with pytest.raises(ValidationError, match="embedding_model is required"):
        embedded.embedding_model = None
    assert embedded.embedding_model == "m"


# --- migration plans, frozen records, enums --------------------------------------------------


@pytest.mark.parametrize(("from_version", "to_version"), [(2, 2), (3, 2)])
def test_migration_plan_must_move_forward(from_version: int, to_version: int) -> None:
    error = error_of(lambda: plan(from_version=from_version, to_version=to_version))
    assert "to_version must be greater than from_version" in str(error)
    assert plan(from_version=1, to_version=2).status is MigrationPlanStatus.DRAFT


@pytest.mark.parametrize(
    ("record", "field", "value"),
    [
        (turn(), "assistant_response", "rewritten"),
        (turn(), "created_at", AWARE),
        (AuditEvent(tenant_id=TENANT, event_type="e"), "event_type", "other"),
    ],
)
def test_audit_records_are_frozen(record: Any, field: str, value: object) -> None:
    before = getattr(record, field)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(record, field, value)
    assert getattr(record, field) == before


def test_unknown_fields_are_refused() -> None:
    assert locations(error_of(lambda: rule(colour="red"))) == [("colour",)]
    assert locations(error_of(lambda: turn(extra=1))) == [("extra",)]


@pytest.mark.parametrize(
    ("enum", "field", "build"),
    [
        (Channel, "channel", lambda v: session(channel=v)),
        (SessionStatus, "status", lambda v: session(status=v)),
        (Scope, "scope", lambda v: rule(scope=v, scope_id=None if v == "GLOBAL" else uuid4())),
        (
            TemplateMode,
            "mode",
            lambda v: Template(tenant_id=TENANT, agent_id=AGENT, name="t", text="x", mode=v),
        ),
        (
            VariableUpdatePolicy,
            "update_policy",
            lambda v: Variable(tenant_id=TENANT, agent_id=AGENT, name="v", update_policy=v),
        ),
        (MigrationPlanStatus, "status", lambda v: plan(status=v)),
        (
            EpisodeType,
            "episode_type",
            lambda v: Episode(tenant_id=TENANT, agent_id=AGENT, content="c", episode_type=v),
        ),
        (
            FieldSource,
            "source",
            lambda v: ProfileField(tenant_id=TENANT, profile_id=uuid4(), field_name="f", source=v),
        ),
    ],
)
def test_enums_accept_upper_case_values_only(enum: Any, field: str, build: Callable[[str], object]) -> None:
    for member in enum:
        assert member.value == member.value.upper()
        assert getattr(build(member.value), field) is member
    some = next(iter(enum)).value
    for bad in (some.lower(), "NOT_A_MEMBER"):
        error = error_of(partial(build, bad))
        assert locations(error) == [(field,)]
        assert "Input should be" in str(error)


def test_uuid_fields_refuse_garbage() -> None:
    error = error_of(lambda: Agent(tenant_id="not-a-uuid", name="a"))
    assert locations(error) == [("tenant_id",)]
    assert isinstance(Agent(tenant_id=str(TENANT), name="a").tenant_id, UUID)
