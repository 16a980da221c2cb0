"""The stores' own checks, run on a turn's records before the turn writes anything.

A turn writes to four stores one after another (``persist.py``). If a later store refused its
record after an earlier one had committed, the turn would be half-written: a session one turn
ahead of its audit trail, a rule fire used up, a profile created, events without their turn. So
every check any store applies to the turn's records runs first, on records built exactly as they
will be written, and a refusal (``InvalidDataError``) leaves every store as it was.

The checks are the stores' own functions (``focal/*/stores/checks.py``, the session codec), not
copies of them: a check added there applies here too. They run in three places:

- ``identity`` and ``message``: as soon as the message is embedded, before the LLM is paid for;
- ``answer``: on the LLM's answer, so that an answer no store can keep counts as an invalid
  provider response (a FALLBACK template may answer instead);
- ``writes``: on every record of the turn, just before the session save.

Backend limits that depend on the stored state rather than on the record (the Redis session size
cap, for one) are enforced by the session save itself, which is the first write: refusing there
still writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from focal.alignment.turn.persist import TurnWrites
from focal.alignment.turn.records import TurnDraft
from focal.audit.models import AuditEvent
from focal.audit.stores.checks import check_event, check_turn
from focal.conversation.stores.session_codec import checked_for_save
from focal.memory.models import Episode
from focal.memory.stores.checks import check_episode
from focal.profile.stores.checks import check_channel_user_id, check_field, check_field_name, coerce_channel


class TurnChecks:
    """The checks of the stores one turn writes to; ``memory_dimensions`` is the memory store's."""

    def __init__(self, *, memory_dimensions: int) -> None:
        self._memory_dimensions = memory_dimensions

    def identity(self, channel: Any, channel_user_id: str) -> None:
        """The channel identity as ``ProfileStore.get_or_create`` will receive it."""
        coerce_channel(channel)
        check_channel_user_id(channel_user_id)

    # The episode is built first: its model refuses text that is not valid Unicode (a lone
    # surrogate) with a clear message, before any check tries to serialise that text.

    def message(self, draft: TurnDraft) -> None:
        """The message as the customer's TURN episode and the turn record will hold it."""
        self.episodes([draft.episode(draft.message, draft.message_embedding, "customer", None)])
        check_turn(draft.record(""))

    def answer(self, draft: TurnDraft, text: str) -> None:
        """An answer as the agent's TURN episode and the turn record will hold it."""
        self.episodes([draft.episode(text, None, "agent", None)])
        check_turn(draft.record(text))

    def writes(self, writes: TurnWrites) -> None:
        """Every record of the turn, exactly as it will be written."""
        checked_for_save(writes.session)
        check_turn(writes.record)
        self.events(writes.events)
        self.episodes(writes.episodes)
        for profile_field in writes.profile_fields:
            check_field_name(profile_field.field_name)
            check_field(profile_field, profile_field.tenant_id, profile_field.profile_id)

    def events(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            check_event(event)

    def episodes(self, episodes: Sequence[Episode]) -> None:
        for episode in episodes:
            check_episode(episode, self._memory_dimensions)
