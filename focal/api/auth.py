"""Bearer-token authentication: HS256 JWTs whose ``tenant_id`` claim says whose data a request sees.

The tenant comes from the token only, never from a path, query or body. A token needs ``exp``
(checked, with no leeway) and a ``tenant_id`` claim that is a UUID; anything else is a 401 that
does not say more than "invalid token" about why (the reason goes to the log).
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

import jwt
from fastapi import HTTPException
from pydantic import SecretStr

from focal.logging import get_logger

__all__ = ["ALGORITHM", "TENANT_CLAIM", "decode_tenant_id", "mint_token", "unauthorized"]

ALGORITHM = "HS256"
TENANT_CLAIM = "tenant_id"

_log = get_logger("focal.api.auth")


def _secret_value(secret: str | SecretStr) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def mint_token(
    secret: str | SecretStr, tenant_id: UUID, ttl_seconds: int, *, subject: str | None = None
) -> str:
    """A signed token for ``tenant_id`` that expires ``ttl_seconds`` from now."""
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    now = int(time.time())
    claims: dict[str, Any] = {TENANT_CLAIM: str(tenant_id), "iat": now, "exp": now + ttl_seconds}
    if subject is not None:
        claims["sub"] = subject
    return jwt.encode(claims, _secret_value(secret), algorithm=ALGORITHM)


def unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def decode_tenant_id(token: str, secret: str | SecretStr) -> UUID:
    """The tenant of a valid token; ``HTTPException(401)`` for a bad, expired or incomplete one."""
    try:
        claims = jwt.decode(
            token,
            _secret_value(secret),
            algorithms=[ALGORITHM],
            options={"require": ["exp", TENANT_CLAIM]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("the token has expired") from exc
    except jwt.InvalidTokenError as exc:
        _log.info("token rejected", reason=f"{type(exc).__name__}: {exc}")
        raise unauthorized("invalid token") from exc
    raw = claims.get(TENANT_CLAIM)
    try:
        return UUID(str(raw))
    except ValueError as exc:
        _log.info("token rejected", reason="tenant_id claim is not a UUID")
        raise unauthorized("invalid token") from exc
