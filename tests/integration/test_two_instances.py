"""Two real ``stream-ekyc serve`` processes sharing one PostgreSQL database (fresh per test) and
one SeaweedFS bucket (a prefix of its own per test), configured through ``STREAM_EKYC_*``
variables only, driven through the REST API only.

* a session created on one instance is read, and its result and media fetched and deleted,
  through the other; API keys made by ``stream-ekyc apps create`` work on both;
* with a short media retention and both sweepers on, every expired object is deleted exactly
  once: once in the deletion log, once from the bucket (S3 ``DELETE`` requests counted per
  key and instance by a recording proxy), none missed, none left in the bucket;
* usage counted by both instances at once adds up exactly (``stream-ekyc usage``).

No test asserts on wall-clock durations: conditions are polled with generous timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import pytest

from tests.instances import Cluster, astronaut_jpeg, month_of
from tests.postgres_db import fresh_database

POLL_TIMEOUT_S = 90.0


@contextlib.contextmanager
def _clusters(base: Path, seaweedfs: Any) -> Iterator[Callable[..., Cluster]]:
    """``make(**settings)`` (blocking: call it in a thread) → two started instances over a
    fresh database and bucket prefix. At the end: both stop cleanly on SIGTERM, their logs hold
    no traceback, the databases are dropped."""
    started: list[Cluster] = []
    with contextlib.ExitStack() as stack:
        def make(**kw: Any) -> Cluster:
            db_url = stack.enter_context(fresh_database())
            c = Cluster(base / f"cluster{len(started)}", db_url, seaweedfs, **kw)
            started.append(c)
            return c.start()
        yield make
        for c in started:
            codes = c.stop()
            logs = c.logs()
            assert all(code == 0 for code in codes.values()), f"exit codes {codes}: {logs[-4000:]}"
            assert "Traceback" not in logs, logs[-4000:]


@pytest.fixture
def cluster(tmp_path: Path, seaweedfs: Any) -> Iterator[Callable[..., Cluster]]:
    with _clusters(tmp_path, seaweedfs) as make:
        yield make


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, seaweedfs: Any) -> Iterator[Cluster]:
    """Two instances with the default settings, shared by the tests that do not expire media
    (each makes its own apps, so their counts stay their own)."""
    with _clusters(tmp_path_factory.mktemp("pair"), seaweedfs) as make:
        yield make()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=60),
                                 connector=aiohttp.TCPConnector(limit=32))


async def create_session(http: aiohttp.ClientSession, base: str, key: str, photo: bytes | None = None) -> dict:
    body: dict[str, Any] = {"locale": "en"}
    if photo is not None:
        body["id_photo"] = base64.b64encode(photo).decode()
    async with http.post(f"{base}/v1/sessions", json=body, headers=auth(key)) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def poll(condition: Callable[[], Any], timeout_s: float = POLL_TIMEOUT_S, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s:.0f} s")
        await asyncio.sleep(every_s)


async def test_a_session_created_on_one_instance_is_served_by_the_other(pair):
    c = pair
    a, b = c.instances
    app_id, key = await asyncio.to_thread(c.create_app, "two instances")
    photo = astronaut_jpeg()
    async with client() as http:
        # the key made by the CLI works on both; a wrong key on neither
        for inst in (a, b):
            async with http.get(f"{inst.base_url}/v1/sessions/ses_nope", headers=auth(key)) as r:
                assert r.status == 404
            async with http.get(f"{inst.base_url}/v1/sessions/ses_nope", headers=auth("sk_" + "x" * 43)) as r:
                assert r.status == 401
        created = await create_session(http, a.base_url, key, photo)
        sid = created["session_id"]
        views = {}
        for inst in (b, a):
            async with http.get(f"{inst.base_url}/v1/sessions/{sid}", headers=auth(key)) as r:
                assert r.status == 200, await r.text()
                views[inst.name] = await r.json()
        assert views["A"] == views["B"]
        assert views["B"]["status"] == "created" and views["B"]["session_id"] == sid

        async with c.records() as records, c.media(records) as media:
            # the ID photo and its embedding: recorded with their deadline, sealed in the shared bucket
            objs = await records.media_objects(sid)
            assert sorted(o["kind"] for o in objs) == ["id_photo", "id_photo"]
            raw = await asyncio.to_thread(c.bucket_objects)
            assert {o["key"] for o in objs} <= set(raw)
            photo_key = next(o["key"] for o in objs if o["key"].endswith(".jpg"))
            assert raw[photo_key][:3] == b"SEK" and photo not in raw[photo_key]
            assert await media.get(photo_key) == photo      # instance A's key opens it elsewhere

            # what the live pipeline of instance A writes at the end of a session (no WebRTC here):
            # the best frame in the shared bucket, the result in the shared database
            best = astronaut_jpeg(quality=70)
            await media.put(sid, "best_frame", "best.jpg", best, "image/jpeg", delete_at=time.time() + 3600)
            result = {"verdict": "live", "confidence": 97, "reasons": [], "timings": {"verdict_ms": 120}}
            assert await records.update_session(sid, expected_state="created", now=time.time(),
                                                state="done", result=result)

        for inst in (b, a):
            async with http.get(f"{inst.base_url}/v1/sessions/{sid}", headers=auth(key)) as r:
                body = await r.json()
                assert r.status == 200 and body["status"] == "done"
                assert body["result"]["verdict"] == "live"
                assert body["result"]["best_frame"] == f"{inst.base_url}/v1/sessions/{sid}/best-frame"
            async with http.get(f"{inst.base_url}/v1/sessions/{sid}/best-frame", headers=auth(key)) as r:
                assert r.status == 200 and r.content_type == "image/jpeg"
                assert await r.read() == best

        # deleted through B: gone for A too
        async with http.delete(f"{b.base_url}/v1/sessions/{sid}", headers=auth(key)) as r:
            assert r.status == 200 and (await r.json())["deleted"] == 3
        async with http.get(f"{a.base_url}/v1/sessions/{sid}/best-frame", headers=auth(key)) as r:
            assert r.status == 410 and (await r.json())["error"]["code"] == "media_deleted"
    assert not [k for k in await asyncio.to_thread(c.bucket_keys) if k.startswith(sid + "/")]


async def test_both_sweepers_delete_every_expired_object_exactly_once(cluster):
    n_sessions = 24
    c = await asyncio.to_thread(cluster, media_ttl_s=3.0, retention_interval_s=0.5, record_s3=True)
    a, b = c.instances
    app_id, key = await asyncio.to_thread(c.create_app, "sweepers")
    photo = astronaut_jpeg()
    async with client() as http:
        created = await asyncio.gather(*(create_session(http, (a, b)[i % 2].base_url, key, photo)
                                         for i in range(n_sessions)))
    sids = [s["session_id"] for s in created]

    async with c.records() as records:
        expected: set[str] = set()
        for sid in sids:
            objs = await records.media_objects(sid)
            assert len(objs) == 2
            expected |= {o["key"] for o in objs}

        async def all_deleted() -> bool:
            for sid in sids:
                if any(o["deleted_at"] is None for o in await records.media_objects(sid)):
                    return False
            return True
        await poll(all_deleted)

        async def all_keys_shredded() -> bool:
            return all([await records.get_session_key(sid) is None for sid in sids])
        await poll(all_keys_shredded)
        log = await records.deletions(limit=100_000)

    media_log = Counter(d["ref"] for d in log if d["what"] == "media")
    assert set(media_log) == expected                                   # none missed, nothing else
    assert [k for k, n in media_log.items() if n > 1] == []             # none logged twice
    assert all(d["reason"].startswith("retention") for d in log if d["what"] == "media")
    key_log = Counter(d["ref"] for d in log if d["what"] == "session_key")
    assert set(key_log) == set(sids) and max(key_log.values()) == 1
    assert not await asyncio.to_thread(c.bucket_keys)                  # the bucket holds none of them

    # from the bucket's side: one S3 DELETE per object, from one instance or the other
    assert c.recorder is not None
    deletes = Counter(k.removeprefix(c.prefix + "/") for _, k in c.recorder.deletes)
    assert set(deletes) == expected
    assert [k for k, n in deletes.items() if n > 1] == []


async def test_usage_counted_by_both_instances_adds_up_exactly(pair):
    per_instance = 100
    c = pair
    a, b = c.instances
    app_id, key = await asyncio.to_thread(c.create_app, "usage")
    other_app, other_key = await asyncio.to_thread(c.create_app, "someone else")
    t0 = time.time()
    sem = asyncio.Semaphore(24)

    async def call(base: str, body: dict[str, Any], k: str = key) -> int:
        async with sem, http.post(f"{base}/v1/sessions", json=body, headers=auth(k)) as r:
            await r.read()
            return r.status

    async with client() as http:
        calls = [call(inst.base_url, {"locale": "en"}) for inst in (a, b) for _ in range(per_instance)]
        calls += [call(inst.base_url, {"challenge_steps": 99}) for inst in (a, b) for _ in range(5)]
        calls += [call(inst.base_url, {"locale": "en"}, "sk_" + "y" * 43) for inst in (a, b) for _ in range(3)]
        calls += [call(inst.base_url, {"locale": "en"}, other_key) for inst in (a, b) for _ in range(7)]
        statuses = Counter(await asyncio.gather(*calls))
    t1 = time.time()
    assert statuses == {201: 2 * per_instance + 14, 400: 10, 401: 6}

    months = sorted({month_of(t0), month_of(t1)})
    reports = [await asyncio.to_thread(c.usage, app_id, m) for m in months]
    calls_total = sum(r["calls"] for r in reports)
    results = Counter()
    for r in reports:
        results.update(r["results"])
    assert calls_total == 2 * per_instance + 10          # the app's calls; the other app's and 401s not
    assert results == {"ok": 2 * per_instance, "bad_request": 10}
    assert sum(r["fee_micros"] for r in reports) == 2 * per_instance * 10_000   # 0.01 per created session
    others = [await asyncio.to_thread(c.usage, other_app, m) for m in months]
    assert sum(r["calls"] for r in others) == 14
    async with c.records() as records:
        # one monitoring row per call, whichever instance took it
        rows = [await records.usage(app_id, m) for m in months]
        assert sum(x["calls"] for rs in rows for x in rs) == calls_total
