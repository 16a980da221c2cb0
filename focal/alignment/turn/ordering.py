"""Two messages of one conversation at once: ``FOCAL_TURN__CONCURRENCY=reject`` or ``enqueue``.

A *conversation* is one channel identity talking to one agent (tenant, agent, channel,
``user_channel_id``): the turns that can read and save the same session.

- ``reject`` (the default): turns run as they come; the one that loses the session's version
  check gets ``ConcurrentTurnError`` (409) and leaves no trace. The client sends it again.
- ``enqueue``: a turn first takes the conversation's lock (``ConversationLocks``: Redis, so across
  every process), waiting up to ``enqueue_wait_seconds`` (then ``ConversationBusyError``, 409),
  and holds it until its writes are done. The next message then reads the session and the
  history the first one left: it becomes the next turn, with the first in its history, and the
  LLM is called once per message unless it runs again. Should the session still change under a
  turn (an operator's write, which takes no lock, or a lease lost by a stalled process), the turn
  is run again from
  the start, up to ``enqueue_max_attempts`` runs; each run re-reads everything, so nothing of a
  lost run survives (it wrote nothing), except its tool calls: those reached the outside world,
  so the runs of one message share a ``ToolMemo`` and a later run reuses the outcome of a call
  an earlier one made (same tool, same arguments) instead of making it again
  (``focal.tools.memo``): a message creates one return label, however often its turn runs.

Why a lock rather than retrying every loser: retrying alone pays one LLM call per attempt (two
racing messages cost three calls, n messages O(n²)), answers from a history that is about to be
stale, and lets a fast second message overtake a slow first one. The lock orders messages as they
arrive (waiters are served as the lock frees, not strictly first come first served across
processes) and the version check stays the only arbiter of correctness. Locking the conversation
rather than a session id also orders two first messages of a new customer, which have no session
id yet: the second finds the session the first opened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from focal.alignment.turn.models import TurnConfig, TurnRequest, TurnResult
from focal.conversation.locks import ConversationLocks
from focal.errors import ConcurrentTurnError, ConfigurationError
from focal.logging import get_logger
from focal.tools.memo import ToolMemo

__all__ = ["TurnOrdering", "conversation_key"]

_log = get_logger("focal.turn")


def conversation_key(request: TurnRequest) -> str:
    """The conversation a turn belongs to, within its tenant."""
    return f"{request.agent_id}:{request.channel.value}:{request.user_channel_id}"


class TurnOrdering:
    """Runs one turn under the configured concurrency policy (see the module docstring)."""

    def __init__(self, locks: ConversationLocks | None, config: TurnConfig) -> None:
        if config.concurrency == "enqueue" and locks is None:
            raise ConfigurationError("FOCAL_TURN__CONCURRENCY=enqueue needs conversation locks")
        self._locks = locks
        self._config = config

    async def run(
        self,
        request: TurnRequest,
        run_once: Callable[[TurnRequest, ToolMemo], Awaitable[TurnResult]],
        *,
        may_run_again: Callable[[], bool] = lambda: True,
    ) -> TurnResult:
        """``run_once`` under the policy, with the message's ``ToolMemo`` (one per call of
        ``run``, shared by its runs); ``may_run_again`` says whether a lost run may be run again
        (not when its answer was already streamed to the client: it would be sent twice)."""
        memo = ToolMemo()
        if self._config.concurrency == "reject" or self._locks is None:
            return await run_once(request, memo)
        config = self._config
        async with self._locks.hold(
            request.tenant_id,
            conversation_key(request),
            wait_seconds=config.enqueue_wait_seconds,
            lease_seconds=config.enqueue_lease_seconds,
        ):
            for attempt in range(1, config.enqueue_max_attempts + 1):
                try:
                    return await run_once(request, memo)
                except ConcurrentTurnError as exc:
                    if attempt == config.enqueue_max_attempts or not may_run_again():
                        raise
                    _log.info(
                        "turn run again: the session changed under it",
                        tenant_id=str(request.tenant_id),
                        attempt=attempt,
                        tool_calls_sent=memo.sent,  # reused by the next run when it asks again
                        error=str(exc),
                    )
        raise AssertionError("unreachable: the last attempt returns or raises")
