"""Webhook signatures, the Standard Webhooks scheme (https://www.standardwebhooks.com/).

Every delivery carries three headers:

- ``webhook-id``: the event id (the same on every retry of the event: receivers deduplicate on it);
- ``webhook-timestamp``: when the attempt was signed, in Unix seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``"<webhook-id>.<webhook-timestamp>.<raw body>"``
  with the endpoint's secret.

The secret is ``whsec_`` followed by base64 of 32 random bytes; the HMAC key is those bytes. The
body is signed as sent (the raw bytes: a receiver must verify before parsing), and the id and
timestamp are signed with it, so a captured delivery cannot be replayed later or as another event:
receivers reject timestamps too far from their clock (``verify``'s ``tolerance_seconds``).
Libraries for this scheme exist for most languages (``standardwebhooks``, ``svix``); ``verify``
below is the reference for Python.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

__all__ = [
    "SECRET_PREFIX",
    "WebhookSignatureError",
    "generate_secret",
    "sign",
    "signed_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """A delivery whose signature, timestamp or headers do not verify."""


def generate_secret() -> str:
    """A new endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise WebhookSignatureError("the secret is not whsec_ followed by base64") from exc


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for ``body`` sent as ``message_id`` at ``timestamp``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
) -> str:
    """Check a received delivery; return its ``webhook-id``, or raise ``WebhookSignatureError``.

    ``headers`` with lower-case names (as Starlette, httpx and most servers give them); ``body``
    the raw bytes received; ``now`` the receiver's Unix time.
    """
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not message_id or not timestamp or not signatures:
        raise WebhookSignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise WebhookSignatureError("webhook-timestamp is not an integer") from exc
    if abs(now - sent_at) > tolerance_seconds:
        raise WebhookSignatureError("webhook-timestamp is too far from now")
    expected = sign(secret, message_id, sent_at, body)
    # Several space-separated signatures are allowed (e.g. during a secret rotation).
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise WebhookSignatureError("no signature matches")
    return message_id
