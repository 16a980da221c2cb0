"""Regular expressions written by tenants, run safely: RE2 (google-re2), never Python ``re``.

Tenants write patterns (hard-constraint checks, variable extraction, the ``pattern`` keyword of a
tool's parameter schema) that Focal runs on text customers and models write. Python's ``re``
backtracks, so a pattern like ``(a+)+$`` on a crafted message can take seconds to minutes of CPU
on the event loop. RE2 matches in time linear in the text, whatever the pattern, so no time bound
is needed; the price is that backreferences (``\\1``) and look-arounds (``(?=...)``) do not exist,
and such a pattern is refused when it is written, with RE2's reason.

``compiled(pattern)``: the RE2 program (cached per pattern text), or ``PatternError`` for a blank
pattern, one longer than ``MAX_PATTERN_LENGTH`` characters, one RE2 refuses, or one whose program
needs more than ``MAX_PROGRAM_BYTES`` of memory (``(a{100}){100}``). ``search`` semantics (anywhere
in the text) unless the pattern is anchored; case-sensitive unless it says ``(?i)``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

import re2

__all__ = ["MAX_PATTERN_LENGTH", "MAX_PROGRAM_BYTES", "CompiledPattern", "PatternError", "compiled"]

MAX_PATTERN_LENGTH = 500  # characters
MAX_PROGRAM_BYTES = 1 << 20  # RE2's memory budget for one compiled pattern

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern on stderr
_OPTIONS.max_mem = MAX_PROGRAM_BYTES


class PatternError(ValueError):
    """A pattern RE2 refuses, or one outside the limits; the message says why."""


class CompiledPattern(Protocol):
    """What Focal uses of a compiled RE2 pattern."""

    def search(self, text: str) -> Any: ...


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


@lru_cache(maxsize=4096)
def compiled(pattern: str) -> CompiledPattern:
    """The RE2 program of ``pattern`` (cached); ``PatternError`` when it is refused."""
    if not pattern.strip():
        raise PatternError("a pattern must not be empty or blank")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"a pattern has at most {MAX_PATTERN_LENGTH} characters, this one {len(pattern)}")
    try:
        program: CompiledPattern = re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        raise PatternError(f"not a valid RE2 pattern: {_reason(exc)}") from exc
    except UnicodeEncodeError as exc:  # a lone surrogate: not text RE2 (or PostgreSQL) can hold
        raise PatternError("a pattern must be Unicode text (it holds a lone surrogate)") from exc
    return program
