"""The retention sweeper over real stores (local directory and SeaweedFS; SQLite records) with a
controllable clock: deadlines kept across a sweeper restart and a backend outage, two sweepers
on the same stores, key shredding, records purge, the sweeper in the service."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stream_ekyc.stores.retention import REASON_KEY, REASON_MEDIA, Sweeper
from tests.postgres_db import postgres_url  # noqa: F401 (fixture)

from .media_backends import Backend, Clock, backend, open_records, opened, records_url, records_urls  # noqa: F401

TTL = 7200.0
INTERVAL = 60.0




async def _write_session(media, sid: str, now: float) -> list[str]:
    return [await media.put(sid, "best_frame", "best.jpg", b"\xff\xd8 best " + sid.encode(), "image/jpeg", now + TTL),
            await media.put(sid, "packet", "packet.json", b'{"s": "%s"}' % sid.encode(), "application/json", now + TTL),
            await media.put(sid, "video", "challenge.mp4", b"\x00\x00video" * 50, "video/mp4", now + TTL)]


async def test_deadlines_survive_restart_and_outage(backend, records_url, caplog):
    """Sessions written over 40 minutes, each object due 2 h after capture; a pass every 60 s.
    Mid-run the sweeper crashes holding leases and a new instance takes over; later the media
    backend is down for 5 passes. While the backend is up no object outlives its deadline by more
    than one interval; once it is back everything overdue goes within two passes; nothing is
    deleted twice; every key is shredded once."""
    clock = Clock()
    t0 = clock()
    records = await open_records(records_url)
    media = backend.store(records, clock)
    await media.start()
    deadline_of: dict[str, float] = {}
    sessions: list[str] = []
    sweeper = Sweeper(records, media, clock, interval_s=INTERVAL, owner="first")
    down: tuple[float, float] | None = None
    checked = postponed_passes = 0
    try:
        with caplog.at_level(logging.INFO, logger="stream_ekyc.retention"):
            step = 0
            while clock() < t0 + TTL + 45 * 60 + 20 * INTERVAL:
                now = clock()
                if step % 10 == 0 and now < t0 + 40 * 60:          # a new session every 10 minutes
                    sid = f"ses_{step:03d}"
                    sessions.append(sid)
                    for k in await _write_session(media, sid, now):
                        deadline_of[k] = now + TTL
                if now == t0 + TTL + 10 * 60:
                    # the sweeper dies mid-pass: it had leased the due rows and deleted nothing
                    leased = await records.lease_media_due(now, sweeper.owner, sweeper.lease_s, 100)
                    assert leased
                    sweeper = Sweeper(records, media, clock, interval_s=INTERVAL, owner="second")
                    report = await sweeper.sweep_once(now)
                    assert report["media"]["due"] == 0               # the dead one's leases still run
                elif now == t0 + TTL + 20 * 60:
                    await backend.go_down()
                    down = (now, now + 5 * INTERVAL)
                    report = await sweeper.sweep_once(now)
                elif down and now == down[1]:
                    await backend.come_back()
                    report = await sweeper.sweep_once(now)
                else:
                    report = await sweeper.sweep_once(now)
                backend_down = down is not None and down[0] <= now < down[1]
                if backend_down and report["media"]["due"]:
                    assert report["media"]["backend"] == "unavailable" and report["media"]["deleted"] == 0
                    postponed_passes += 1
                # the invariant, checked against the records store and the stored bytes
                live = {k for k in await backend.raw_keys()} if not backend_down else None
                for key, deadline in deadline_of.items():
                    row = await records.media_object(key)
                    overdue = now - deadline
                    in_grace = (down is not None and down[0] <= deadline + INTERVAL and now < down[1] + 2 * INTERVAL) \
                        or (t0 + TTL + 10 * 60 - INTERVAL <= deadline + INTERVAL and now < t0 + TTL + 10 * 60 + 2 * INTERVAL)
                    if overdue > INTERVAL and not in_grace:
                        assert row["deleted_at"] is not None, (key, overdue)
                        assert live is None or key not in live, (key, overdue)
                        checked += 1
                    if overdue < 0:
                        assert row["deleted_at"] is None and (live is None or key in live)
                clock.advance(INTERVAL)
                step += 1
        assert checked > 300 and postponed_passes == 5
        # everything is gone, each deletion logged once, each key shredded once
        assert await backend.raw_keys() == []
        log = await records.deletions(limit=10000)
        media_log = [d["ref"] for d in log if d["what"] == "media"]
        assert sorted(media_log) == sorted(deadline_of) and all(d["reason"] == REASON_MEDIA for d in log if d["what"] == "media")
        assert sorted(d["ref"] for d in log if d["what"] == "session_key") == sorted(sessions)
        for sid in sessions:
            assert await records.get_session_key(sid) is None
        # one warning for the outage (not one per pass), one line each, no keys or ids in the log
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "postponed" in warnings[0].getMessage()
        for r in caplog.records:
            msg = r.getMessage()
            assert "\n" not in msg and "ses_" not in msg and "127.0.0.1" not in msg
        stats = await records.media_stats(clock())
        assert stats["past_deadline"] == 0 and stats["live_objects"] == 0
    finally:
        if down is not None and backend.kind == "local" and not backend.root.exists():
            await backend.come_back()
        await media.close()
        await records.close()


async def test_keys_shredded_even_while_the_backend_is_down(backend, records_url):
    clock = Clock()
    async with opened(backend, records_url, clock) as (records, media):
        keys = await _write_session(media, "ses_x", clock())
        copies = {k: await backend.raw_read(k) for k in keys}
        await backend.go_down()
        try:
            clock.advance(TTL + 1)
            report = await Sweeper(records, media, clock, interval_s=INTERVAL).sweep_once()
            assert report["media"]["backend"] == "unavailable" and report["keys_shredded"] == 1
        finally:
            await backend.come_back()
        # the bytes are still there, but unreadable for good
        for k, raw in copies.items():
            assert await backend.raw_read(k) == raw and await media.get(k) is None
        clock.advance(INTERVAL)
        report = await Sweeper(records, media, clock, interval_s=INTERVAL).sweep_once()
        assert report["media"]["deleted"] == 3 and await backend.raw_keys() == []
        reasons = {(d["what"], d["reason"]) for d in await records.deletions()}
        assert reasons == {("media", REASON_MEDIA), ("session_key", REASON_KEY)}


async def test_two_sweepers_delete_each_object_once(backend, records_url):
    """Two instances (their own records connection and media client) sweep the same stores at
    the same time in small batches: every object is deleted and logged exactly once."""
    clock = Clock()
    rec_a, rec_b = await open_records(records_url), await open_records(records_url)
    media_a, media_b = backend.store(rec_a, clock), backend.store(rec_b, clock)
    await media_a.start()
    await media_b.start()
    try:
        written = []
        for i in range(40):
            written += await _write_session(media_a if i % 2 else media_b, f"ses_{i:03d}", clock())
        clock.advance(TTL)
        a = Sweeper(rec_a, media_a, clock, interval_s=INTERVAL, owner="a", batch=7)
        b = Sweeper(rec_b, media_b, clock, interval_s=INTERVAL, owner="b", batch=7)
        ra, rb = await asyncio.gather(a.sweep_once(), b.sweep_once())
        assert ra["media"]["deleted"] + rb["media"]["deleted"] == len(written) == 120
        assert ra["media"]["deleted"] > 0 and rb["media"]["deleted"] > 0
        assert ra["keys_shredded"] + rb["keys_shredded"] == 40
        log = await rec_a.deletions(limit=10000)
        media_refs = [d["ref"] for d in log if d["what"] == "media"]
        assert len(media_refs) == len(set(media_refs)) == 120 and set(media_refs) == set(written)
        assert len([d for d in log if d["what"] == "session_key"]) == 40
        assert await backend.raw_keys() == []
        again = await asyncio.gather(a.sweep_once(), b.sweep_once())
        assert all(r["media"]["due"] == 0 and r["keys_shredded"] == 0 for r in again)
    finally:
        await media_a.close()
        await media_b.close()
        await rec_a.close()
        await rec_b.close()


async def test_records_purged_after_their_retention(tmp_path):
    clock = Clock()
    async with opened(Backend("local", tmp_path), records_urls(tmp_path)["sqlite"], clock) as (records, media):
        old, recent = clock() - 3 * 365 * 86400, clock() - 86400
        await records.add_op_logs([{"app_id": None, "call_id": "c_old", "at": old, "step": "request", "detail": {}},
                                   {"app_id": None, "call_id": "c_new", "at": recent, "step": "request", "detail": {}}])
        sweeper = Sweeper(records, media, clock, interval_s=INTERVAL, purge_every_s=3600)
        report = await sweeper.sweep_once()
        assert report["records_purged"].get("op_logs") == 1
        assert [r["call_id"] for r in await records.op_logs()] == ["c_new"]
        clock.advance(INTERVAL)
        assert (await sweeper.sweep_once())["records_purged"] is None      # at most once an hour
        clock.advance(3600)
        assert (await sweeper.sweep_once())["records_purged"] is not None
        status = await sweeper.status()
        assert status["next_sweep_at"] == clock() + INTERVAL and status["objects_past_deadline"] == 0


async def test_the_service_runs_the_sweeper(make_settings, backend):
    from stream_ekyc.api.app import MEDIA, RECORDS, SWEEPER

    from .conftest import serve
    clock = Clock()
    settings = {"retention_interval_s": 0.05, "media_url": f"file://{backend.root}"}
    if backend.kind == "s3":     # the service configured for S3 through its settings
        s = backend.seaweedfs
        settings.update(media_url=f"s3://{s.bucket}/{backend.prefix}", s3_endpoint=s.endpoint,
                        s3_access_key_id=s.access_key, s3_secret_access_key=s.secret_key)
    async with serve(make_settings(**settings), clock=clock) as h:
        media, records = h.app[MEDIA], h.app[RECORDS]
        key = await media.put("ses_svc", "packet", "packet.json", b"{}", "application/json", clock() + TTL)
        assert await backend.raw_keys() == [key]
        clock.advance(TTL + 1)
        for _ in range(200):            # the loop's own period is 50 ms; wait for a pass
            if (await records.media_object(key))["deleted_at"] is not None:
                break
            await asyncio.sleep(0.05)
        assert (await records.media_object(key))["deleted_reason"] == REASON_MEDIA
        assert await media.list_session("ses_svc") == [] and await backend.raw_keys() == []
        assert h.app[SWEEPER].last_report is not None
        task = next(t for t in asyncio.all_tasks() if t.get_name() == "retention-sweeper")
    assert task.done()
