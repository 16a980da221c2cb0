"""Focal's configuration: one ``Settings`` object, built once at start-up.

Sources, highest priority first: keyword arguments, environment variables (prefix ``FOCAL_``,
nested sections joined with ``__``, e.g. ``FOCAL_DATABASE__POOL_MAX_SIZE=20``), an optional TOML
file (``Settings.load(config_file=...)`` or ``FOCAL_CONFIG_FILE``), then the defaults below.

Every section forbids unknown keys, so ``FOCAL_REDIS__HOT_TTL=60`` (misspelt) is an error at
start-up instead of a silently ignored setting. Vendor API keys are also read from their usual
names (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``) and kept as ``SecretStr``.

Stores and providers never read the environment: whoever builds them passes these values in.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The short names of the two server URLs, folded into ``database.url`` / ``redis.url``.
DATABASE_URL_VARIABLE = "FOCAL_DATABASE_URL"
REDIS_URL_VARIABLE = "FOCAL_REDIS_URL"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageBackend(StrEnum):
    """Where state lives. Chosen explicitly: Focal never falls back from one to another."""

    EMBEDDED = "embedded"  # start PostgreSQL + pgvector and a Redis-compatible server as children
    EXTERNAL = "external"  # use database.url and redis.url
    MEMORY = "memory"  # in-memory reference stores; nothing persists


class DatabaseSettings(_Section):
    url: str | None = Field(default=None, description="PostgreSQL DSN, e.g. postgresql://u:p@host/db")
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    command_timeout_seconds: float = Field(default=30.0, gt=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # 0 disables asyncpg's prepared-statement cache, required behind PgBouncer in transaction mode.
    statement_cache_size: int = Field(default=100, ge=0)


class RedisSettings(_Section):
    """The Redis (or Valkey, 7.0+) holding the sessions; see ``focal.bootstrap.create_redis_client``."""

    url: str | None = Field(default=None, description="redis://host:port/db")
    # A cluster-enabled server with cluster=false (or the reverse) is refused at start-up.
    cluster: bool = False
    key_prefix: str = Field(default="focal", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    hot_ttl_seconds: int = Field(default=1800, ge=1)
    max_age_seconds: int = Field(default=604800, ge=1)
    max_session_bytes: int = Field(default=1_048_576, ge=1024)
    # Per node for a cluster; callers beyond it wait (bounded by operation_timeout_seconds).
    max_connections: int = Field(default=50, ge=1)
    # One attempt's wait for connect or reply; a stalled attempt is then retried.
    socket_timeout_seconds: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    # Total time of one store operation: waiting for a connection, every attempt and back-off.
    operation_timeout_seconds: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    # Re-sends after a lost connection (e.g. closed by the server's idle `timeout`) or a socket
    # timeout; every command the session store sends is safe to send twice.
    retry_attempts: int = Field(default=3, ge=0, le=20)
    # Focal refuses to start (and /ready fails) unless every node has maxmemory-policy noeviction:
    # an evicting policy silently loses acknowledged sessions. true accepts that risk (logged).
    allow_eviction: bool = False


class EmbeddingSettings(_Section):
    provider: str = Field(default="hashing", description="hashing | openai")
    model: str | None = None
    dimensions: int = Field(default=1536, ge=1, le=16000)
    base_url: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)


class LLMSettings(_Section):
    provider: str = Field(default="offline", description="offline | anthropic | openai")
    model: str | None = None
    base_url: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    deadline_seconds: float = Field(default=120.0, gt=0)


class TurnSettings(_Section):
    """Thresholds and window sizes of the turn pipeline (``TurnConfig`` there is this model).

    The defaults suit the lexical hashing embedder; a semantic embedder scores related texts
    higher, so deployments using one usually raise the scores.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_min_score: float = Field(default=0.15, ge=-1.0, le=1.0)  # a rule must score this to match
    max_rules: int = Field(default=5, ge=0, le=1000)  # top k matched rules kept per turn
    rule_candidates: int = Field(default=20, ge=0, le=1000)  # fetched before the fires/cooldown filter
    scenario_entry_min_score: float = Field(default=0.2, ge=-1.0, le=1.0)
    transition_min_score: float = Field(default=0.15, ge=-1.0, le=1.0)
    memory_results: int = Field(default=3, ge=0, le=1000)  # recalled episodes offered to the LLM
    memory_min_score: float = Field(default=0.1, ge=-1.0, le=1.0)
    history_turns: int = Field(default=6, ge=0, le=1000)  # last N turns sent to the LLM as history
    # Step visits kept in Session.step_history (the latest ones; every move stays in the audit
    # trail as a scenario_entered / step_changed event). Bounds the session a looping scenario
    # would otherwise grow by one visit per turn, until the Redis session size cap refused it.
    max_step_history: int = Field(default=20, ge=1, le=1000)
    # Two messages of one conversation (agent + channel identity) at once: ``reject`` answers the
    # one that loses the session's version race with 409; ``enqueue`` makes the later one wait
    # (a lock per conversation, shared through Redis) and run as the next turn, its history
    # containing the first. See ``focal/alignment/turn/ordering.py``.
    concurrency: Literal["reject", "enqueue"] = "reject"
    # enqueue: how long a message waits for the conversation's earlier turn (then 409).
    enqueue_wait_seconds: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    # enqueue: the lock's lease, renewed every third of it while the turn runs; a process that
    # dies holding it frees the conversation after at most this long.
    enqueue_lease_seconds: float = Field(default=10.0, ge=0.05, le=3600, allow_inf_nan=False)
    # enqueue: runs of one message when another writer (an operator, a lost lease) still saved
    # the session first; each run re-reads the session and its history.
    enqueue_max_attempts: int = Field(default=3, ge=1, le=20)

    # Hard constraints (focal.alignment.turn.constraints). An answer that breaks one is generated
    # again, naming what it broke, at most this many times; then a FALLBACK template that passes
    # the checks answers, else ``constraint_safe_message``. A violating answer is never returned.
    constraint_retries: int = Field(default=1, ge=0, le=5)
    constraint_safe_message: str = Field(
        default="I'm sorry, I can't help with that here. Please contact our support team.",
        min_length=1,
        max_length=2000,
    )
    # Constraints with judge_instructions are verified by the LLM (one structured call per
    # candidate answer); false checks only their patterns (and says so in the turn record).
    constraint_judge: bool = True
    # One structured LLM call per turn asks which matched rules really apply to the message
    # ("I do NOT want a refund" does not fire the refund rule); the others are dropped before the
    # top max_rules are kept. Costs a model call per turn that matched a rule.
    relevance_check: bool = False

    @model_validator(mode="after")
    def _safe_message_is_text(self) -> Self:
        if not self.constraint_safe_message.strip() or "\x00" in self.constraint_safe_message:
            raise ValueError("constraint_safe_message must be text (not blank, no NUL character)")
        return self

    @model_validator(mode="after")
    def _candidates_cover_the_kept_rules(self) -> Self:
        if self.rule_candidates < self.max_rules:
            raise ValueError("rule_candidates must be >= max_rules")
        return self


