"""Authentication: every /v1 route needs a valid HS256 token whose ``tenant_id`` claim is a UUID."""

from __future__ import annotations

import time
from uuid import uuid4

import jwt
import pytest

from focal.api.auth import mint_token
from tests.api.conftest import JWT_SECRET, ApiHarness


def _token(claims: dict[str, object], secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _assert_401(response: object) -> None:
    assert response.status_code == 401  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["error"]["code"] == "unauthorized"
    assert set(body["error"]) == {"code", "message", "details"}
    assert response.headers["www-authenticate"] == "Bearer"  # type: ignore[attr-defined]


async def test_missing_token_is_401(api: ApiHarness) -> None:
    response = await api.client.get("/v1/agents")
    _assert_401(response)
    assert response.json()["error"]["message"] == "missing bearer token"


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-jwt",
        f"Bearer {mint_token('another-secret-that-is-long-enough-0123456789', uuid4(), 600)}",
        f"Bearer {_token({'tenant_id': str(uuid4()), 'exp': int(time.time()) + 600}, JWT_SECRET, 'HS512')}",
        f"Bearer {_token({'tenant_id': str(uuid4())})}",  # no exp
        f"Bearer {_token({'exp': int(time.time()) + 600})}",  # no tenant claim
        f"Bearer {_token({'tenant_id': 'acme', 'exp': int(time.time()) + 600})}",  # not a UUID
    ],
    ids=["basic", "empty", "garbage", "bad-signature", "other-alg", "no-exp", "no-tenant", "tenant-not-uuid"],
)
async def test_bad_tokens_are_401(api: ApiHarness, authorization: str) -> None:
    response = await api.client.get("/v1/agents", headers={"Authorization": authorization})
    _assert_401(response)


async def test_expired_token_is_401(api: ApiHarness) -> None:
    expired = _token({"tenant_id": str(api.tenant_id), "exp": int(time.time()) - 5})
    response = await api.client.get("/v1/agents", headers={"Authorization": f"Bearer {expired}"})
    _assert_401(response)
    assert "expired" in response.json()["error"]["message"]


async def test_unsigned_token_is_401(api: ApiHarness) -> None:
    unsigned = jwt.encode(
        {"tenant_id": str(api.tenant_id), "exp": int(time.time()) + 600}, None, algorithm="none"
    )
    _assert_401(await api.client.get("/v1/agents", headers={"Authorization": f"Bearer {unsigned}"}))


async def test_rejected_write_changes_nothing(api: ApiHarness) -> None:
    response = await api.client.post("/v1/agents", json={"name": "sneaky"})
    _assert_401(response)
    _, total = await api.services.config_store.get_agents(api.tenant_id)
    assert total == 0


async def test_valid_token_names_the_tenant(api: ApiHarness) -> None:
    created = await api.client.post("/v1/agents", json={"name": "mine"}, headers=api.headers)
    assert created.status_code == 201
    assert created.json()["tenant_id"] == str(api.tenant_id)


async def test_ops_endpoints_need_no_token(api: ApiHarness) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    assert (await api.client.get("/ready")).status_code == 200
    assert (await api.client.get("/metrics")).status_code == 200


def test_mint_token_rejects_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        mint_token(JWT_SECRET, uuid4(), 0)
