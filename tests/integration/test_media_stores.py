"""One media suite over both backends (a local directory; SeaweedFS over S3 on 127.0.0.1) with
the real records store: put/get/list/delete, encryption at rest, crypto-shredding."""

from __future__ import annotations

import os

import pytest

from stream_ekyc.stores.crypto import EXECUTOR_THRESHOLD, MediaCryptoError, MediaShreddedError
from stream_ekyc.stores.media import MediaKeyError, MediaUnavailable
from tests.postgres_db import postgres_url  # noqa: F401 (fixture)

from .media_backends import Backend, Clock, backend, opened, records_url  # noqa: F401 (fixtures)

JPEG = b"\xff\xd8\xff\xe0" + b"face pixels " * 200
PACKET = b'{"frames": [1, 2, 3], "name": "Jane Planted-Name"}'




async def test_put_get_list_delete(backend, records_url):
    clock = Clock()
    async with opened(backend, records_url, clock) as (records, media):
        t0 = clock()
        k1 = await media.put("ses_a", "best_frame", "best.jpg", JPEG, "image/jpeg", t0 + 7200)
        k2 = await media.put("ses_a", "packet", "packet.json", PACKET, "application/json", t0 + 7200)
        k3 = await media.put("ses_b", "audit_frame", "audit_0.jpg", JPEG[:100], "image/jpeg", t0 + 60)
        assert (k1, k2, k3) == ("ses_a/best_frame/best.jpg", "ses_a/packet/packet.json", "ses_b/audit_frame/audit_0.jpg")
        assert await media.get(k1) == JPEG and await media.get(k2) == PACKET
        assert await media.exists(k3) and not await media.exists("ses_b/audit_frame/audit_1.jpg")
        assert await media.get("ses_b/audit_frame/audit_1.jpg") is None
        assert await media.list_session("ses_a") == [k1, k2] and await media.list_session("ses_c") == []
        row = await records.media_object(k1)
        assert (row["session_id"], row["kind"], row["size"], row["delete_at"]) == ("ses_a", "best_frame", len(JPEG), t0 + 7200)
        # rewrite: new bytes, the earliest deadline stays
        await media.put("ses_a", "packet", "packet.json", b"{}", "application/json", t0 + 9000)
        assert await media.get(k2) == b"{}" and (await records.media_object(k2))["delete_at"] == t0 + 7200

        clock.advance(10)
        assert await media.delete(k3, reason="retention") and not await media.exists(k3)
        assert not await media.delete(k3, reason="retention")          # already gone: no second log row
        assert await media.delete_session("ses_a", reason="deleted on request") == 2
        assert await media.list_session("ses_a") == [] and await backend.raw_keys() == []
        for k in (k1, k2):
            assert (await records.media_object(k))["deleted_reason"] == "deleted on request"
        assert await records.get_session_key("ses_a") is None           # shredded with the session
        log = [(d["what"], d["ref"], d["reason"]) for d in await records.deletions()]
        assert sorted(log) == sorted([("media", k3, "retention"), ("media", k1, "deleted on request"),
                                      ("media", k2, "deleted on request"), ("session_key", "ses_a", "deleted on request")])
        assert all(b"face" not in repr(d).encode() and "Jane" not in repr(d) for d in await records.deletions())
        for bad in ("../x/packet/a", "ses_a/packet", "ses_a/packet/../../x"):
            with pytest.raises(MediaKeyError):
                await media.get(bad)


