"""The prompt sent to the LLM for one turn.

The layout is plain text with one header per section, each followed by ``- `` bullets, and the
customer's message last on a ``Customer:`` line. The offline provider
(``focal.providers.llm.offline``) relies on exactly these headers: it answers with the
"Suggested responses:" bullets when there are some, else with the "Rules to follow:" bullets, else
it acknowledges the ``Customer:`` line. Real models read the same text as instructions.

"Known values:" lists the turn's variables as ``- name: value`` lines (session values, then the
agent's defaults): a real model reads them as facts, and the offline provider fills tool
arguments from them.

Hard constraints get their own section after the rules: a real model must obey them, and the
offline provider (which reads only the first two sections) does not recite them to the customer.
Every bullet is collapsed onto one line so a multi-line rule or template cannot break the list.

When an answer broke a hard constraint and is generated again (``constraints.py``), the prompt
gains a section after the hard constraints naming each broken constraint and how it was broken.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

RULES_HEADER = "Rules to follow:"
CONSTRAINTS_HEADER = "Hard constraints (never break these):"
CORRECTIONS_HEADER = "Your previous answer broke these hard constraints; answer again without breaking them:"
SUGGESTIONS_HEADER = "Suggested responses:"
MEMORY_HEADER = "What you remember about this customer from earlier conversations:"
SCENARIO_HEADER = "Current step of the conversation:"
KNOWN_VALUES_HEADER = "Known values:"
CUSTOMER_PREFIX = "Customer:"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _section(header: str, items: Sequence[str]) -> list[str]:
    bullets = [f"- {_one_line(item)}" for item in items if item.strip()]
    return [header, *bullets, ""] if bullets else []


def build_prompt(
    message: str,
    *,
    rule_actions: Sequence[str],
    hard_constraints: Sequence[str],
    suggestions: Sequence[str],
    memories: Sequence[tuple[datetime, str]],
    scenario_step: str | None,
    corrections: Sequence[str] = (),
    known_values: Sequence[tuple[str, str]] = (),
) -> str:
    """The user-side prompt of a turn; the agent's system prompt and the history travel separately."""
    lines: list[str] = []
    lines += _section(RULES_HEADER, rule_actions)
    lines += _section(CONSTRAINTS_HEADER, hard_constraints)
    lines += _section(CORRECTIONS_HEADER, corrections)
    lines += _section(SUGGESTIONS_HEADER, suggestions)
    if scenario_step:
        lines += _section(SCENARIO_HEADER, [scenario_step])
    lines += _section(KNOWN_VALUES_HEADER, [f"{name}: {value}" for name, value in known_values])
    lines += _section(MEMORY_HEADER, [f"({when:%Y-%m-%d}) {text}" for when, text in memories])
    lines.append(f"{CUSTOMER_PREFIX} {_one_line(message)}")
    return "\n".join(lines)
