"""Variables in a turn: captured from the customer's message, resolved by tools, kept in the session.

Values live in ``Session.variables`` (name -> JSON value) with the time each was set in
``Session.variables_set_at``; both are saved with the session, under its version.

**Update policies** (``Variable.update_policy``; REPLACE for a name without a definition):
REPLACE puts the new value in place; APPEND adds it to a list (a current non-list value becomes
the list's first item; a list value adds each of its items); MERGE merges an object into the
current object (the new keys win; a non-object on either side replaces).

**Extraction** (``StepCapture``), for the fields a scenario step collects
(``ScenarioStep.collects_fields``, each the name of a variable), while the session is at that
step: first the variable's ``extraction_pattern`` on the customer's message (the first match;
its first group when the pattern has one), then, for the fields still empty whose variable has
``extract_with_llm``, one structured-output request to the model (each field optional; a value
must still match the variable's pattern when it has one). A model failure there is logged and
extracts nothing: the turn goes on. A field is *filled* when the session holds a value other than
null, "" or []. The step's transitions are gated on its fields: the session leaves the step only
once all of them are filled (``scenario.py``); the fields of the step a turn arrives at are
extracted from the same message by pattern, so a customer may answer ahead.

**Resolvers** (``resolve_needed``): a variable with a ``resolver_tool_id`` is resolved before the
answer when the turn needs it (its ``{name}`` or ``{name.path}`` placeholder appears in a template
attached to a matched rule or the step, in a matched rule's action, the step's description or the
agent's system prompt) and its value is missing or older than ``cache_ttl_seconds``. The tool
must be activated and enabled for the agent and defined in the tenant; its arguments are the
variables (or their defaults) named like its parameters, and it is not called while a required
one is missing. The call is recorded like the model's (``source: "resolver"``); an ``ok`` result
becomes the value (under the update policy), a failure leaves the value as it was.

A turn run again for the same message (``ordering.py``) re-reads the session, so a resolver the
lost run called is usually due again: the call is not sent again but reused (``ToolLedger.memo``),
and the value is set as of the time the call was made, not the time of the re-run, so
``cache_ttl_seconds`` counts from when the tool answered. One message calls a resolver's tool
with given arguments once, whatever its ``cache_ttl_seconds``; the TTL decides, for every later
message, whether the value is fetched again.

**Profile** (``persist_to_profile``): every value a turn sets is also written to the customer's
profile field of the same name (a new current value, the previous one kept as history), after
the turn is recorded (``persist.py``). Operators' edits (``PATCH /v1/sessions/{id}/variables``)
are not written to the profile.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, JsonValue, create_model

from focal.alignment.models import Agent, ScenarioStep, Template, Variable, VariableUpdatePolicy
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.retrieval import RuleMatch
from focal.alignment.turn.tool_loop import ToolLedger, ToolRunner, usable_tools
from focal.conversation.models import Session
from focal.errors import ProviderError
from focal.logging import get_logger
from focal.patterns import PatternError, compiled
from focal.profile.models import FieldSource, ProfileField
from focal.providers.llm.base import LLMProvider, TokenUsage
from focal.tools.record import storable

__all__ = [
    "StepCapture",
    "TurnVariables",
    "apply_policy",
    "is_filled",
    "placeholder_names",
    "resolve_needed",
]

_log = get_logger("focal.turn")

ChangeSource = Literal["extracted", "resolver"]
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\}")
KNOWN_VALUE_CHARS = 500  # a value longer than this is cut in the prompt's "Known values:"


def placeholder_names(texts: Iterable[str | None]) -> set[str]:
    """The variable names ``{name}`` / ``{name.path}`` placeholders in ``texts`` refer to."""
    return {match.group(1) for text in texts if text for match in PLACEHOLDER.finditer(text)}


def is_filled(value: Any) -> bool:
    return value is not None and value != "" and value != []


def apply_policy(current: Any, new: Any, policy: VariableUpdatePolicy) -> JsonValue:
    """The value after ``new`` arrives under ``policy`` (see the module docstring)."""
    if policy is VariableUpdatePolicy.APPEND:
        items = list(current) if isinstance(current, list) else ([] if current is None else [current])
        return [*items, *(new if isinstance(new, list) else [new])]
    if policy is VariableUpdatePolicy.MERGE and isinstance(current, dict) and isinstance(new, dict):
        return {**current, **new}
    return new  # type: ignore[no-any-return]


@dataclass(frozen=True)
class VariableChange:
    name: str
    value: JsonValue
    source: ChangeSource


@dataclass
class TurnVariables:
    """The agent's variable definitions and the session of one turn, and what the turn set."""

    definitions: list[Variable]
    session: Session
    now: datetime
    changes: list[VariableChange] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)  # of the extraction requests

    def __post_init__(self) -> None:
        self.by_name = {v.name: v for v in self.definitions}

    def set(self, name: str, value: Any, source: ChangeSource, *, at: datetime | None = None) -> None:
        """Set ``name`` under its update policy, as of ``at`` (default: the turn's time)."""
        definition = self.by_name.get(name)
        policy = definition.update_policy if definition else VariableUpdatePolicy.REPLACE
        combined = apply_policy(self.session.variables.get(name), storable(value), policy)
        self.session.variables[name] = combined
        self.session.variables_set_at[name] = at or self.now
        self.changes.append(VariableChange(name, combined, source))

    def is_stale(self, variable: Variable) -> bool:
        if not is_filled(self.session.variables.get(variable.name)):
            return True
        if variable.cache_ttl_seconds is None:
            return False
        set_at = self.session.variables_set_at.get(variable.name)
        return set_at is None or self.now - set_at >= timedelta(seconds=variable.cache_ttl_seconds)

    def value(self, name: str) -> Any:
        """The session's value, else the definition's default (None when neither)."""
        value = self.session.variables.get(name)
        if value is None and name in self.by_name:
            return self.by_name[name].default_value
        return value

    def known_values(self) -> list[tuple[str, str]]:
        """``(name, text)`` of every variable with a value (session values, then defaults), for
        the prompt's ``Known values:`` block; long values are cut."""
        names = sorted({*self.session.variables, *(v.name for v in self.definitions)})
        known = []
        for name in names:
            value = self.value(name)
            if value is None:
                continue
            text = value if isinstance(value, str) else _json(value)
            if len(text) > KNOWN_VALUE_CHARS:
                text = text[: KNOWN_VALUE_CHARS - 1] + "…"
            known.append((name, text))
        return known

    def profile_fields(self, tenant_id: UUID, profile_id: UUID) -> list[ProfileField]:
        """The profile values this turn writes: the last value it set of each variable marked
        ``persist_to_profile``."""
        latest: dict[str, VariableChange] = {}
        for change in self.changes:
            definition = self.by_name.get(change.name)
            if definition is not None and definition.persist_to_profile:
                latest[change.name] = change
        return [
            ProfileField(
                tenant_id=tenant_id,
                profile_id=profile_id,
                field_name=change.name,
                field_value=change.value,
                source=FieldSource.EXTRACTED if change.source == "extracted" else FieldSource.SYSTEM,
            )
            for change in latest.values()
        ]


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _pattern_value(pattern: str, text: str) -> str | None:
    try:
        found = compiled(pattern).search(text)
    except PatternError:  # checked when the variable was saved; an old row may still hold a bad one
        return None
    if found is None:
        return None
    value = found.group(1) if found.re.groups and found.group(1) is not None else found.group(0)
    return value or None


