"""Write-time checks of hard constraints against templates: a template that would break a
constraint's patterns is refused (422) before it can ever be an answer.

Which templates a constraint is checked against here (its "write-time scope"):

- a GLOBAL constraint: every template of the agent, whatever its mode (EXCLUSIVE and FALLBACK
  templates are answers; a SUGGEST template is offered to the LLM as an answer to give);
- a SCENARIO constraint: the templates scoped to that scenario or to one of its steps;
- a STEP constraint: the templates scoped to that step.

Only enabled hard constraints with patterns count (a judge cannot be run at write time), and
templates are checked as written: ``{placeholders}`` are not rendered (a variable's value is
checked at turn time, where every candidate answer is checked again, ``focal.alignment.turn
.constraints``). A template a scoped constraint applies to by another route (a step listing a
template scoped elsewhere, a GLOBAL rule's template answering inside the scenario) is caught at
turn time too: a violating template is then replaced by a FALLBACK template or the safe message,
never sent.

When it runs:

- template create, and a template PATCH that changes its text or scope: against the agent's
  constraints whose write-time scope covers the template (``check_template``);
- rule create, and a rule PATCH that changes its patterns, enabled flag, hard-constraint flag or
  scope: the rule's patterns against every template in its write-time scope, and against the
  safe message (``FOCAL_TURN__CONSTRAINT_SAFE_MESSAGE``), which answers when nothing else may
  (``check_rule``).

Like the reference checks (``references.py``), this is not atomic with the save: a template
written concurrently with a constraint may slip past; the turn-time checks still hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from fastapi.exceptions import RequestValidationError

from focal.alignment.constraint_patterns import pattern_violations
from focal.alignment.models import Agent, Rule, Scope, Template
from focal.alignment.stores.config_store import ConfigStore

__all__ = ["ConstraintGuard"]


@dataclass(frozen=True)
class _Patterns:
    """One of a rule's pattern lists alone, so a refusal names the list that refused."""

    forbid_patterns: Sequence[str] = ()
    require_patterns: Sequence[str] = ()
    judge_instructions: str | None = None


def _refused(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "constraint_violation", "loc": ("body", field), "msg": message, "input": None}]
    )


class ConstraintGuard:
    """Checks one agent's templates and hard constraints against each other."""

    def __init__(self, store: ConfigStore, agent: Agent, safe_message: str) -> None:
        self._store = store
        self._agent = agent
        self._safe_message = safe_message
        self._scenario_of_step: dict[UUID, UUID] | None = None

    async def check_template(self, template: Template) -> None:
        """422 when ``template`` breaks a constraint whose write-time scope covers it."""
        constraints = await self._store.get_hard_constraints(self._agent.tenant_id, self._agent.id)
        for rule in constraints:
            if (rule.forbid_patterns or rule.require_patterns) and await self._covers(rule, template):
                reasons = pattern_violations(rule, template.text)
                if reasons:
                    raise _refused(
                        "text",
                        f"the template breaks the hard constraint {rule.name!r} ({rule.id}): "
                        f"it {'; it '.join(reasons)}",
                    )

    async def check_rule(self, rule: Rule) -> None:
        """422 when the constraint ``rule`` would be broken by the safe message or by a template
        in its write-time scope."""
        if not (rule.is_hard_constraint and rule.enabled and (rule.forbid_patterns or rule.require_patterns)):
            return
        lists = [
            ("forbid_patterns", _Patterns(forbid_patterns=rule.forbid_patterns)),
            ("require_patterns", _Patterns(require_patterns=rule.require_patterns)),
        ]
        for field, patterns in lists:
            reasons = pattern_violations(patterns, self._safe_message)
            if reasons:
                raise _refused(
                    field,
                    "the safe message that answers when nothing else may "
                    f"(FOCAL_TURN__CONSTRAINT_SAFE_MESSAGE) {'; and '.join(reasons)}: change the "
                    "patterns or the setting",
                )
        templates = await self._store.get_templates(self._agent.tenant_id, self._agent.id)
        for template in templates:
            if not await self._covers(rule, template):
                continue
            for field, patterns in lists:
                reasons = pattern_violations(patterns, template.text)
                if reasons:
                    raise _refused(
                        field,
                        f"template {template.name!r} ({template.id}, {template.mode.value}) "
                        f"{'; and '.join(reasons)}: change the template or the patterns",
                    )

    async def _covers(self, rule: Rule, template: Template) -> bool:
        if rule.scope is Scope.GLOBAL:
            return True
        if rule.scope is Scope.STEP:
            return template.scope is Scope.STEP and template.scope_id == rule.scope_id
        if template.scope is Scope.SCENARIO:
            return template.scope_id == rule.scope_id
        if template.scope is Scope.STEP and template.scope_id is not None:
            return (await self._step_scenarios()).get(template.scope_id) == rule.scope_id
        return False

    async def _step_scenarios(self) -> dict[UUID, UUID]:
        if self._scenario_of_step is None:
            scenarios = await self._store.get_scenarios(
                self._agent.tenant_id,
                self._agent.id,
                enabled_only=False,
                include_transition_embeddings=False,
            )
            self._scenario_of_step = {step.id: s.id for s in scenarios for step in s.steps}
        return self._scenario_of_step
