"""``ToolMemo``: the tool calls made for one message, so that running its turn again does not make
them again.

With ``FOCAL_TURN__CONCURRENCY=enqueue`` a turn whose session changed under it is run again from
the start (``focal.alignment.turn.ordering``). The lost run wrote nothing, but its tool calls did
reach the operator's tools: calling them again would, say, create a second return label for the
one message the customer sent. So the runs of one message share one ``ToolMemo``, and each run
calls through its own ``MemoRun`` (``ToolMemo.run``):

- A call is keyed by its tool's name and its arguments (canonical JSON: key order and spacing do
  not matter), whoever asks for it (the model or a variable resolver).
- The n-th call of a key in a run reuses the n-th call of that key an earlier run made, with the
  outcome it had then (status, result, latency, the time it was made: ``MadeCall``); a call no
  earlier run made is sent and kept for the later runs. Counting per run leaves one run's own
  behaviour as it is without the memo: a model that asks twice for one call in a turn gets two
  calls, and a re-run that asks the same twice gets both back; a call with other arguments (the
  model asked for something else the second time) is sent.
- Only calls handed to the executor are kept, whatever their outcome (a timeout may have acted
  too). A call refused before it is sent (``invalid``) costs nothing and is checked again.
- A call an earlier run made that the last run did not make again (the model asked for something
  else this time) still happened: ``MemoRun.not_repeated`` lists them, with what they were sent
  with (``SentCall``), so the turn record shows every side effect of the message.

The memo lives as long as its message (``TurnOrdering.run``): nothing is kept across messages,
neither in the process nor in Redis. The runs of a message happen one after the other, in one
process, under the conversation's lock.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from focal.models import utc_now
from focal.tools.models import ToolOutcome

__all__ = ["MadeCall", "MemoRun", "SentCall", "ToolMemo", "call_key"]


@dataclass(frozen=True)
class SentCall:
    """What a sent call was asked with, kept with its outcome for ``MemoRun.not_repeated``:
    ``details`` is the caller's own description of it (the turn keeps its source and round)."""

    tool: str
    arguments: Any
    details: Any = None


@dataclass(frozen=True)
class MadeCall:
    """One call's outcome, and whether it was made by an earlier run of the message (``reused``)
    at ``made_at`` (when it was sent) rather than by this run."""

    outcome: ToolOutcome
    made_at: datetime
    reused: bool = False
    sent: SentCall | None = None


def call_key(tool: str, arguments: Any) -> str:
    """What makes two calls the same call: the tool, and the arguments as canonical JSON."""
    encoded = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"{tool}\x00{encoded}"


class ToolMemo:
    """The calls sent for one message: by key, by the index the run that sent it gave it."""

    def __init__(self) -> None:
        self._made: dict[str, dict[int, MadeCall]] = {}

    def run(self) -> MemoRun:
        """The view of one run of the message: it counts its own calls of each key."""
        return MemoRun(self)

    @property
    def sent(self) -> int:
        """How many calls were sent for the message so far."""
        return sum(len(made) for made in self._made.values())


class MemoRun:
    """One run's calls through the message's memo (see the module docstring)."""

    def __init__(self, memo: ToolMemo) -> None:
        self._memo = memo
        self._claimed: Counter[str] = Counter()

    async def call(
        self,
        tool: str,
        arguments: Any,
        send: Callable[[], Awaitable[ToolOutcome]],
        *,
        details: Any = None,
    ) -> MadeCall:
        """The outcome of the call: an earlier run's, or ``send()``'s, which is then kept (with
        ``details``, the caller's description of the call, for ``not_repeated``)."""
        key = call_key(tool, arguments)
        # Claimed before the first await: concurrent calls of one round each get their own index.
        index = self._claimed[key]
        self._claimed[key] += 1
        made = self._memo._made.setdefault(key, {})
        earlier = made.get(index)
        if earlier is not None:
            return MadeCall(earlier.outcome, earlier.made_at, reused=True)
        sent_at = utc_now()
        outcome = await send()
        made[index] = MadeCall(outcome, sent_at, sent=SentCall(tool, arguments, details))
        return made[index]

    def not_repeated(self) -> list[MadeCall]:
        """The calls earlier runs sent that this run has not made (again), in the order of their
        keys' first call and then of their index."""
        return [
            made[index]
            for key, made in self._memo._made.items()
            for index in sorted(made)
            if index >= self._claimed[key]
        ]
