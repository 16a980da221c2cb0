"""``Settings``: defaults, environment (``FOCAL_``, nested ``__``), TOML, precedence, strictness."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from focal.errors import ConfigurationError
from focal.settings import Settings, StorageBackend

KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from an environment with no Focal settings and no vendor keys."""
    for name in list(os.environ):
        if name.startswith("FOCAL_") or name in KEY_VARIABLES:
            monkeypatch.delenv(name)
    yield


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "focal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = Settings.load()
    assert settings.storage is StorageBackend.EMBEDDED
    assert settings.data_dir == Path(".focal")
    assert settings.database.url is None and settings.database.pool_max_size == 10
    assert settings.redis.key_prefix == "focal" and settings.redis.hot_ttl_seconds == 1800
    assert settings.embedding.provider == "hashing" and settings.embedding.dimensions == 1536
    assert settings.llm.provider == "offline" and settings.llm.max_attempts == 3
    assert settings.server.host == "127.0.0.1" and settings.server.port == 8000
    assert settings.logging.level == "INFO" and settings.logging.json_output is None
    assert settings.auth.jwt_secret is None
    assert settings.anthropic_api_key is None and settings.openai_api_key is None


def test_environment_uses_focal_prefix_and_double_underscore_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_STORAGE", "memory")
    monkeypatch.setenv("FOCAL_DATABASE__POOL_MAX_SIZE", "20")
    monkeypatch.setenv("FOCAL_REDIS__CLUSTER", "true")
    monkeypatch.setenv("FOCAL_EMBEDDING__DIMENSIONS", "8")
    monkeypatch.setenv("FOCAL_LOGGING__LEVEL", "DEBUG")
    monkeypatch.setenv("POOL_MAX_SIZE", "99")  # no prefix: not ours
    settings = Settings.load()
    assert settings.storage is StorageBackend.MEMORY
    assert settings.database.pool_max_size == 20
    assert settings.redis.cluster is True
    assert settings.embedding.dimensions == 8
    assert settings.logging.level == "DEBUG"
    assert settings.redis.hot_ttl_seconds == 1800  # untouched keys of a section keep their default


def test_misspelt_key_in_a_section_from_the_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_REDIS__HOT_TTL", "60")  # the key is hot_ttl_seconds
    with pytest.raises(ValidationError) as caught:
        Settings.load()
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [("redis", "hot_ttl")]
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_misspelt_key_in_a_section_of_the_toml_file_is_an_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[database]\npool_max = 5\n")
    with pytest.raises(ValidationError) as caught:
        Settings.load(config_file=path)
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [("database", "pool_max")]
    assert "Extra inputs are not permitted" in str(caught.value)


def test_unknown_section_in_the_toml_file_is_an_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[databse]\nurl = 'postgresql://x'\n")
    with pytest.raises(ValidationError, match="databse"):
        Settings.load(config_file=path)


TOML = """
storage = "external"

[database]
url = "postgresql://focal@db/focal"
pool_max_size = 30

[redis]
url = "redis://cache:6379/0"
hot_ttl_seconds = 600

[server]
port = 9000
"""


def test_toml_file_by_argument(tmp_path: Path) -> None:
    settings = Settings.load(config_file=write_toml(tmp_path, TOML))
    assert settings.storage is StorageBackend.EXTERNAL
    assert settings.database.url == "postgresql://focal@db/focal" and settings.database.pool_max_size == 30
    assert settings.redis.url == "redis://cache:6379/0" and settings.redis.hot_ttl_seconds == 600
    assert settings.server.port == 9000
    assert settings.database.pool_min_size == 2  # keys absent from the file keep their default


def test_toml_file_from_focal_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_CONFIG_FILE", str(write_toml(tmp_path, TOML)))
    settings = Settings.load()
    assert settings.server.port == 9000 and settings.storage is StorageBackend.EXTERNAL


def test_argument_beats_focal_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_CONFIG_FILE", str(tmp_path / "absent.toml"))
    settings = Settings.load(config_file=write_toml(tmp_path, TOML))
    assert settings.server.port == 9000


def test_toml_is_read_only_by_load(tmp_path: Path) -> None:
    Settings.load(config_file=write_toml(tmp_path, TOML))
    assert Settings.load().server.port == 8000  # the file does not stick to later builds
    assert Settings().server.port == 8000


def test_environment_beats_toml_and_overrides_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(tmp_path, TOML)
    monkeypatch.setenv("FOCAL_SERVER__PORT", "9100")
    monkeypatch.setenv("FOCAL_REDIS__HOT_TTL_SECONDS", "60")
    settings = Settings.load(config_file=path)
    assert settings.server.port == 9100
    assert settings.redis.hot_ttl_seconds == 60
    assert settings.redis.url == "redis://cache:6379/0"  # sections merge key by key
    assert settings.database.pool_max_size == 30
    assert Settings.load(config_file=path, storage="memory").storage is StorageBackend.MEMORY


@pytest.mark.parametrize("from_environment", [False, True])
def test_missing_named_config_file_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, from_environment: bool
) -> None:
    missing = tmp_path / "nope.toml"
    if from_environment:
        monkeypatch.setenv("FOCAL_CONFIG_FILE", str(missing))
    with pytest.raises(ConfigurationError, match=r"nope\.toml does not exist"):
        Settings.load(config_file=None if from_environment else missing)


