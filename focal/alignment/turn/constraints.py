"""Hard constraints, enforced on every answer a turn gives.

Which constraints apply. Every enabled hard constraint (``Rule.is_hard_constraint``) of the
agent whose scope is active: GLOBAL ones on every turn, SCENARIO / STEP ones while the turn
answers from that scenario / step (``ConfigStore.get_hard_constraints``, read once per turn),
whether or not the message matched them, plus any matched hard constraint (the same rules, unless
one changed between the two reads). Fires and cooldowns do not apply to them: a constraint is
never used up. Their action texts go to the prompt's "Hard constraints" section
(``applicable_constraints``); they never count against ``max_rules``.

What is checked. Each candidate answer, in order:

- the deterministic checks of every applicable constraint (``forbid_patterns``,
  ``require_patterns``: ``focal.alignment.constraint_patterns``), on LLM answers and on template
  answers (EXCLUSIVE, FALLBACK; SUGGEST templates are checked when they are written, and the LLM
  answer built from them is checked here);
- for an LLM answer that passed those, the judge of every constraint with ``judge_instructions``
  (when ``constraint_judge`` is on): ONE ``generate_structured`` call with all of them
  (``JudgeVerdict``). The judge fails closed: a constraint it gives no verdict for, or a judge
  call that fails, counts as a violation (and is not regenerated: asking again cannot help while
  the answer cannot be judged); so does a constraint it says both violated and kept.

On a violation (``ConstraintEnforcer``, ``regenerate_until_compliant``, ``last_resort``):

1. an LLM answer is generated again with the broken constraints named in the prompt (at most
   ``constraint_retries`` times, default 1), each new answer checked the same way;
2. then a FALLBACK template (as ``respond.fallback_answer`` chooses it) answers if it passes the
   deterministic checks;
3. else ``constraint_safe_message`` answers. It must pass the deterministic checks too: the API
   refuses a constraint the safe message would break, and a safe message that breaks one anyway
   (the setting changed since) is a ``ConfigurationError``: a violating answer is never returned.

A violating EXCLUSIVE template goes straight to 2 (it was chosen to avoid the LLM). A provider
failure during a regeneration goes to 2 as well (the first generation's failure keeps its own
path: FALLBACK, else the error).

What is recorded. ``TurnRecord.constraints_checked`` (every applicable constraint and which checks
it has), ``TurnRecord.constraints_failed`` (every violation of every candidate, with its attempt
number and source), ``context_extracted["constraint_outcome"]`` ("passed", "regenerated",
"fallback_template", "safe_message"; absent when no constraint applied), and the audit events
``constraint_violation`` (one per broken constraint per candidate), ``constraint_judged`` (one per
judge call), ``response_regenerated`` (one per regeneration) and ``safe_message_used``. The tokens
of every call (discarded answers and judge calls included) are in the turn's usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from focal.alignment.constraint_patterns import pattern_violations
from focal.alignment.models import Rule
from focal.alignment.turn.models import TurnConfig
from focal.alignment.turn.records import Reply
from focal.alignment.turn.respond import TemplateAnswer
from focal.alignment.turn.retrieval import RuleMatch
from focal.audit.models import CheckedConstraint, ConstraintFailure, TokenCounts
from focal.errors import ConfigurationError, InvalidDataError, ProviderError
from focal.logging import get_logger
from focal.providers.llm.base import LLMProvider
from focal.validation import check_text

__all__ = [
    "ConstraintEnforcer",
    "ConstraintReport",
    "ConstraintVerdict",
    "JudgeVerdict",
    "Violation",
    "applicable_constraints",
    "deterministic_violations",
    "last_resort",
    "regenerate_until_compliant",
]

JUDGE_SYSTEM_PROMPT = (
    "You check an answer a customer-service agent is about to send against the agent's hard "
    "constraints. For every numbered constraint, say whether the answer violates it, and explain "
    "briefly. Judge only the answer, not the customer's message."
)


def applicable_constraints(always_on: Sequence[Rule], matches: Sequence[RuleMatch]) -> list[Rule]:
    """The always-on constraints, then any matched hard constraint not among them (by id)."""
    applied = {rule.id: rule for rule in always_on}
    for match in matches:
        if match.rule.is_hard_constraint:
            applied.setdefault(match.rule.id, match.rule)
    return list(applied.values())


@dataclass(frozen=True)
class Violation:
    """How one candidate answer broke one constraint. ``unjudgeable``: the judge could not
    decide (failed or gave no verdict), so generating again cannot help."""

    rule: Rule
    reasons: list[str]
    unjudgeable: bool = False


def deterministic_violations(constraints: Sequence[Rule], text: str) -> list[Violation]:
    """The pattern checks of ``constraints`` on ``text`` (no I/O; see benchmarks/turns.py)."""
    found: list[Violation] = []
    for rule in constraints:
        if rule.forbid_patterns or rule.require_patterns:
            reasons = pattern_violations(rule, text)
            if reasons:
                found.append(Violation(rule, reasons))
    return found


class ConstraintVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: int = Field(description="the constraint's number in the list")
    violated: bool = Field(description="true when the answer breaks this constraint")
    explanation: str = Field(description="one sentence: why it is broken or kept")


class JudgeVerdict(BaseModel):
    """The judge's answer: one verdict per numbered constraint."""

    model_config = ConfigDict(extra="forbid")

    verdicts: list[ConstraintVerdict]