_EXACT_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_HOST_ENTRY = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?)$")


class ToolsSettings(_Section):
    """Outbound tool calls (``focal.tools``) and the tool loop of a turn (``FOCAL_TOOLS__*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Hosts tools may call: "*" (any), "api.example.com", or "*.example.com" (the domain and its
    # subdomains). A JSON list or a comma-separated string. Redirects never leave a tool's origin.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ("*",)
    # Model rounds that may call tools in one turn; then one last call that may not (tool_choice none).
    max_rounds: int = Field(default=3, ge=1, le=10)
    # Calls the model may ask for in one round; the calls beyond are refused (status "invalid").
    max_calls_per_round: int = Field(default=8, ge=1, le=64)
    # A tool's response body is read up to this size; a larger one is an error outcome.
    max_response_bytes: int = Field(default=65_536, ge=1024, le=16_777_216)
    # Size of a call's result (and arguments) kept in TurnRecord.tools_executed; larger ones are cut.
    record_result_bytes: int = Field(default=4_096, ge=256, le=1_048_576)
    max_redirects: int = Field(default=3, ge=0, le=10)
    # Connections the shared HTTP client keeps open to tool servers, across every tenant.
    max_connections: int = Field(default=100, ge=1, le=10_000)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        if not hosts:
            raise ValueError("allowed_hosts is empty: list the hosts tools may call, or '*' for any")
        for host in hosts:
            if not _HOST_ENTRY.match(host):
                raise ValueError(
                    f"allowed_hosts entry {host!r} is not '*', a host name or '*.domain' "
                    "(no scheme, port or path)"
                )
        return hosts


# HS256 signs with HMAC-SHA256: a key shorter than its 32-byte output weakens every token
# (RFC 7518 section 3.2 requires at least 256 bits), and short secrets are the guessable ones.
JWT_SECRET_MIN_BYTES = 32


class AuthSettings(_Section):
    # Empty (e.g. an unset compose variable) means "not configured": `focal serve` then generates
    # one for the embedded default, and refuses to start with external servers.
    jwt_secret: SecretStr | None = None
    token_ttl_seconds: int = Field(default=86400, ge=60)

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None or not secret.get_secret_value().strip():
            return secret
        size = len(secret.get_secret_value().encode())
        if size < JWT_SECRET_MIN_BYTES:
            raise ValueError(
                f"FOCAL_AUTH__JWT_SECRET is {size} bytes; it must be at least {JWT_SECRET_MIN_BYTES} "
                "(HS256 key length). Generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'"
            )
        return secret


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)


class IdempotencySettings(_Section):
    """``Idempotency-Key`` on POST requests (``focal/api/idempotency.py``); kept in the session Redis
    (or in memory with ``storage=memory``)."""

    # How long a completed request's response is replayed for its key.
    ttl_seconds: int = Field(default=86400, ge=1, le=30 * 86400)
    # How long a key stays "in progress" when the process handling it dies before finishing; a
    # request with the same key meanwhile gets 409 idempotency_in_progress. Longer than any
    # request may take (the LLM deadline is 120 s by default).
    in_flight_seconds: int = Field(default=300, ge=1, le=86400)
    # Responses larger than this are not kept (logged): the key is released and a retry runs again.
    max_response_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)


class WebhookSettings(_Section):
    """Outgoing webhooks (``focal/webhooks/``): delivery bounds and which URLs endpoints may use."""

    timeout_seconds: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)  # per attempt
    max_attempts: int = Field(default=6, ge=1, le=50)
    # Backoff before attempt n+1: min(cap, base * 2**(n-1)), with full jitter.
    backoff_base_seconds: float = Field(default=1.0, gt=0, le=3600, allow_inf_nan=False)
    backoff_cap_seconds: float = Field(default=300.0, gt=0, le=86400, allow_inf_nan=False)
    # A process holds a delivery this long per attempt; a delivery whose holder died (lease
    # expired) is taken over by any process's sweep.
    lease_seconds: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)
    sweep_interval_seconds: float = Field(default=15.0, gt=0, le=3600, allow_inf_nan=False)
    # On shutdown, in-flight deliveries get this long to finish; the rest stay pending (and leased)
    # in the database and another (or the next) process resumes them once the lease expires.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=300, allow_inf_nan=False)
    # Endpoint URLs must be https unless this is true (development, loopback receivers).
    allow_http: bool = False
    # When not empty, an endpoint's host must be one of these (exact, case-insensitive); set it in
    # multi-tenant deployments so tenants cannot make Focal call internal services.
    allowed_hosts: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cap_covers_the_base(self) -> Self:
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError("webhooks.backoff_cap_seconds must be >= backoff_base_seconds")
        return self

    @model_validator(mode="after")
    def _lease_outlives_an_attempt(self) -> Self:
        # A delivery whose lease ran out is claimed by a sweep: one still in its attempt would be
        # sent twice at once (and its attempt count and outcome overwritten).
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError(
                "webhooks.lease_seconds must be greater than webhooks.timeout_seconds: a delivery "
                "is held for one attempt, and one held shorter is taken over while still being sent"
            )
        return self

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_exact_host_names(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _EXACT_HOST.match(host) and not _is_ip_address(host):
                raise ValueError(
                    f"webhooks.allowed_hosts entry {host!r} is not a host name or IP address: entries "
                    "match an endpoint URL's host exactly (no '*', scheme, port or path)"
                )
        return hosts


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_output: bool | None = Field(default=None, description="None: JSON unless stderr is a terminal")


class Settings(BaseSettings):
    """All of Focal's configuration. Build it once; pass the pieces down."""

    model_config = SettingsConfigDict(
        env_prefix="FOCAL_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    storage: StorageBackend = StorageBackend.EMBEDDED
    data_dir: Path = Path(".focal")

    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    llm: LLMSettings = LLMSettings()
    turn: TurnSettings = TurnSettings()
    tools: ToolsSettings = ToolsSettings()
    auth: AuthSettings = AuthSettings()
    server: ServerSettings = ServerSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    webhooks: WebhookSettings = WebhookSettings()
    logging: LoggingSettings = LoggingSettings()

    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("FOCAL_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")
    )
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("FOCAL_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    # The short names the documentation uses; folded into ``database.url`` / ``redis.url``.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices(DATABASE_URL_VARIABLE, "database_url"), exclude=True
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices(REDIS_URL_VARIABLE, "redis_url"), exclude=True
    )

    # Set by ``load`` before construction; read by ``settings_customise_sources``.
    _toml_file: ClassVar[Path | None] = None

    @model_validator(mode="after")
    def _fold_url_aliases(self) -> Self:
        for alias, section_name in ((self.database_url, "database"), (self.redis_url, "redis")):
            if alias is None:
                continue
            section: DatabaseSettings | RedisSettings = getattr(self, section_name)
            if section.url is not None and section.url != alias:
                raise ValueError(
                    "FOCAL_DATABASE_URL / FOCAL_REDIS_URL and FOCAL_DATABASE__URL / FOCAL_REDIS__URL "
                    "disagree: set only one of each pair"
                )
            # A copy, never an in-place change: the section may be the field's shared default.
            object.__setattr__(self, section_name, section.model_copy(update={"url": alias}))
        return self

    @model_validator(mode="after")
    def _relevance_check_needs_a_model(self) -> Self:
        # The offline provider answers every structured question with defaults ("does not
        # apply"): the check would silently drop every matched rule.
        if self.turn.relevance_check and self.llm.provider == "offline":
            raise ValueError(
                "FOCAL_TURN__RELEVANCE_CHECK needs a language model: set FOCAL_LLM__PROVIDER to "
                "anthropic or openai, or turn the check off"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = cls._toml_file
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build settings from overrides, the environment and an optional TOML file.

        ``config_file`` defaults to ``$FOCAL_CONFIG_FILE``; a named file that does not exist is
        an error rather than silently ignored.
        """
        from focal.errors import ConfigurationError

        path = config_file if config_file is not None else os.environ.get("FOCAL_CONFIG_FILE")
        toml_path = Path(path) if path else None
        if toml_path is not None and not toml_path.is_file():
            raise ConfigurationError(f"config file {toml_path} does not exist")
        previous = cls._toml_file
        cls._toml_file = toml_path
        try:
            return cls(**overrides)
        finally:
            cls._toml_file = previous
