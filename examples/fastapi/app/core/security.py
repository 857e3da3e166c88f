"""Password hashing and signed access tokens (stdlib only, for the example)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

from app.core.config import settings

ITERATIONS = 60_000  # password hashing is part of what an API suite's tests cost


def get_password_hash(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"{salt.hex()}${digest.hex()}"


def verify_password(password: str, hashed: str) -> bool:
    salt, _, digest = hashed.partition("$")
    again = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), ITERATIONS)
    return hmac.compare_digest(again.hex(), digest)


def create_access_token(subject: str, minutes: int = 60) -> str:
    body = base64.urlsafe_b64encode(json.dumps(
        {"sub": subject, "exp": time.time() + minutes * 60}).encode()).decode()
    return f"{body}.{_sign(body)}"


def read_access_token(token: str) -> str | None:
    body, _, signature = token.partition(".")
    if not hmac.compare_digest(signature, _sign(body)):
        return None
    claims = json.loads(base64.urlsafe_b64decode(body))
    return str(claims["sub"]) if claims["exp"] > time.time() else None


def _sign(body: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), body.encode(), "sha256").hexdigest()