def judge_prompt(message: str, answer: str, judged: Sequence[Rule]) -> str:
    constraints = "\n".join(
        f"{number}. {_one_line(rule.action_text)}\n"
        f"   How to check it: {_one_line(rule.judge_instructions or '')}"
        for number, rule in enumerate(judged, 1)
    )
    return (
        f"Hard constraints:\n{constraints}\n\n"
        f"Customer: {_one_line(message)}\n\n"
        f"Answer to check:\n{answer}\n\n"
        "Give one verdict per constraint number."
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _storable(text: str) -> bool:
    try:
        check_text(text, "judge explanation")
    except InvalidDataError:
        return False
    return True


@dataclass
class ConstraintReport:
    """What a turn's constraint checks found, for its records (``records.build_writes``)."""

    checked: list[CheckedConstraint]
    failures: list[ConstraintFailure]
    events: list[tuple[str, dict[str, Any]]]
    outcome: str


@dataclass
class ConstraintEnforcer:
    """One turn's checks: runs them and remembers what they found (``report``)."""

    llm: LLMProvider
    config: TurnConfig
    constraints: list[Rule]
    message: str
    attempts: int = 0
    failures: list[ConstraintFailure] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    extra_usage: TokenCounts = field(default_factory=TokenCounts)

    def checks_answers(self) -> bool:
        """Whether a candidate answer can be refused: some constraint has patterns, or a judge
        that will be asked. (A streamed answer is then buffered until it passed.)"""
        patterns = any(rule.forbid_patterns or rule.require_patterns for rule in self.constraints)
        return patterns or bool(self._judged())

    def _judged(self) -> list[Rule]:
        if not self.config.constraint_judge:
            return []
        return [rule for rule in self.constraints if rule.judge_instructions]

    async def check(self, text: str, *, source: str, judge: bool) -> list[Violation]:
        """The violations of the candidate ``text`` (from ``source``); recorded."""
        if not self.constraints:
            return []
        self.attempts += 1
        found = deterministic_violations(self.constraints, text)
        if not found and judge:
            found = await self._judge(text)
        for violation in found:
            failure = ConstraintFailure(
                rule_id=violation.rule.id,
                name=violation.rule.name,
                attempt=self.attempts,
                source=source,
                reasons=violation.reasons,
            )
            self.failures.append(failure)
            self.events.append(("constraint_violation", failure.model_dump(mode="json")))
        return found

    async def _judge(self, text: str) -> list[Violation]:
        judged = self._judged()
        if not judged:
            return []
        event: dict[str, Any] = {"attempt": self.attempts, "asked": [str(rule.id) for rule in judged]}
        self.events.append(("constraint_judged", event))
        try:
            verdict, response = await self.llm.generate_structured(
                judge_prompt(self.message, text, judged),
                JudgeVerdict,
                system_prompt=JUDGE_SYSTEM_PROMPT,
                max_tokens=200 + 100 * len(judged),
            )
        except ProviderError as exc:
            event.update(violated=event["asked"], error=f"{type(exc).__name__}: {exc}")
            get_logger("focal.turn").warning(
                "constraint_judge_failed", error=type(exc).__name__, message=str(exc)
            )
            reason = f"the judge could not be asked ({type(exc).__name__}), so the answer is not used"
            return [Violation(rule, [reason], unjudgeable=True) for rule in judged]
        self.extra_usage += TokenCounts(**response.usage.model_dump())
        # Fail closed on a judge that answers twice for one constraint: a "violated" verdict wins.
        by_number: dict[int, ConstraintVerdict] = {}
        for given in verdict.verdicts:
            if given.number not in by_number or (given.violated and not by_number[given.number].violated):
                by_number[given.number] = given
        found: list[Violation] = []
        for number, rule in enumerate(judged, 1):
            entry = by_number.get(number)
            if entry is None:
                found.append(Violation(rule, ["the judge gave no verdict for it"], unjudgeable=True))
            elif not _storable(entry.explanation):  # the model's text goes into the audit trail
                found.append(
                    Violation(rule, ["the judge's explanation is not storable text"], unjudgeable=True)
                )
            elif entry.violated:
                found.append(Violation(rule, [f"the judge found: {_one_line(entry.explanation)}"]))
        event.update(violated=[str(v.rule.id) for v in found], error=None)
        return found

    def discard(self, reply: Reply) -> None:
        """A candidate that will not be the answer: its tokens still count."""
        self.extra_usage += reply.usage

    def regenerating(self, violations: Sequence[Violation]) -> list[str]:
        """Record a regeneration; the prompt lines naming what the last answer broke."""
        self.events.append(
            (
                "response_regenerated",
                {"attempt": self.attempts + 1, "violated": [str(v.rule.id) for v in violations]},
            )
        )
        return [f"{v.rule.action_text} (your answer {'; '.join(v.reasons)})" for v in violations]

    def accept(self, reply: Reply, outcome: str) -> Reply:
        """``reply`` as the turn's answer, carrying every token spent and the report."""
        reply.usage += self.extra_usage
        if self.constraints:
            reply.constraints = self.report(outcome)
        return reply

    def report(self, outcome: str) -> ConstraintReport:
        judged = {rule.id for rule in self._judged()}
        return ConstraintReport(
            checked=[
                CheckedConstraint(
                    rule_id=rule.id,
                    name=rule.name,
                    patterns=len(rule.forbid_patterns) + len(rule.require_patterns),
                    judged=rule.id in judged,
                )
                for rule in self.constraints
            ],
            failures=list(self.failures),
            events=list(self.events),
            outcome=outcome,
        )

    def safe_message(self) -> str:
        """``constraint_safe_message``, which must pass the deterministic checks itself."""
        text = self.config.constraint_safe_message
        broken = deterministic_violations(self.constraints, text)
        if broken:
            names = ", ".join(repr(v.rule.name) for v in broken)
            raise ConfigurationError(
                f"the constraint safe message (FOCAL_TURN__CONSTRAINT_SAFE_MESSAGE) breaks the hard "
                f"constraint(s) {names}; change the message or the constraints"
            )
        self.events.append(
            ("safe_message_used", {"violated": sorted({str(f.rule_id) for f in self.failures})})
        )
        return text


async def regenerate_until_compliant(
    enforcer: ConstraintEnforcer,
    first: Reply,
    regenerate: Callable[[list[str]], Awaitable[Reply]],
) -> tuple[Reply | None, ProviderError | None]:
    """The first LLM answer that passes (``first``, then up to ``constraint_retries`` answers
    generated again with the broken constraints named), accepted; ``(None, error)`` when none
    passed (``error``: a provider failure that ended the regenerations)."""
    reply = first
    retries = enforcer.config.constraint_retries
    for attempt in range(retries + 1):
        violations = await enforcer.check(reply.text, source="llm", judge=True)
        if not violations:
            return enforcer.accept(reply, "passed" if attempt == 0 else "regenerated"), None
        enforcer.discard(reply)
        if attempt == retries or any(v.unjudgeable for v in violations):
            break
        try:
            reply = await regenerate(enforcer.regenerating(violations))
        except ProviderError as exc:
            return None, exc
    return None, None


async def last_resort(
    enforcer: ConstraintEnforcer,
    fallback: Callable[[], Awaitable[TemplateAnswer | None]],
    provider_error: ProviderError | None,
) -> Reply:
    """After the LLM (or an EXCLUSIVE template) gave no compliant answer: the FALLBACK template
    if it passes the deterministic checks, else the safe message."""
    found = await fallback()
    if found is not None and not await enforcer.check(found.text, source="fallback_template", judge=False):
        t = found.template
        reply = Reply(
            found.text,
            template_id=t.id,
            template_name=t.name,
            template_mode=t.mode.value,
            provider_error=provider_error,
        )
        return enforcer.accept(reply, "fallback_template")
    return enforcer.accept(Reply(enforcer.safe_message(), provider_error=provider_error), "safe_message")
