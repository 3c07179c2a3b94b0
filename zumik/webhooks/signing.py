"""Standard Webhooks signing, exactly as the ``openai`` SDK verifies it.

Signing matches the ``openai`` SDK's ``webhooks.verify_signature`` byte for byte: the key is the
base64 after ``whsec_``, the MAC is HMAC-SHA256 over ``f"{webhook_id}.{timestamp}.{body}"``, the
header is ``v1,<base64>`` per active secret, space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks: 24 to 64 bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature, computed exactly as the openai SDK checks it."""
    key = (
        base64.b64decode(secret[len(SECRET_PREFIX) :])
        if secret.startswith(SECRET_PREFIX)
        else secret.encode()
    )
    signed = f"{webhook_id}.{timestamp}.{body.decode('utf-8')}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(
    active_secrets: list[str], webhook_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one signature per active secret, space-separated."""
    return " ".join(signature(s, webhook_id, timestamp, body) for s in active_secrets)
