"""API keys (per AppID) and single-use client tokens (per session).

Both are 32 random bytes from the OS CSPRNG, URL-safe base64, with a prefix that says what
they are (``sk_`` API key, ``ct_`` client token) so that log redaction and secret scanners
recognise them. Only their SHA-256 is stored. A slow password KDF (bcrypt, scrypt, argon2)
exists to make guessing *low-entropy* secrets expensive; these have 256 bits of entropy, so
a fast hash is already infeasible to invert and keeps the per-request check cheap. Hashes
are compared with ``hmac.compare_digest``.

Both travel as ``Authorization: Bearer <value>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import APP_ID, ApiError

if TYPE_CHECKING:
    from ..stores.records import RecordsStore

API_KEY_PREFIX = "sk_"
CLIENT_TOKEN_PREFIX = "ct_"
_SECRET_RE = re.compile(r"^(sk|ct)_[A-Za-z0-9_-]{43}$")


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_client_token() -> str:
    return CLIENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_app_id() -> str:
    return "app_" + secrets.token_hex(8)


def new_session_id() -> str:
    return "ses_" + secrets.token_urlsafe(16)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer(request: web.Request) -> str | None:
    """The Bearer value of the Authorization header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def well_formed(value: str, prefix: str) -> bool:
    return value.startswith(prefix) and bool(_SECRET_RE.match(value))


async def require_app(request: web.Request) -> str:
    """The AppID whose API key is in the request; 401 ``unauthorized`` otherwise."""
    from .app import RECORDS  # the app module defines the keys; imported late to avoid a cycle

    key = bearer(request)
    if key is None or not well_formed(key, API_KEY_PREFIX):
        raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer sk_…)",
                       headers={"WWW-Authenticate": 'Bearer realm="stream-ekyc"'})
    digest = hash_secret(key)
    app = await request.app[RECORDS].app_by_key_hash(digest)
    if app is None or not same_hash(app["api_key_hash"], digest) or app["disabled"]:
        raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer sk_…)",
                       headers={"WWW-Authenticate": 'Bearer realm="stream-ekyc"'})
    request[APP_ID] = app["app_id"]
    return str(app["app_id"])


def check_app_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise ValueError("app name must be 1 to 100 printable characters")
    return name


async def create_api_app(records: "RecordsStore", name: str, now: float) -> tuple[str, str]:
    """Register an AppID; returns (app_id, api_key). Only the key's hash is stored: the key
    itself exists once, in the return value."""
    key = new_api_key()
    app_id = new_app_id()
    await records.create_app(app_id, check_app_name(name), hash_secret(key), now)
    return app_id, key