async def test_put_many_stores_a_sessions_evidence_at_once(backend, records_url):
    """A session's evidence in one call: each object sealed, recorded with the deadline and
    readable, as ``put`` one by one would leave them; a bad key refuses the whole call
    before anything is written."""
    clock = Clock()
    async with opened(backend, records_url, clock, master_key=os.urandom(32)) as (records, media):
        big = os.urandom(EXECUTOR_THRESHOLD + 1)
        items = [("best_frame", "best.jpg", JPEG, "image/jpeg"), ("audit_frame", "audit_0.jpg", JPEG[:50], "image/jpeg"),
                 ("packet", "packet.json", PACKET, "application/json"), ("video", "challenge.webm", big, "video/webm")]
        keys = await media.put_many("ses_m", items, clock() + 7200)
        assert keys == ["ses_m/best_frame/best.jpg", "ses_m/audit_frame/audit_0.jpg", "ses_m/packet/packet.json",
                        "ses_m/video/challenge.webm"]
        for key, (_, _, data, _) in zip(keys, items):
            assert await media.get(key) == data
            raw = await backend.raw_read(key)
            assert raw is not None and raw[:4] == b"SEK\x01" and data[:40] not in raw
        rows = {r["key"]: r for r in await records.media_objects("ses_m")}
        assert {k: (rows[k]["size"], rows[k]["delete_at"]) for k in keys} == \
            {k: (len(d), clock() + 7200) for k, (_, _, d, _) in zip(keys, items)}
        before = await backend.raw_keys()
        for bad in ([("packet", "../x", PACKET, "application/json")],
                    [("packet", "p.json", PACKET, "application/json")] * 2):
            with pytest.raises(MediaKeyError):
                await media.put_many("ses_n", [("best_frame", "best.jpg", JPEG, "image/jpeg")] + bad, clock() + 60)
        assert await backend.raw_keys() == before and await records.media_objects("ses_n") == []
        assert await media.put_many("ses_n", [], clock() + 60) == []


async def test_a_sweep_between_the_deadline_row_and_the_bytes_leaves_nothing_behind(backend, records_url):
    """The deadline is recorded before the bytes are written; a sweeper that deletes the
    object in between finds no bytes, so the writer removes what it wrote after."""
    clock = Clock()
    async with opened(backend, records_url, clock) as (records, media):
        write = media._write_many

        async def swept_meanwhile(objects: list[tuple[str, bytes, str]]) -> None:
            assert await records.mark_media_deleted([objects[0][0]], clock(), "retention") == 1
            await write(objects)
        media._write_many = swept_meanwhile       # type: ignore[method-assign]
        key = await media.put("ses_r", "video", "challenge.mp4", JPEG, "video/mp4", clock() + 1)
        assert not await media.exists(key) and await backend.raw_keys() == []
        # of a session's evidence written at once, only the object swept meanwhile goes
        keys = await media.put_many("ses_r", [("best_frame", "best.jpg", JPEG, "image/jpeg"),
                                              ("packet", "packet.json", PACKET, "application/json")], clock() + 1)
        assert not await media.exists(keys[0]) and await media.get(keys[1]) == PACKET
        await media.remove(keys[1])
        media._write_many = write                 # type: ignore[method-assign]
        kept = await media.put("ses_r", "packet", "packet.json", PACKET, "application/json", clock() + 7200)
        assert await media.get(kept) == PACKET   # an ordinary write is untouched


async def test_objects_are_encrypted_at_rest(backend, records_url):
    clock = Clock()
    async with opened(backend, records_url, clock, master_key=os.urandom(32)) as (records, media):
        big = os.urandom(EXECUTOR_THRESHOLD + 4096)              # sealed in a worker thread
        ka = await media.put("ses_a", "packet", "packet.json", PACKET, "application/json", clock() + 7200)
        kb = await media.put("ses_a", "video", "challenge.mp4", big, "video/mp4", clock() + 7200)
        kc = await media.put("ses_c", "packet", "packet.json", PACKET, "application/json", clock() + 7200)
        raw_a = await backend.raw_read(ka)
        assert raw_a is not None and raw_a[:4] == b"SEK\x01"
        assert PACKET not in raw_a and b"Planted" not in raw_a and b"frames" not in raw_a
        raw_b = await backend.raw_read(kb)
        assert raw_b is not None and big[:64] not in raw_b and len(raw_b) == len(big) + 32
        assert await media.get(kb) == big
        stored_key = await records.get_session_key("ses_a")
        assert stored_key is not None and len(stored_key) > 32          # wrapped by the master key
        # the same plaintext in another session seals differently
        assert await backend.raw_read(kc) != raw_a
        # wrong associated data: the blob moved to another name, kind or session does not open
        for other in ("ses_a/packet/other.json", "ses_a/best_frame/packet.json", "ses_c/packet/packet.json"):
            await backend.raw_write(other, raw_a)
            with pytest.raises(MediaCryptoError):
                await media.get(other)
        # a tampered byte does not open either
        await backend.raw_write(ka, raw_a[:-1] + bytes([raw_a[-1] ^ 1]))
        with pytest.raises(MediaCryptoError):
            await media.get(ka)
        await backend.raw_write(ka, raw_a)
        assert await media.get(ka) == PACKET
        # another instance over the same stores (no cache) reads it with the same master key
        other = backend.store(records, clock, master_key=media.keys.master_key)
        await other.start()
        try:
            assert await other.get(ka) == PACKET
        finally:
            await other.close()