def test_vendor_keys_are_read_from_their_usual_names_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-very-secret")
    settings = Settings.load()
    assert isinstance(settings.anthropic_api_key, SecretStr)
    assert isinstance(settings.openai_api_key, SecretStr)
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-very-secret"
    assert settings.openai_api_key.get_secret_value() == "sk-openai-very-secret"
    shown = repr(settings) + str(settings) + repr(settings.anthropic_api_key) + str(settings.openai_api_key)
    shown += settings.model_dump_json()
    assert "very-secret" not in shown
    assert "**********" in shown


def test_prefixed_vendor_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_OPENAI_API_KEY", "sk-prefixed")
    settings = Settings.load()
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-prefixed"


def test_jwt_secret_is_a_secret_too(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "jwt-very-secret-" + "s" * 16  # 32 bytes, the minimum
    monkeypatch.setenv("FOCAL_AUTH__JWT_SECRET", secret)
    settings = Settings.load()
    assert settings.auth.jwt_secret is not None
    assert settings.auth.jwt_secret.get_secret_value() == secret
    assert secret not in repr(settings) + str(settings)


@pytest.mark.parametrize("secret", ["jwt-very-secret", "s" * 31, "é" * 15])
def test_jwt_secret_shorter_than_32_bytes_is_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("FOCAL_AUTH__JWT_SECRET", secret)
    with pytest.raises(ValidationError, match=r"FOCAL_AUTH__JWT_SECRET is \d+ bytes; it must be at least 32"):
        Settings.load()


@pytest.mark.parametrize("secret", ["", "   "])
def test_empty_jwt_secret_means_unset(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    """An empty value (e.g. an unset compose variable) is "not configured": `focal serve` decides."""
    monkeypatch.setenv("FOCAL_AUTH__JWT_SECRET", secret)
    auth = Settings.load().auth
    assert auth.jwt_secret is not None and not auth.jwt_secret.get_secret_value().strip()


@pytest.mark.parametrize(
    ("variable", "value", "location"),
    [
        ("FOCAL_SERVER__PORT", "70000", ("server", "port")),
        ("FOCAL_SERVER__PORT", "-1", ("server", "port")),
        ("FOCAL_REDIS__HOT_TTL_SECONDS", "-5", ("redis", "hot_ttl_seconds")),
        ("FOCAL_REDIS__HOT_TTL_SECONDS", "0", ("redis", "hot_ttl_seconds")),
        ("FOCAL_AUTH__TOKEN_TTL_SECONDS", "-1", ("auth", "token_ttl_seconds")),
        ("FOCAL_DATABASE__POOL_MAX_SIZE", "many", ("database", "pool_max_size")),
        ("FOCAL_EMBEDDING__DIMENSIONS", "0", ("embedding", "dimensions")),
        ("FOCAL_LLM__TIMEOUT_SECONDS", "0", ("llm", "timeout_seconds")),
        ("FOCAL_LOGGING__LEVEL", "LOUD", ("logging", "level")),
        ("FOCAL_REDIS__KEY_PREFIX", "has space", ("redis", "key_prefix")),
        ("FOCAL_STORAGE", "sqlite", ("storage",)),
    ],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, location: tuple[str, ...]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings.load()
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [location]


def test_invalid_value_in_toml_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="less than or equal to 65535"):
        Settings.load(config_file=write_toml(tmp_path, "[server]\nport = 70000\n"))


def test_invalid_override_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"redis\.hot_ttl_seconds"):
        Settings.load(redis={"hot_ttl_seconds": -1})


def test_short_url_variables_fill_the_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_DATABASE_URL", "postgresql://u@db.example/focal")
    monkeypatch.setenv("FOCAL_REDIS_URL", "redis://cache.example:6379/0")
    settings = Settings.load()
    assert settings.database.url == "postgresql://u@db.example/focal"
    assert settings.redis.url == "redis://cache.example:6379/0"
    assert Settings.model_fields["database"].default.url is None  # the shared default is untouched


def test_short_and_nested_url_variables_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_DATABASE_URL", "postgresql://u@one/focal")
    monkeypatch.setenv("FOCAL_DATABASE__URL", "postgresql://u@two/focal")
    with pytest.raises(ValidationError, match="disagree"):
        Settings.load()


def test_turn_thresholds_build_the_pipeline_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from focal.alignment.turn import TurnConfig

    monkeypatch.setenv("FOCAL_TURN__RULE_MIN_SCORE", "0.45")
    settings = Settings.load()
    assert isinstance(settings.turn, TurnConfig)  # the pipeline takes the settings section as is
    assert settings.turn.rule_min_score == 0.45
    assert settings.turn == TurnConfig(rule_min_score=0.45)  # every other threshold keeps its default


def test_turn_threshold_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_TURN__RULE_MIN_SCORE", "1.5")
    with pytest.raises(ValidationError, match="rule_min_score"):
        Settings.load()


def test_turn_thresholds_that_cannot_work_together_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_TURN__MAX_RULES", "30")  # more kept rules than the 20 candidates fetched
    with pytest.raises(ValidationError, match="rule_candidates must be >= max_rules"):
        Settings.load()
