"""Settings of session control: turn concurrency, idempotency keys, webhooks (environment names,
defaults, refusals)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from focal.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("FOCAL_"):
            monkeypatch.delenv(name)
    yield


def test_defaults() -> None:
    settings = Settings.load()
    assert (settings.turn.concurrency, settings.turn.enqueue_wait_seconds) == ("reject", 30.0)
    assert (settings.idempotency.ttl_seconds, settings.idempotency.in_flight_seconds) == (86400, 300)
    webhooks = settings.webhooks
    assert (webhooks.allow_http, webhooks.allowed_hosts, webhooks.max_attempts) == (False, [], 6)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_TURN__CONCURRENCY", "enqueue")
    monkeypatch.setenv("FOCAL_TURN__ENQUEUE_WAIT_SECONDS", "5")
    monkeypatch.setenv("FOCAL_IDEMPOTENCY__TTL_SECONDS", "3600")
    monkeypatch.setenv("FOCAL_WEBHOOKS__ALLOWED_HOSTS", '["hooks.example.com"]')
    monkeypatch.setenv("FOCAL_WEBHOOKS__ALLOW_HTTP", "true")
    settings = Settings.load()
    assert (settings.turn.concurrency, settings.turn.enqueue_wait_seconds) == ("enqueue", 5.0)
    assert settings.idempotency.ttl_seconds == 3600
    assert (settings.webhooks.allowed_hosts, settings.webhooks.allow_http) == (["hooks.example.com"], True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FOCAL_TURN__CONCURRENCY", "queue"),
        ("FOCAL_TURN__ENQUEUE_WAIT_SECONDS", "0"),
        ("FOCAL_TURN__ENQUEUE_MAX_ATTEMPTS", "0"),
        ("FOCAL_IDEMPOTENCY__TTL_SECONDS", "0"),
        ("FOCAL_IDEMPOTENCY__MAX_RESPONSE_BYTES", "10"),
        ("FOCAL_WEBHOOKS__MAX_ATTEMPTS", "0"),
        ("FOCAL_WEBHOOKS__TIMEOUT_SECONDS", "inf"),
        ("FOCAL_WEBHOOKS__BACKOFF_CAP_SECONDS", "0.5"),  # below the 1 s base
        ("FOCAL_WEBHOOKS__RETRIES", "3"),  # misspelt
        # Entries that can never equal a URL's host (matching is exact): every endpoint refused.
        ("FOCAL_WEBHOOKS__ALLOWED_HOSTS", '["*.example.com"]'),
        ("FOCAL_WEBHOOKS__ALLOWED_HOSTS", '["https://hooks.example.com"]'),
        ("FOCAL_WEBHOOKS__ALLOWED_HOSTS", '["hooks.example.com:443"]'),
        # An attempt outliving its lease is claimed again by a sweep while still in flight.
        ("FOCAL_WEBHOOKS__TIMEOUT_SECONDS", "60"),  # = the 60 s lease
    ],
)
def test_values_that_cannot_work_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings.load()


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("FOCAL_WEBHOOKS__ALLOWED_HOSTS", '["*.example.com"]', "allowed_hosts entry '*.example.com'"),
        ("FOCAL_WEBHOOKS__TIMEOUT_SECONDS", "90", "webhooks.lease_seconds must be greater than"),
    ],
)
def test_refusals_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(named)):
        Settings.load()


def test_exact_webhook_hosts_and_addresses_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_WEBHOOKS__ALLOWED_HOSTS", '["hooks.example.com", "10.0.0.7", "::1"]')
    assert Settings.load().webhooks.allowed_hosts == ["hooks.example.com", "10.0.0.7", "::1"]