async def test_crypto_shredding_makes_a_raw_copy_unreadable(backend, records_url):
    clock = Clock()
    async with opened(backend, records_url, clock) as (records, media):
        key = await media.put("ses_a", "best_frame", "best.jpg", JPEG, "image/jpeg", clock() + 7200)
        backup = await backend.raw_read(key)                          # a backup copy, taken before
        assert backup is not None and await media.open(key, backup) == JPEG
        assert await media.shred_session_key("ses_a", "test: shred")
        # the object itself is still stored, but nobody can read it: not this instance ...
        assert await backend.raw_read(key) == backup
        assert await media.get(key) is None
        with pytest.raises(MediaShreddedError, match="shredded"):
            await media.open(key, backup)
        # ... nor a fresh instance, nor the backup restored into place
        fresh = backend.store(records, clock)
        await fresh.start()
        try:
            await backend.raw_write(key, backup)
            assert await fresh.get(key) is None
            with pytest.raises(MediaShreddedError):
                await fresh.open(key, backup)
        finally:
            await fresh.close()
        assert [(d["what"], d["ref"]) for d in await records.deletions()] == [("session_key", "ses_a")]
        assert not await media.shred_session_key("ses_a", "again")


async def test_unreachable_backend_is_a_clear_error(backend, tmp_path):
    if backend.kind == "local":
        store = backend.store(None)
        await store.start()
        await backend.go_down()
        try:
            with pytest.raises(MediaUnavailable):
                await store.remove("ses_a/packet/p.json")
            with pytest.raises(OSError):
                await store.ping()
        finally:
            await backend.come_back()
        return
    from stream_ekyc.stores.s3 import S3MediaStore
    from tests.s3_server import free_ports
    dead = S3MediaStore("media", "", None, endpoint_url=f"http://127.0.0.1:{free_ports(1)[0]}",
                        access_key_id="x", secret_access_key="y", attempts=2, backoff_s=0.01)
    with pytest.raises(MediaUnavailable) as e:
        await dead.start()
    assert "127.0.0.1" not in str(e.value) and "\n" not in str(e.value)
    await dead.close()


async def test_s3_lifecycle_backstop_merges_with_existing_rules(seaweedfs, tmp_path):
    from stream_ekyc.stores.s3 import lifecycle_rule_id
    backend = Backend("s3", tmp_path, seaweedfs)
    ours = lifecycle_rule_id(backend.prefix)
    c = seaweedfs.boto3_client()
    other_rule = {"ID": "someone-else", "Status": "Enabled", "Filter": {"Prefix": "elsewhere/"},
                  "Expiration": {"Days": 30}}
    c.put_bucket_lifecycle_configuration(Bucket=seaweedfs.bucket,
                                         LifecycleConfiguration={"Rules": [other_rule]})
    for _ in range(2):          # idempotent: a second start leaves one rule of ours
        store = backend.store(None)
        await store.start()
        await store.close()
        assert store.lifecycle_status == "set"
    rules = {r["ID"]: r for r in c.get_bucket_lifecycle_configuration(Bucket=seaweedfs.bucket)["Rules"]}
    assert set(rules) == {"someone-else", ours}
    assert rules[ours]["Expiration"] == {"Days": 1}
    assert rules[ours]["Filter"] == {"Prefix": backend.prefix}
    # a second deployment under another prefix of the same bucket adds its own rule
    other = Backend("s3", tmp_path / "other", seaweedfs)
    assert other.prefix != backend.prefix
    store = other.store(None)
    await store.start()
    await store.close()
    rules = {r["ID"]: r for r in c.get_bucket_lifecycle_configuration(Bucket=seaweedfs.bucket)["Rules"]}
    assert set(rules) == {"someone-else", ours, lifecycle_rule_id(other.prefix)}
    c.delete_bucket_lifecycle(Bucket=seaweedfs.bucket)
