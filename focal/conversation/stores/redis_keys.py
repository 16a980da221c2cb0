"""Key layout of the Redis session store (design notes, stores.md §5).

``{...}`` parts are Redis Cluster hash tags: a session's two tier keys hash on the session id and so
share one slot (one Lua script can write both atomically); every index key of a tenant hashes on the
tenant id and so lives in that tenant's slot (one pipeline, one node).

| key                                                    | type       | holds                          |
|--------------------------------------------------------|------------|--------------------------------|
| ``<p>:s:{<session_id>}:hot``                           | string     | the session, sliding hot TTL   |
| ``<p>:s:{<session_id>}:persist``                       | string     | the durable copy, max age      |
| ``<p>:t:{<tenant_id>}:agent:<agent_id>``               | sorted set | session ids by last activity   |
| ``<p>:t:{<tenant_id>}:customer:<profile_id>``          | sorted set | session ids by last activity   |
| ``<p>:t:{<tenant_id>}:channel:<channel>:<user_id>``    | sorted set | session ids by last activity   |
| ``<p>:t:{<tenant_id>}:step:<scenario>:<ver>:<hash>``   | set        | sessions currently at the step |
| ``<p>:t:{<tenant_id>}:indexes``                        | set        | names of the tenant's indexes  |

The channel index is a sorted set rather than a single "latest id" string so that deleting the
latest session of an identity falls back to the previous one, as the reference store does. The
``indexes`` registry lets ``purge_expired`` visit a tenant's index keys without a keyspace SCAN.
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
        return f"{self.tenant_prefix(tenant_id)}step:{scenario_id}:{scenario_version}:{step_content_hash}"

    def indexes_of(self, session: Session) -> tuple[list[str], str | None]:
        """The sorted-set indexes (agent, channel, customer if any) and the step set (if the
        session is at a step of a scenario) that list this session."""
        keys, ranked = self.index_keys_of(session, str(session.tenant_id))
        step_keys = keys[ranked:-1]  # the registry is last
        return keys[:ranked], step_keys[0] if step_keys else None

    def index_keys_of(self, session: Session, tenant: str) -> tuple[list[str], int]:
        """Every index key ``save`` updates for this session, in the order the index script takes
        them: the sorted sets (agent, channel, customer if any), the step set if the session is at
        a step, then the tenant's registry; and how many of them are sorted sets. ``tenant`` is
        ``str(session.tenant_id)``, formatted once by the caller (``UUID.__str__`` is not free)."""
        keys = [
            self.agent(tenant, session.agent_id),
            self.channel(tenant, session.channel, session.user_channel_id),
        ]
        if session.customer_profile_id is not None:
            keys.append(self.customer(tenant, session.customer_profile_id))
        ranked = len(keys)
        scenario_id, scenario_version = session.active_scenario_id, session.active_scenario_version
        if scenario_id is not None and scenario_version is not None:
            step_hash = session.current_step_hash()
            if step_hash:
                keys.append(self.step(tenant, scenario_id, scenario_version, step_hash))
        keys.append(self.registry(tenant))
        return keys, ranked

    def registry(self, tenant_id: UUID | str) -> str:
        return f"{self.tenant_prefix(tenant_id)}indexes"

    def index_kind(self, tenant_id: UUID | str, index_key: str) -> str:
        """``agent``, ``customer``, ``channel`` or ``step`` for an index key of this tenant."""
        rest = index_key.removeprefix(self.tenant_prefix(tenant_id))
        return rest.split(":", 1)[0]
