"""The deterministic checks of a hard constraint: ``forbid_patterns`` and ``require_patterns``.

A hard-constraint rule (``Rule.is_hard_constraint``) may carry regular expressions that every
answer of a turn it applies to is checked against: an answer that matches a forbidden pattern, or
does not match a required one, violates the constraint (``pattern_violations``).

Patterns are RE2 syntax (google-re2), not Python ``re``. RE2 matches in time linear in the text,
whatever the pattern: there is no backtracking, so no pattern can take a turn hostage
("catastrophic backtracking" cannot happen), and no time bound is needed. The price is that
backreferences (``\\1``) and look-arounds (``(?=...)``, ``(?<!...)``) do not exist: such a pattern
is refused when the rule is written, with RE2's reason. Matching is case-sensitive unless the
pattern says ``(?i)``; ``search`` semantics (anywhere in the answer) unless anchored.

Limits, checked when a rule is written (``constraint_errors``; the API answers 422 naming the
pattern, a store raises ``InvalidDataError``): at most ``MAX_PATTERNS`` patterns per list, each
1..``MAX_PATTERN_LENGTH`` characters and compiling within ``MAX_PROGRAM_BYTES`` of RE2 memory
(a pattern such as ``(a{100}){100}`` is refused), ``judge_instructions`` at most
``MAX_JUDGE_INSTRUCTIONS_LENGTH`` characters. Checked on write, not on read (like scenario limits),
so a rule stored under looser limits still loads.

Compiled programs are cached per pattern text (``compiled``), so the checks of a turn cost only
the matching: about 2 µs per pattern on a few hundred characters (``benchmarks/turns.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from focal.patterns import MAX_PATTERN_LENGTH, MAX_PROGRAM_BYTES, CompiledPattern, PatternError, compiled

__all__ = [
    "MAX_JUDGE_INSTRUCTIONS_LENGTH",
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "MAX_PROGRAM_BYTES",
    "CompiledPattern",
    "ConstraintLike",
    "PatternError",
    "compiled",
    "constraint_errors",
    "pattern_violations",
]

MAX_PATTERNS = 20  # per list (forbid_patterns, require_patterns) of one rule
MAX_JUDGE_INSTRUCTIONS_LENGTH = 2_000  # characters


class ConstraintLike(Protocol):
    """The fields of a rule the checks read (a ``Rule``, or an API body)."""

    @property
    def forbid_patterns(self) -> Sequence[str]: ...

    @property
    def require_patterns(self) -> Sequence[str]: ...

    @property
    def judge_instructions(self) -> str | None: ...


def constraint_errors(rule: ConstraintLike) -> list[tuple[tuple[str | int, ...], str]]:
    """Why the rule's constraint fields cannot be stored: ``(location, message)`` pairs, the
    location naming the field and the pattern's index (empty when everything is fine)."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
    for field in ("forbid_patterns", "require_patterns"):
        patterns: Sequence[str] = getattr(rule, field)
        if len(patterns) > MAX_PATTERNS:
            errors.append(((field,), f"at most {MAX_PATTERNS} patterns, got {len(patterns)}"))
            continue
        for index, pattern in enumerate(patterns):
            try:
                compiled(pattern)
            except PatternError as exc:
                errors.append(((field, index), f"pattern {pattern[:100]!r}: {exc}"))
    instructions = rule.judge_instructions
    if instructions is not None and len(instructions) > MAX_JUDGE_INSTRUCTIONS_LENGTH:
        errors.append(
            (
                ("judge_instructions",),
                f"at most {MAX_JUDGE_INSTRUCTIONS_LENGTH} characters, got {len(instructions)}",
            )
        )
    if instructions is not None and not instructions.strip():
        errors.append((("judge_instructions",), "must not be blank (omit it, or null, for no judge)"))
    return errors


def pattern_violations(rule: ConstraintLike, text: str) -> list[str]:
    """How ``text`` breaks the rule's patterns, one sentence per broken pattern (empty: none)."""
    reasons = [
        f"matches the forbidden pattern {pattern!r}"
        for pattern in rule.forbid_patterns
        if compiled(pattern).search(text) is not None
    ]
    reasons += [
        f"does not match the required pattern {pattern!r}"
        for pattern in rule.require_patterns
        if compiled(pattern).search(text) is None
    ]
    return reasons
