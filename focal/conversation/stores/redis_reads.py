"""Index reads of the Redis session store: lists, channel lookup, step search.

Index entries are hints. Every entry is verified against the persistent copy of the session it
names (tenant, and that the session still belongs in that index); entries whose session is gone,
belongs to another tenant or no longer matches are removed from the index as they are met.
Lists and searches read the persistent copy (always current) and do not promote: browsing sessions
is not conversation activity. Callers run these inside the store's ``OperationGate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast
from uuid import UUID

from focal.conversation.models import Session
from focal.conversation.stores.redis_keys import SessionKeys, text
from focal.conversation.stores.session_codec import activity_order_key, parse_session
from focal.errors import InvalidDataError
from focal.logging import get_logger

_log = get_logger("focal.conversation.stores.redis")

CHUNK = 500  # sessions per pipeline when reading or checking many

Entries = list[tuple[bytes | str, float]]


async def load_sessions(client: Any, keys: SessionKeys, session_ids: list[str]) -> list[Session | None]:
    """The persistent copies of these sessions, in order (None where gone or unreadable).

    Read in chunks so a large index never becomes one huge pipeline reply in memory at once."""
    sessions: list[Session | None] = []
    for start in range(0, len(session_ids), CHUNK):
        pipe = client.pipeline(transaction=False)
        for session_id in session_ids[start : start + CHUNK]:
            pipe.get(keys.persist(session_id))
        for payload in await pipe.execute():
            try:
                sessions.append(parse_session(payload) if payload is not None else None)
            except InvalidDataError:
                _log.error("unreadable stored session dropped from an index read", error="invalid JSON")
                sessions.append(None)
    return sessions


class IndexReader:
    """Reads one tenant's index sorted sets, verifying and cleaning as it goes."""

    def __init__(self, client: Any, keys: SessionKeys, tenant_id: UUID) -> None:
        self._client = client
        self._keys = keys
        self._tenant_id = tenant_id

    async def _verified(
        self, session_ids: list[str], belongs: Callable[[Session], bool], stale: list[str]
    ) -> list[tuple[str, Session]]:
        """The sessions of these entries that exist, are this tenant's and belong in the index;
        the ids of the others are appended to ``stale``."""
        kept: list[tuple[str, Session]] = []
        for session_id, session in zip(
            session_ids, await load_sessions(self._client, self._keys, session_ids), strict=True
        ):
            if session is None or session.tenant_id != self._tenant_id or not belongs(session):
                stale.append(session_id)
            else:
                kept.append((session_id, session))
        return kept

    async def by_activity(
        self, key: str, *, belongs: Callable[[Session], bool], accept: Callable[[Session], bool], limit: int
    ) -> list[Session]:
        """Up to ``limit`` sessions of an index scored by last activity that ``belongs`` to it
        and are accepted, ordered by last activity desc then session id.

        Reads pages newest first, one entry more than the page (a peek at the next score), and
        stops once enough sessions are found. Entries tied with the last one read may still sort
        before it by session id: when the peek shows a tie, every entry of that score is read."""
        found: dict[str, Session] = {}
        stale: list[str] = []
        seen: set[str] = set()

        async def consider(entries: Iterable[tuple[bytes | str, float]]) -> None:
            ids = [m for m in (text(member) for member, _ in entries) if m not in seen]
            seen.update(ids)
            for session_id, session in await self._verified(ids, belongs, stale):
                if accept(session):
                    found[session_id] = session

        client = self._client
        start, page = 0, limit
        while True:
            # withscores=True: (member, score) pairs; redis-py's return type covers every variant.
            entries = cast(Entries, await client.zrevrange(key, start, start + page, withscores=True))
            batch, peek = entries[:page], entries[page:]
            await consider(batch)
            if not peek:
                break
            if len(found) >= limit:
                boundary = batch[-1][1]
                if peek[0][1] == boundary:
                    await consider(
                        cast(Entries, await client.zrangebyscore(key, boundary, boundary, withscores=True))
                    )
                break
            start += page
            page = min(page * 2, CHUNK)
        if stale:
            await client.zrem(key, *stale)
        return sorted(found.values(), key=activity_order_key)[:limit]

    async def latest(self, key: str, *, belongs: Callable[[Session], bool]) -> Session | None:
        """The session of the highest-scored entry (the latest save, by tick) that belongs."""
        stale: list[str] = []
        found: Session | None = None
        start, page = 0, 1
        while found is None:
            members = [text(m) for m in await self._client.zrevrange(key, start, start + page - 1)]
            if not members:
                break
            verified = await self._verified(members, belongs, stale)
            if verified:
                found = verified[0][1]
            start += page
            page = min(page * 2, CHUNK)
        if stale:
            await self._client.zrem(key, *stale)
        return found

    async def all_members(self, key: str, *, belongs: Callable[[Session], bool]) -> list[Session]:
        """Every session of the index that belongs to it (stale entries removed), by session id."""
        ids = sorted(text(m) for m in await self._client.zrange(key, 0, -1))
        stale: list[str] = []
        kept = [session for _, session in await self._verified(ids, belongs, stale)]
        if stale:
            await self._client.zrem(key, *stale)
        return sorted(kept, key=lambda s: s.session_id)
