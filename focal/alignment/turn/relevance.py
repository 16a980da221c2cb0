"""The optional relevance check of matched rules: does each candidate really apply to the message?

Embeddings match words, not meaning: "I do NOT want a refund" is close to the condition "the
customer asks for a refund". With ``relevance_check`` on (``FOCAL_TURN__RELEVANCE_CHECK``, off by
default), the candidates that passed the score threshold and the fires filter go to the LLM in
ONE structured call (``generate_structured``, schema ``RelevanceVerdict``): numbered conditions
and the customer's message; the model says for each number whether it applies. Those it says do
not apply are dropped before the top ``max_rules`` are kept (``retrieval.retrieve_rules``), so
they neither answer nor count a fire.

- Hard constraints are not asked about: they apply to every turn of their scope anyway.
- A rule the verdict does not mention is kept (the check removes false matches; it does not
  invent a requirement that every rule be confirmed).
- A provider failure keeps every candidate: the turn goes on as it would without the check, and
  this is not silent: a warning is logged and the turn's ``relevance_checked`` event carries the
  error.

The outcome (``RelevanceOutcome``: which rules were asked about, which were dropped, the tokens)
goes into the turn's audit trail (``relevance_checked`` event) and token usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from focal.alignment.turn.retrieval import RuleMatch
from focal.audit.models import TokenCounts
from focal.errors import ProviderError
from focal.logging import get_logger
from focal.providers.llm.base import LLMProvider

__all__ = ["RelevanceCheck", "RelevanceOutcome", "RelevanceVerdict", "RuleApplies"]

SYSTEM_PROMPT = (
    "You decide which rules of a customer-service agent apply to the customer's latest message. "
    "A rule applies only when its condition is actually true for what the customer says. A "
    "negated, hypothetical or unrelated mention does not make it apply: 'I do NOT want a refund' "
    "does not match 'the customer asks for a refund'."
)
_TOKENS_PER_RULE = 40


class RuleApplies(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int = Field(description="the rule's number in the list")
    applies: bool = Field(description="true when the rule's condition holds for the customer's message")


class RelevanceVerdict(BaseModel):
    """The model's answer: one entry per numbered rule."""

    model_config = ConfigDict(extra="forbid")

    rules: list[RuleApplies]


@dataclass
class RelevanceOutcome:
    """What the check did in one turn."""

    asked: list[RuleMatch]
    dropped: list[RuleMatch] = field(default_factory=list)
    usage: TokenCounts = field(default_factory=TokenCounts)
    error: str | None = None

    def event(self) -> tuple[str, dict[str, Any]]:
        return (
            "relevance_checked",
            {
                "asked": [str(m.rule.id) for m in self.asked],
                "dropped": [{"rule_id": str(m.rule.id), "name": m.rule.name} for m in self.dropped],
                "error": self.error,
            },
        )


def relevance_prompt(message: str, candidates: list[RuleMatch]) -> str:
    conditions = "\n".join(
        f"{number}. {' '.join(m.rule.condition_text.split())}" for number, m in enumerate(candidates, 1)
    )
    return (
        f"Rules (number. condition):\n{conditions}\n\n"
        f"Customer: {' '.join(message.split())}\n\n"
        "For every rule number, say whether its condition applies to this message."
    )


class RelevanceCheck:
    """One turn's relevance check; ``keep`` is the ``retrieval.RelevanceFilter`` it plugs in."""

    def __init__(self, llm: LLMProvider, message: str) -> None:
        self._llm = llm
        self._message = message
        self.outcome: RelevanceOutcome | None = None

    async def keep(self, candidates: list[RuleMatch]) -> list[RuleMatch]:
        asked = [m for m in candidates if not m.rule.is_hard_constraint]
        if not asked:
            return candidates
        outcome = self.outcome = RelevanceOutcome(asked=asked)
        try:
            verdict, response = await self._llm.generate_structured(
                relevance_prompt(self._message, asked),
                RelevanceVerdict,
                system_prompt=SYSTEM_PROMPT,
                max_tokens=200 + _TOKENS_PER_RULE * len(asked),
            )
        except ProviderError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            get_logger("focal.turn").warning(
                "relevance_check_failed", error=type(exc).__name__, message=str(exc), kept=len(candidates)
            )
            return candidates
        outcome.usage = TokenCounts(**response.usage.model_dump())
        not_applying = {entry.number for entry in verdict.rules if not entry.applies}
        outcome.dropped = [m for number, m in enumerate(asked, 1) if number in not_applying]
        dropped_ids = {m.rule.id for m in outcome.dropped}
        return [m for m in candidates if m.rule.id not in dropped_ids]
