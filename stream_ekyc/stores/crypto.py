"""Encryption at rest for media objects: one AES-256-GCM data key per session.

Each media object is sealed with its session's 256-bit data key under a fresh random 96-bit
nonce; the associated data binds the ciphertext to its object key and session id, so a blob
copied to another key or session does not decrypt. A sealed object is::

    b"SEK" | version (1 byte, 0x01) | nonce (12 bytes) | ciphertext + GCM tag (16 bytes)

The data key exists only in the records store (``put_session_key``), optionally wrapped with
a master key from the settings (``STREAM_EKYC_MASTER_KEY``, AES-256-GCM as well). Shredding
it (``shred_session_key``) makes every copy of every object of the session unreadable, backups
included: nothing else can decrypt them. ``SessionKeys`` caches unwrapped keys in memory only,
in a small LRU whose entries also expire after ``ttl_s`` (so a key shredded by another instance
is not used here for long); a shred through this object drops the entry at once.

Sealing or opening more than ``EXECUTOR_THRESHOLD`` bytes runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from collections import OrderedDict
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .records import RecordsError

MAGIC = b"SEK"
VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + NONCE_BYTES
EXECUTOR_THRESHOLD = 1 << 20

# a stored (records-store) data key: 0x00 | key, or 0x01 | nonce | AESGCM(master, key)
_KEY_PLAIN = 0
_KEY_WRAPPED = 1


class MediaCryptoError(Exception):
    """An object or a stored key cannot be decrypted (tampered, wrong key or associated data)."""


class MediaShreddedError(MediaCryptoError):
    """The session's data key was deleted: its objects can never be decrypted again."""

    def __init__(self) -> None:
        super().__init__("the session's data key was shredded: the object is unreadable")


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def parse_master_key(value: str) -> bytes:
    """Base64 (standard or URL-safe) of exactly 32 bytes; ValueError otherwise (no echo of it)."""
    s = value.strip()
    try:
        raw = base64.b64decode(s + "=" * (-len(s) % 4), altchars=b"-_" if ("-" in s or "_" in s) else None,
                               validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected base64 of 32 random bytes") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"expected base64 of 32 random bytes, got {len(raw)} bytes")
    return raw


def _aad(session_id: str, key: str) -> bytes:
    return b"stream-ekyc/media/v1\x00" + session_id.encode() + b"\x00" + key.encode()


def seal(data_key: bytes, session_id: str, key: str, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + bytes([VERSION]) + nonce + AESGCM(data_key).encrypt(nonce, plaintext, _aad(session_id, key))


def open_sealed(data_key: bytes, session_id: str, key: str, blob: bytes) -> bytes:
    if len(blob) < HEADER_BYTES + TAG_BYTES or blob[:len(MAGIC)] != MAGIC:
        raise MediaCryptoError("not a sealed media object")
    if blob[len(MAGIC)] != VERSION:
        raise MediaCryptoError(f"unknown sealed-object version {blob[len(MAGIC)]}")
    nonce = blob[len(MAGIC) + 1:HEADER_BYTES]
    try:
        return AESGCM(data_key).decrypt(nonce, blob[HEADER_BYTES:], _aad(session_id, key))
    except InvalidTag:
        raise MediaCryptoError("object does not decrypt (wrong key, key or session, or tampered)") from None


async def seal_many_async(data_key: bytes, session_id: str, keys: list[str],
                          plaintexts: list[bytes]) -> list[bytes]:
    """``seal`` for several objects of one session: in one worker-thread hop when together
    they are large enough to be worth it, on the calling thread otherwise."""
    if sum(len(p) for p in plaintexts) > EXECUTOR_THRESHOLD:
        return await asyncio.to_thread(
            lambda: [seal(data_key, session_id, k, p) for k, p in zip(keys, plaintexts)])
    return [seal(data_key, session_id, k, p) for k, p in zip(keys, plaintexts)]


async def open_async(data_key: bytes, session_id: str, key: str, blob: bytes) -> bytes:
    if len(blob) > EXECUTOR_THRESHOLD:
        return await asyncio.to_thread(open_sealed, data_key, session_id, key, blob)
    return open_sealed(data_key, session_id, key, blob)


def _key_aad(session_id: str) -> bytes:
    return b"stream-ekyc/session-key/v1\x00" + session_id.encode()


def wrap_key(master_key: bytes | None, session_id: str, data_key: bytes) -> bytes:
    if master_key is None:
        return bytes([_KEY_PLAIN]) + data_key
    nonce = os.urandom(NONCE_BYTES)
    return bytes([_KEY_WRAPPED]) + nonce + AESGCM(master_key).encrypt(nonce, data_key, _key_aad(session_id))


def unwrap_key(master_key: bytes | None, session_id: str, stored: bytes) -> bytes:
    stored = bytes(stored)
    if len(stored) == 1 + KEY_BYTES and stored[0] == _KEY_PLAIN:
        return stored[1:]
    if len(stored) == 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES and stored[0] == _KEY_WRAPPED:
        if master_key is None:
            raise MediaCryptoError("session key is wrapped but STREAM_EKYC_MASTER_KEY is not set")
        try:
            return AESGCM(master_key).decrypt(stored[1:1 + NONCE_BYTES], stored[1 + NONCE_BYTES:],
                                              _key_aad(session_id))
        except InvalidTag:
            raise MediaCryptoError("session key does not unwrap with this master key") from None
    raise MediaCryptoError("stored session key has an unknown format")


class SessionKeys:
    """Per-session data keys: created on first write, kept in the records store, cached here.

    The records store must offer ``put_session_key``, ``get_session_key`` (None once shredded
    or never created) and ``shred_session_key``."""

    def __init__(self, records, master_key: bytes | None = None, *, cache_size: int = 128,
                 ttl_s: float = 60.0, monotonic: Callable[[], float] = time.monotonic):
        if master_key is not None and len(master_key) != KEY_BYTES:
            raise ValueError("master key must be 32 bytes")
        self.records = records
        self.master_key = master_key
        self.cache_size = cache_size
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._create_lock = asyncio.Lock()

    def _cached(self, session_id: str) -> bytes | None:
        hit = self._cache.get(session_id)
        if hit is None:
            return None
        if self._monotonic() - hit[1] > self.ttl_s:
            del self._cache[session_id]
            return None
        self._cache.move_to_end(session_id)
        return hit[0]

    def _remember(self, session_id: str, key: bytes) -> None:
        self._cache[session_id] = (key, self._monotonic())
        self._cache.move_to_end(session_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, session_id: str) -> None:
        self._cache.pop(session_id, None)

    def cached_sessions(self) -> list[str]:
        return list(self._cache)

    async def _load(self, session_id: str) -> bytes | None:
        """The cached key, else the stored one (unwrapped and cached); None when there is none."""
        key = self._cached(session_id)
        if key is None:
            stored = await self.records.get_session_key(session_id)
            if stored is None:
                return None
            key = unwrap_key(self.master_key, session_id, stored)
            self._remember(session_id, key)
        return key

    async def for_read(self, session_id: str) -> bytes:
        """The session's key; MediaShreddedError when there is none (shredded, or never made)."""
        key = await self._load(session_id)
        if key is None:
            raise MediaShreddedError()
        return key

    async def for_write(self, session_id: str, now: float) -> bytes:
        """The session's key, created (and stored) on first use. The stored key is read back
        after creating one, so concurrent writers (other instances too) agree on one key."""
        key = self._cached(session_id)
        if key is not None:
            return key
        async with self._create_lock:   # rare (once per session): one lock is enough
            key = await self._load(session_id)
            if key is None:
                try:
                    await self.records.put_session_key(session_id, wrap_key(self.master_key, session_id,
                                                                            new_data_key()), now)
                except RecordsError:    # another instance stored its key first: use that one
                    pass
                key = await self.for_read(session_id)
            return key

    async def shred(self, session_id: str, now: float, reason: str) -> bool:
        self.forget(session_id)
        try:
            return bool(await self.records.shred_session_key(session_id, now, reason))
        finally:
            self.forget(session_id)
