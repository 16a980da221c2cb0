"""Key layout of the Redis session store (design notes, stores.md §5).

``{...}`` parts are Redis Cluster hash tags: a session's keys hash on the session id and so share
one slot (one Lua script can write both tiers atomically); every index key of a tenant hashes on
the tenant id and so lives in that tenant's slot (one script, one node).

| key                                                     | type       | holds                              |
|---------------------------------------------------------|------------|------------------------------------|
| ``<p>:s:{<session_id>}:hot``                            | string     | the session, sliding hot TTL       |
| ``<p>:s:{<session_id>}:persist``                        | string     | the durable copy, max age          |
| ``<p>:s:{<session_id>}:deleted``                        | string     | tombstone of a delete (one minute) |
| ``<p>:t:{<tenant_id>}:agent:<agent_id>``                | sorted set | session ids by last activity       |
| ``<p>:t:{<tenant_id>}:customer:<profile_id>``           | sorted set | session ids by last activity       |
| ``<p>:t:{<tenant_id>}:channel:<channel>:<user_id>``     | sorted set | session ids by save order (tick)   |
| ``<p>:t:{<tenant_id>}:at-step:<scenario>:<ver>:<hash>`` | sorted set | sessions at the step, by tick      |
| ``<p>:t:{<tenant_id>}:registry``                        | sorted set | the tenant's index keys, by tick   |
| ``<p>:t:{<tenant_id>}:clock``                           | string     | the tenant's last save tick        |

A *tick* is the tenant's save sequence: microseconds of the Redis server's clock, forced to grow
by at least one per index update (a hybrid logical clock kept in ``clock``). It orders saves by
when they happened on the server, whatever the clocks of the Focal processes say, and it is also
a time, so entries older than the max age can be trimmed by score.

The channel index is a sorted set rather than a single "latest id" string so that deleting the
latest session of an identity falls back to the previous one, as the reference store does. The
registry lets ``purge_expired`` visit a tenant's index keys without a keyspace SCAN.

Layout history: before the integrity fixes the step index was a plain set named ``step:...`` and
the registry a plain set named ``indexes``; those keys are no longer written and expire by
themselves within one max age.
"""

from __future__ import annotations

from uuid import UUID

from focal.conversation.models import Channel, Session
from focal.errors import ConfigurationError


def text(value: bytes | str) -> str:
    """A key or member as ``str``, whatever the client's ``decode_responses`` setting."""
    return value.decode() if isinstance(value, bytes) else value


class SessionKeys:
    """Builds every key name from one configurable prefix."""

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"invalid Redis key prefix {prefix!r}: it must be non-empty and contain no braces "
                "(braces would change the cluster hash tags)"
            )
        self.prefix = prefix
        # The hot path (every get and save) builds its two tier keys as bytes from these, which
        # redis-py sends as they are; the ``str`` methods below are for everything else.
        self._session_head = f"{prefix}:s:{{".encode()

    def tier_keys(self, session_id: str) -> tuple[bytes, bytes]:
        """``hot(session_id)`` and ``persist(session_id)`` as bytes, built once per call."""
        tagged = b"".join((self._session_head, session_id.encode(), b"}:"))
        return tagged + b"hot", tagged + b"persist"

    def hot(self, session_id: UUID | str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:hot"

    def persist(self, session_id: UUID | str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:persist"

    def tombstone(self, session_id: UUID | str) -> str:
        return f"{self.prefix}:s:{{{session_id}}}:deleted"

    def tenant_prefix(self, tenant_id: UUID | str) -> str:
        return f"{self.prefix}:t:{{{tenant_id}}}:"

    def agent(self, tenant_id: UUID | str, agent_id: UUID | str) -> str:
        return f"{self.tenant_prefix(tenant_id)}agent:{agent_id}"

    def customer(self, tenant_id: UUID | str, customer_profile_id: UUID | str) -> str:
        return f"{self.tenant_prefix(tenant_id)}customer:{customer_profile_id}"

    def channel(self, tenant_id: UUID | str, channel: Channel, user_channel_id: str) -> str:
        return f"{self.tenant_prefix(tenant_id)}channel:{channel.value}:{user_channel_id}"

    def step(
        self, tenant_id: UUID | str, scenario_id: UUID | str, scenario_version: int, step_content_hash: str
    ) -> str:
        return f"{self.tenant_prefix(tenant_id)}at-step:{scenario_id}:{scenario_version}:{step_content_hash}"

    def registry(self, tenant_id: UUID | str) -> str:
        return f"{self.tenant_prefix(tenant_id)}registry"

    def clock(self, tenant_id: UUID | str) -> str:
        return f"{self.tenant_prefix(tenant_id)}clock"

    def indexes_of(self, session: Session) -> list[str]:
        """Every index (sorted set) that lists this session: agent, customer (if any), channel
        and step (if the session is at a step of a scenario)."""
        keys, _ = self.index_keys_of(session, str(session.tenant_id))
        return keys[:-2]  # without the registry and the clock

    def index_keys_of(self, session: Session, tenant: str) -> tuple[list[str], int]:
        """Every key the index update of a save touches, in the order the scripts take them:
        the indexes scored by last activity (agent, customer if any), the indexes scored by tick
        (channel, step if the session is at a step), the tenant's registry, the tenant's clock;
        and how many are scored by last activity. ``tenant`` is ``str(session.tenant_id)``,
        formatted once by the caller (``UUID.__str__`` is not free)."""
        # The same names as ``agent()`` ... ``clock()``, written out with the tenant's part
        # formatted once: this runs on every save.
        head = f"{self.prefix}:t:{{{tenant}}}:"
        keys = [f"{head}agent:{session.agent_id}"]
        if session.customer_profile_id is not None:
            keys.append(f"{head}customer:{session.customer_profile_id}")
        by_activity = len(keys)
        keys.append(f"{head}channel:{session.channel.value}:{session.user_channel_id}")
        scenario_id, scenario_version = session.active_scenario_id, session.active_scenario_version
        if scenario_id is not None and scenario_version is not None:
            step_hash = session.current_step_hash()
            if step_hash:
                keys.append(f"{head}at-step:{scenario_id}:{scenario_version}:{step_hash}")
        keys.append(f"{head}registry")
        keys.append(f"{head}clock")
        return keys, by_activity
