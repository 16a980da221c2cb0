"""Webhook signatures follow the Standard Webhooks scheme, byte for byte."""

from __future__ import annotations

import base64

import pytest

from focal.webhooks.signing import (
    SECRET_PREFIX,
    WebhookSignatureError,
    generate_secret,
    sign,
    signed_headers,
    verify,
)

# The reference vector of the Standard Webhooks specification (and of the svix libraries).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_matches_the_specifications_reference_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_a_generated_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith(SECRET_PREFIX) and first != second
    assert len(base64.b64decode(first.removeprefix(SECRET_PREFIX))) == 32


def test_verify_accepts_what_was_signed_and_returns_the_message_id() -> None:
    headers = signed_headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10) == SPEC_ID
    # Several signatures (a rotation): any one matching is enough.
    rotated = {**headers, "webhook-signature": f"v1,bm90LWl0 {headers['webhook-signature']}"}
    assert verify(SPEC_SECRET, rotated, SPEC_BODY, now=SPEC_TIMESTAMP) == SPEC_ID


@pytest.mark.parametrize(
    ("change", "now"),
    [
        ({"body": SPEC_BODY + b" "}, SPEC_TIMESTAMP),  # the body was altered
        ({"secret": generate_secret()}, SPEC_TIMESTAMP),  # another endpoint's secret
        ({"webhook-id": "msg_other"}, SPEC_TIMESTAMP),  # replayed as another event
        ({"webhook-timestamp": str(SPEC_TIMESTAMP + 1)}, SPEC_TIMESTAMP),  # a re-dated replay
        ({}, SPEC_TIMESTAMP + 301),  # too old
        ({}, SPEC_TIMESTAMP - 301),  # from the future
        ({"webhook-signature": ""}, SPEC_TIMESTAMP),
        ({"webhook-timestamp": "yesterday"}, SPEC_TIMESTAMP),
    ],
)
def test_verify_refuses_anything_altered_replayed_or_stale(change: dict[str, object], now: int) -> None:
    headers = signed_headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    body = change.pop("body", SPEC_BODY)
    secret = change.pop("secret", SPEC_SECRET)
    headers.update({k: str(v) for k, v in change.items()})
    with pytest.raises(WebhookSignatureError):
        verify(str(secret), headers, body if isinstance(body, bytes) else b"", now=now)