class StepCapture:
    """Extracts a step's fields from the message into the turn's variables; returns the fields
    of the step that are still empty (the transition gate). See the module docstring."""

    def __init__(self, variables: TurnVariables, message: str, llm: LLMProvider) -> None:
        self._variables = variables
        self._message = message
        self._llm = llm

    async def __call__(self, step: ScenarioStep, *, use_llm: bool = True) -> list[str]:
        variables = self._variables
        for name in step.collects_fields:
            definition = variables.by_name.get(name)
            if definition is not None and definition.extraction_pattern:
                value = _pattern_value(definition.extraction_pattern, self._message)
                if value is not None:
                    variables.set(name, value, "extracted")
        missing = [n for n in step.collects_fields if not is_filled(variables.session.variables.get(n))]
        wanted = [
            variables.by_name[n]
            for n in missing
            if n in variables.by_name and variables.by_name[n].extract_with_llm
        ]
        if use_llm and wanted:
            for name, value in (await self._ask_model(wanted)).items():
                variables.set(name, value, "extracted")
            missing = [n for n in missing if not is_filled(variables.session.variables.get(n))]
        return missing

    async def _ask_model(self, wanted: Sequence[Variable]) -> dict[str, str]:
        # Python names of their own, the variable names as aliases: a variable may be named "_ref"
        # or "model_config", which pydantic refuses (or shadows) as a field name.
        fields: dict[str, Any] = {
            f"field_{i}": (str | None, Field(default=None, alias=v.name, description=v.description or v.name))
            for i, v in enumerate(wanted)
        }
        schema: type[BaseModel] = create_model("CollectedFields", **fields)
        listing = "\n".join(f"- {v.name}: {v.description or v.name}" for v in wanted)
        prompt = (
            "Extract these values from the customer's message. Leave a value null unless the "
            f"message states it.\n{listing}\n\nCustomer: {' '.join(self._message.split())}"
        )
        try:
            parsed, response = await self._llm.generate_structured(prompt, schema, max_tokens=256)
        except ProviderError as exc:
            _log.warning("variable_extraction_failed", error=type(exc).__name__, message=str(exc))
            return {}
        self._variables.usage += response.usage
        found: dict[str, str] = {}
        for i, variable in enumerate(wanted):
            value = getattr(parsed, f"field_{i}", None)
            if not isinstance(value, str) or not value.strip():
                continue
            if variable.extraction_pattern:
                matched = _pattern_value(variable.extraction_pattern, value)
                if matched is None:
                    continue
                value = matched
            found[variable.name] = value.strip()
        return found


