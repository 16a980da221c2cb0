"""``purge_expired`` of the Redis session store: drop index entries whose session is gone.

Index keys are found through the tenant's registry (never a keyspace SCAN) and handled in
batches: per batch, one pipeline reads the members of every index key, one (chunked) pipeline
checks which sessions still exist, one pipeline removes the rest and forgets index keys that
expired themselves. A few round trips per hundred index keys, however many entries they hold.
Callers run this inside the store's ``OperationGate``.

Normal saves already trim entries older than the max age from the keys they touch (see
``redis_scripts``); this sweep also catches entries of sessions deleted or expired early, in
indexes no save touches any more.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from focal.conversation.stores.redis_keys import SessionKeys, text

_INDEX_KEYS_PER_BATCH = 100
_SESSIONS_PER_PIPELINE = 500


async def purge_stale_index_entries(client: Any, keys: SessionKeys, tenant_id: UUID) -> int:
    """Remove entries of vanished sessions from every index of the tenant; return how many."""
    registry = keys.registry(tenant_id)
    index_keys = sorted(text(k) for k in await client.zrange(registry, 0, -1))
    removed = 0
    for start in range(0, len(index_keys), _INDEX_KEYS_PER_BATCH):
        batch = index_keys[start : start + _INDEX_KEYS_PER_BATCH]
        removed += await _purge_batch(client, keys, registry, batch)
    return removed


async def _purge_batch(client: Any, keys: SessionKeys, registry: str, index_keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in index_keys:
        pipe.zrange(key, 0, -1)
    members = [[text(m) for m in raw] for raw in await pipe.execute()]
    missing = await _missing_sessions(client, keys, sorted({m for ms in members for m in ms}))
    vanished = [key for key, key_members in zip(index_keys, members, strict=True) if not key_members]
    pipe = client.pipeline(transaction=False)
    removals = 0
    for key, key_members in zip(index_keys, members, strict=True):
        gone = [m for m in key_members if m in missing]
        if gone:
            removals += 1
            pipe.zrem(key, *gone)
    if vanished:  # index keys that expired (or were emptied) themselves
        pipe.zrem(registry, *vanished)
    if not removals and not vanished:
        return 0
    counts = await pipe.execute()
    return sum(int(count) for count in counts[:removals])


async def _missing_sessions(client: Any, keys: SessionKeys, session_ids: list[str]) -> set[str]:
    missing: set[str] = set()
    for start in range(0, len(session_ids), _SESSIONS_PER_PIPELINE):
        chunk = session_ids[start : start + _SESSIONS_PER_PIPELINE]
        pipe = client.pipeline(transaction=False)
        for session_id in chunk:
            pipe.exists(keys.persist(session_id))
        flags = await pipe.execute()
        missing.update(sid for sid, flag in zip(chunk, flags, strict=True) if not flag)
    return missing
