"""Media encryption at rest (stores/crypto.py): the sealed format, associated data, key wrapping,
the per-session key cache. The records store here is a dict (pure logic); the media suite in
tests/integration/test_media_stores.py runs the same code against the real stores."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from stream_ekyc.config import ConfigError, Settings
from stream_ekyc.stores import crypto
from stream_ekyc.stores.crypto import (MediaCryptoError, MediaShreddedError, SessionKeys, open_sealed,
                                       parse_master_key, seal, unwrap_key, wrap_key)
from stream_ekyc.stores.records import RecordsError


class DictKeys:
    """put/get/shred_session_key over a dict, with the records store's conflict rule."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.gets = 0

    async def put_session_key(self, session_id: str, key: bytes, now: float) -> None:
        if session_id in self.keys and self.keys[session_id] != key:
            raise RecordsError("a different key is stored")
        self.keys[session_id] = key

    async def get_session_key(self, session_id: str) -> bytes | None:
        self.gets += 1
        return self.keys.get(session_id)

    async def shred_session_key(self, session_id: str, now: float, reason: str) -> bool:
        return self.keys.pop(session_id, None) is not None


def test_sealed_format_and_associated_data():
    dk = crypto.new_data_key()
    blob = seal(dk, "ses_a", "ses_a/video/v.mp4", b"plaintext" * 10)
    assert blob[:3] == b"SEK" and blob[3] == crypto.VERSION
    assert len(blob) == crypto.HEADER_BYTES + 90 + crypto.TAG_BYTES and b"plaintext" not in blob
    assert open_sealed(dk, "ses_a", "ses_a/video/v.mp4", blob) == b"plaintext" * 10
    # a fresh nonce each time: the same plaintext never seals to the same bytes
    assert seal(dk, "ses_a", "ses_a/video/v.mp4", b"plaintext" * 10) != blob
    for sid, key in (("ses_b", "ses_a/video/v.mp4"), ("ses_a", "ses_a/video/w.mp4")):
        with pytest.raises(MediaCryptoError):
            open_sealed(dk, sid, key, blob)           # moved to another key or session
    with pytest.raises(MediaCryptoError):
        open_sealed(crypto.new_data_key(), "ses_a", "ses_a/video/v.mp4", blob)
    tampered = bytearray(blob)
    tampered[-20] ^= 1
    with pytest.raises(MediaCryptoError):
        open_sealed(dk, "ses_a", "ses_a/video/v.mp4", bytes(tampered))
    with pytest.raises(MediaCryptoError, match="version"):
        open_sealed(dk, "ses_a", "ses_a/video/v.mp4", b"SEK\x09" + blob[4:])
    with pytest.raises(MediaCryptoError, match="not a sealed"):
        open_sealed(dk, "ses_a", "ses_a/video/v.mp4", b"\xff\xd8\xff\xe0 a jpeg")


def test_large_objects_seal_in_a_worker_thread():
    dk = crypto.new_data_key()
    big = os.urandom(crypto.EXECUTOR_THRESHOLD + 1)

    async def go() -> bytes:
        [blob] = await crypto.seal_many_async(dk, "s", ["s/video/v"], [big])
        return await crypto.open_async(dk, "s", "s/video/v", blob)
    assert asyncio.run(go()) == big


def test_key_wrapping():
    master, dk = os.urandom(32), crypto.new_data_key()
    plain = wrap_key(None, "ses_a", dk)
    assert unwrap_key(None, "ses_a", plain) == dk == unwrap_key(master, "ses_a", plain)
    wrapped = wrap_key(master, "ses_a", dk)
    assert dk not in wrapped and unwrap_key(master, "ses_a", wrapped) == dk
    with pytest.raises(MediaCryptoError, match="MASTER_KEY"):
        unwrap_key(None, "ses_a", wrapped)
    with pytest.raises(MediaCryptoError):
        unwrap_key(os.urandom(32), "ses_a", wrapped)
    with pytest.raises(MediaCryptoError):
        unwrap_key(master, "ses_b", wrapped)          # a key row copied to another session
    with pytest.raises(MediaCryptoError, match="format"):
        unwrap_key(master, "ses_a", b"\x07" + dk)


def test_master_key_setting():
    raw = os.urandom(32)
    for text in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert parse_master_key(text) == raw
        assert Settings.from_env({"STREAM_EKYC_MASTER_KEY": text}).master_key == raw
    for bad in ("", "not base64!", base64.b64encode(os.urandom(16)).decode()):
        with pytest.raises(ConfigError) as e:
            Settings.from_env({"STREAM_EKYC_MASTER_KEY": bad})
        assert str(e.value).startswith("STREAM_EKYC_MASTER_KEY")
    s = Settings.from_env({"STREAM_EKYC_MASTER_KEY": base64.b64encode(raw).decode(),
                           "STREAM_EKYC_S3_SECRET_ACCESS_KEY": "s3cr3t-value"})
    assert base64.b64encode(raw).decode() not in repr(s) and repr(raw) not in repr(s) and "s3cr3t" not in repr(s)


def test_session_keys_create_once_cache_and_shred():
    async def go() -> None:
        store = DictKeys()
        master = os.urandom(32)
        keys = SessionKeys(store, master, cache_size=2)
        k1 = await keys.for_write("ses_a", 1.0)
        assert len(k1) == 32 and k1 not in store.keys["ses_a"]          # stored wrapped
        assert await keys.for_write("ses_a", 2.0) == k1 == await keys.for_read("ses_a")
        # concurrent first writes of one session agree on one key
        got = await asyncio.gather(*(keys.for_write("ses_b", 1.0) for _ in range(5)))
        assert len(set(got)) == 1
        # another instance (its own cache) reads the same key
        assert await SessionKeys(store, master).for_read("ses_b") == got[0]
        # bounded LRU: the third session evicts the least recently used
        await keys.for_write("ses_c", 1.0)
        assert keys.cached_sessions() == ["ses_b", "ses_c"]
        # shred: gone from the store and the cache
        assert await keys.shred("ses_b", 3.0, "test") and "ses_b" not in keys.cached_sessions()
        with pytest.raises(MediaShreddedError):
            await keys.for_read("ses_b")
        assert not await keys.shred("ses_b", 3.0, "test")
        with pytest.raises(MediaShreddedError):
            await keys.for_read("never_written")
    asyncio.run(go())


def test_session_key_race_with_another_instance():
    async def go() -> None:
        store = DictKeys()
        a, b = SessionKeys(store), SessionKeys(store)
        real_get = store.get_session_key
        first = True

        async def get_racing(session_id: str) -> bytes | None:
            nonlocal first
            got = await real_get(session_id)
            if first and got is None:   # the other instance stores its key between our get and put
                first = False
                await b.for_write(session_id, 1.0)
            return got
        store.get_session_key = get_racing  # type: ignore[method-assign]
        assert await a.for_write("ses_x", 1.0) == await b.for_read("ses_x")
    asyncio.run(go())


def test_cache_entries_expire():
    async def go() -> None:
        store = DictKeys()
        t = [0.0]
        keys = SessionKeys(store, ttl_s=60.0, monotonic=lambda: t[0])
        await keys.for_write("ses_a", 1.0)
        gets = store.gets
        await keys.for_read("ses_a")
        assert store.gets == gets                       # cached
        store.keys.pop("ses_a")                         # shredded by another instance
        t[0] = 61.0
        with pytest.raises(MediaShreddedError):
            await keys.for_read("ses_a")
    asyncio.run(go())
