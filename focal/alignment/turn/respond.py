"""Answering one turn: an EXCLUSIVE template, else the LLM, else (if the LLM failed) a FALLBACK template.

Template choice, most specific first:

- EXCLUSIVE: the first EXCLUSIVE template attached to a matched rule (rules in match order, each
  rule's ``attached_template_ids`` in order), else the first one in the current step's
  ``template_ids``. It is rendered and returned without calling the LLM.
- SUGGEST: every SUGGEST template attached to a matched rule or the current step is rendered and
  offered to the LLM.
- FALLBACK: when the LLM fails with a ``ProviderError`` (after the provider's own retries), the
  first FALLBACK template attached to a matched rule, else to the current step, else the agent's
  GLOBAL FALLBACK template (by name) answers. Without one the error propagates and the turn
  writes nothing.

Templates are only read from the agent's own templates, so an id pointing at another agent's (or
a deleted) template is ignored. They are loaded lazily: a turn that needs no template costs no
template query.

Rendering replaces ``{name}`` with the session variable ``name``, else the agent variable's
``default_value``; ``{name.key}`` (any depth; a digit indexes a list) reaches into an object such
as a resolver tool's result. Objects and lists render as JSON. A placeholder with no value stays
as written. It never raises.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from focal.alignment.models import ScenarioStep, Scope, Template, TemplateMode
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.retrieval import RuleMatch

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\}")


def _reach(value: Any, path: str) -> Any:
    for key in path.split(".")[1:]:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_template(text: str, variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``text`` with ``{name}`` / ``{name.path}`` placeholders filled from ``variables``, then
    ``defaults``."""

    def substitute(match: re.Match[str]) -> str:
        name, path = match.group(1), match.group(2)
        for source in (variables, defaults):
            value = _reach(source.get(name), path) if path else source.get(name)
            if value is not None:
                return _text(value)
        return match.group(0)

    return _PLACEHOLDER.sub(substitute, text)


class TemplateCatalog:
    """The agent's templates and variable defaults, read from the ConfigStore on first use."""

    def __init__(self, config_store: ConfigStore, tenant_id: UUID, agent_id: UUID) -> None:
        self._config_store = config_store
        self._tenant_id = tenant_id
        self._agent_id = agent_id
        self._templates: list[Template] | None = None
        self._defaults: dict[str, Any] = {}

    async def _load(self) -> list[Template]:
        if self._templates is None:
            templates, variables = await asyncio.gather(
                self._config_store.get_templates(self._tenant_id, self._agent_id),
                self._config_store.get_variables(self._tenant_id, self._agent_id),
            )
            self._templates = templates
            self._defaults = {v.name: v.default_value for v in variables if v.default_value is not None}
        return self._templates

    async def attached(
        self, mode: TemplateMode, matches: Sequence[RuleMatch], step: ScenarioStep | None
    ) -> list[Template]:
        """Templates of ``mode`` attached to the matched rules, then to the step, in that order."""
        wanted = _attached_ids(matches, step)
        if not wanted:
            return []
        by_id = {t.id: t for t in await self._load() if t.mode is mode}
        return [by_id[template_id] for template_id in wanted if template_id in by_id]

    async def agent_fallback(self) -> Template | None:
        """The agent-level FALLBACK: scope GLOBAL, mode FALLBACK, first by name."""
        for template in await self._load():
            if template.mode is TemplateMode.FALLBACK and template.scope is Scope.GLOBAL:
                return template
        return None

    async def render(self, template: Template, variables: Mapping[str, Any]) -> str:
        await self._load()
        return render_template(template.text, variables, self._defaults)


def _attached_ids(matches: Sequence[RuleMatch], step: ScenarioStep | None) -> list[UUID]:
    ordered: Iterable[UUID] = [tid for m in matches for tid in m.rule.attached_template_ids]
    if step is not None:
        ordered = [*ordered, *step.template_ids]
    seen: set[UUID] = set()
    unique: list[UUID] = []
    for template_id in ordered:
        if template_id not in seen:
            seen.add(template_id)
            unique.append(template_id)
    return unique


@dataclass(frozen=True)
class TemplateAnswer:
    template: Template
    text: str


async def exclusive_answer(
    catalog: TemplateCatalog,
    matches: Sequence[RuleMatch],
    step: ScenarioStep | None,
    variables: Mapping[str, Any],
) -> TemplateAnswer | None:
    found = await catalog.attached(TemplateMode.EXCLUSIVE, matches, step)
    if not found:
        return None
    return TemplateAnswer(found[0], await catalog.render(found[0], variables))


async def fallback_answer(
    catalog: TemplateCatalog,
    matches: Sequence[RuleMatch],
    step: ScenarioStep | None,
    variables: Mapping[str, Any],
) -> TemplateAnswer | None:
    found = await catalog.attached(TemplateMode.FALLBACK, matches, step)
    template = found[0] if found else await catalog.agent_fallback()
    if template is None:
        return None
    return TemplateAnswer(template, await catalog.render(template, variables))


async def suggested_texts(
    catalog: TemplateCatalog,
    matches: Sequence[RuleMatch],
    step: ScenarioStep | None,
    variables: Mapping[str, Any],
) -> list[str]:
    return [
        await catalog.render(t, variables)
        for t in await catalog.attached(TemplateMode.SUGGEST, matches, step)
    ]
