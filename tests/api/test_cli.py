"""``focal serve`` planning (backend, secret, tenant) and ``focal token``, without starting servers."""

from __future__ import annotations

import socket
from pathlib import Path
from uuid import UUID, uuid4

import jwt
import pytest
from typer.testing import CliRunner

from focal.cli import app
from focal.errors import ConfigurationError
from focal.serve import Mode, load_settings, plan_serve

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FOCAL_"):
            monkeypatch.delenv(name)
    # The `focal` callback reconfigures logging process-wide (root handler and level); keep the
    # test session's configuration so these CLI tests do not change what later tests log.
    monkeypatch.setattr("focal.logging.configure_logging", lambda *args, **kwargs: None)


def test_embedded_default_keeps_secret_and_tenant(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = plan_serve(load_settings(data_dir=data_dir))
    assert first.mode is Mode.EMBEDDED
    assert first.settings.storage.value == "external"  # the servers it starts are used as external ones
    secret_file = data_dir / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "default_tenant").stat().st_mode & 0o777 == 0o600
    second = plan_serve(load_settings(data_dir=data_dir))
    assert first.settings.auth.jwt_secret == second.settings.auth.jwt_secret
    assert first.tenant_id == second.tenant_id is not None
    assert first.settings.auth.jwt_secret is not None
    assert len(first.settings.auth.jwt_secret.get_secret_value()) >= 64


def test_configured_secret_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_AUTH__JWT_SECRET", "from-the-environment-" + "s" * 40)
    plan = plan_serve(load_settings(data_dir=tmp_path))
    assert plan.settings.auth.jwt_secret is not None
    assert plan.settings.auth.jwt_secret.get_secret_value().startswith("from-the-environment-")
    assert not (tmp_path / "jwt_secret").exists()


def test_memory_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    plan = plan_serve(load_settings(data_dir=data_dir, memory=True))
    assert plan.mode is Mode.MEMORY
    assert plan.settings.auth.jwt_secret is not None
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({"FOCAL_DATABASE_URL": "postgresql://db/focal"}, "FOCAL_REDIS_URL is not set"),
        ({"FOCAL_REDIS_URL": "redis://cache:6379/0"}, "FOCAL_DATABASE_URL is not set"),
    ],
)
def test_half_configured_external_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], missing: str
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=missing):
        plan_serve(load_settings(data_dir=tmp_path))
    assert not tmp_path.joinpath("jwt_secret").exists()


def test_external_urls_start_nothing_and_need_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"FOCAL_DATABASE_URL": "postgresql://db/focal", "FOCAL_REDIS_URL": "redis://cache:6379/0"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match="FOCAL_AUTH__JWT_SECRET is required"):
        plan_serve(load_settings(data_dir=tmp_path))
    monkeypatch.setenv("FOCAL_AUTH__JWT_SECRET", "x" * 64)
    plan = plan_serve(load_settings(data_dir=tmp_path))
    assert plan.mode is Mode.EXTERNAL
    assert (plan.settings.database.url, plan.settings.redis.url) == (
        environ["FOCAL_DATABASE_URL"],
        environ["FOCAL_REDIS_URL"],
    )
    assert plan.tenant_id is None


def test_nested_variables_also_select_external(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_DATABASE__URL", "postgresql://db/focal")
    monkeypatch.setenv("FOCAL_REDIS__URL", "redis://cache:6379/0")
    monkeypatch.setenv("FOCAL_AUTH__JWT_SECRET", "x" * 64)
    assert plan_serve(load_settings(data_dir=tmp_path)).mode is Mode.EXTERNAL


def test_serve_with_half_a_configuration_exits_with_the_fix(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--data-dir", str(tmp_path)], env={"FOCAL_DATABASE_URL": "postgresql://db/focal"}
    )
    assert result.exit_code == 1
    assert "FOCAL_REDIS_URL is not set" in result.output


def test_token_uses_the_data_directory_secret(tmp_path: Path) -> None:
    plan = plan_serve(load_settings(data_dir=tmp_path))
    tenant = uuid4()
    result = runner.invoke(
        app, ["token", "--tenant", str(tenant), "--ttl", "120", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert plan.settings.auth.jwt_secret is not None
    claims = jwt.decode(
        result.stdout.strip(), plan.settings.auth.jwt_secret.get_secret_value(), algorithms=["HS256"]
    )
    assert UUID(claims["tenant_id"]) == tenant
    assert claims["exp"] - claims["iat"] == 120

    default = runner.invoke(app, ["token", "--data-dir", str(tmp_path)])
    assert default.exit_code == 0
    claims = jwt.decode(
        default.stdout.strip(), plan.settings.auth.jwt_secret.get_secret_value(), algorithms=["HS256"]
    )
    assert UUID(claims["tenant_id"]) == plan.tenant_id


def test_token_without_any_secret_fails_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "--tenant", str(uuid4()), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no JWT secret" in result.output


def test_token_rejects_bad_arguments(tmp_path: Path) -> None:
    plan_serve(load_settings(data_dir=tmp_path))
    not_uuid = runner.invoke(app, ["token", "--tenant", "acme", "--data-dir", str(tmp_path)])
    assert not_uuid.exit_code == 2
    negative = runner.invoke(
        app, ["token", "--tenant", str(uuid4()), "--ttl", "0", "--data-dir", str(tmp_path)]
    )
    assert negative.exit_code == 2


def test_serve_refuses_a_short_jwt_secret_with_a_clear_message(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:  # were the secret accepted: no endless serve
        port = str(taken.getsockname()[1])
        result = runner.invoke(
            app,
            ["serve", "--memory", "--port", port, "--data-dir", str(tmp_path)],
            env={"FOCAL_AUTH__JWT_SECRET": "s" * 31},
        )
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == [
        "error: invalid configuration:",
        "  auth.jwt_secret: Value error, FOCAL_AUTH__JWT_SECRET is 31 bytes; it must be at least 32 "
        "(HS256 key length). Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
    ]
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())