def needed_texts(
    agent: Agent, matches: Sequence[RuleMatch], step: ScenarioStep | None, templates: Sequence[Template]
) -> list[str | None]:
    """The texts whose placeholders this turn may render or show the model."""
    attached = {tid for m in matches for tid in m.rule.attached_template_ids}
    if step is not None:
        attached.update(step.template_ids)
    return [
        agent.system_prompt,
        *(m.rule.action_text for m in matches),
        step.description if step is not None else None,
        *(t.text for t in templates if t.id in attached),
    ]


async def resolve_needed(
    variables: TurnVariables,
    runner: ToolRunner,
    config_store: ConfigStore,
    agent: Agent,
    matches: Sequence[RuleMatch],
    step: ScenarioStep | None,
    ledger: ToolLedger,
) -> None:
    """Run the resolvers of the variables this turn needs (see the module docstring)."""
    with_resolver = [v for v in variables.definitions if v.resolver_tool_id]
    if not with_resolver:
        return
    templates = await config_store.get_templates(agent.tenant_id, agent.id)
    needed = placeholder_names(needed_texts(agent, matches, step, templates))
    stale = [v for v in with_resolver if v.name in needed and variables.is_stale(v)]
    if not stale:
        return
    names = list(dict.fromkeys(v.resolver_tool_id for v in stale if v.resolver_tool_id))
    tools = {t.name: t for t in await usable_tools(config_store, agent.tenant_id, agent.id, names)}

    async def resolve(variable: Variable) -> None:
        tool = tools.get(variable.resolver_tool_id or "")
        if tool is None:
            return
        arguments = _arguments(tool.parameters, variables)
        if arguments is None:
            return  # a required argument is still unknown: nothing to ask yet
        made = await runner.call(
            tool, ledger.next_id("resolve"), arguments, source="resolver", round_number=0, ledger=ledger
        )
        if made.outcome.status == "ok":
            # A reused value is as old as the call that fetched it (see the module docstring).
            at = made.made_at if made.reused else None
            variables.set(variable.name, made.outcome.result, "resolver", at=at)

    await asyncio.gather(*(resolve(v) for v in stale))


def _arguments(parameters: Mapping[str, Any], variables: TurnVariables) -> dict[str, Any] | None:
    properties = parameters.get("properties")
    names = list(properties) if isinstance(properties, dict) else []
    required = parameters.get("required")
    required_names = set(required) if isinstance(required, list) else set()
    arguments: dict[str, Any] = {}
    for name in names:
        value = variables.value(name)
        if value is not None:
            arguments[name] = value
        elif name in required_names:
            return None
    return arguments
