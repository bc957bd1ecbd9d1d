"""One suite, two records backends: every ``RecordsStore`` method on SQLite (a file in
tmp_path) and on the real PostgreSQL (a fresh database per test). "Two processes" are two
store instances with their own connections (SQLite: two connections to one file; PostgreSQL:
two pools), plus one test with two real OS processes. Times are passed in (``now``): no
test looks at the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stream_ekyc.pricing import month_start
from stream_ekyc.stores.records import RecordsConflict, RecordsError, RecordsStore, records_from_url
from stream_ekyc.stores.sql import LATEST_VERSION, MIGRATIONS
from tests.instances import open_records
from tests.postgres_db import fresh_database

REPO = Path(__file__).resolve().parents[2]
T0 = month_start(2026, 11) + 3600.0   # 2026-11-01 01:00 UTC


class Backend:
    """A database for one test; ``open()`` gives a started store on it (several may be open)."""

    def __init__(self, kind: str, url: str):
        self.kind = kind
        self.url = url

    def open(self) -> contextlib.AbstractAsyncContextManager[RecordsStore]:
        return open_records(self.url)

    async def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Read the database behind the store's back (the checks the interface cannot make)."""
        if self.kind == "sqlite":
            import sqlite3

            con = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                return con.execute(query).fetchall()
            finally:
                con.close()
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def records(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path}/records.sqlite3")
    else:
        with fresh_database() as url:
            yield Backend("postgres", url)


async def _app_and_session(rec: RecordsStore, sid: str = "ses_1", *, now: float = T0,
                           ttl: float = 180.0) -> dict[str, Any]:
    if await rec.get_app("app_x") is None:
        await rec.create_app("app_x", "x", "h" * 64, now)
    return await rec.create_session(sid, "app_x", "t" * 64, {"locale": "en"}, now=now, expires_at=now + ttl)


# --- migrations ------------------------------------------------------------------------------

async def test_migrations_versioned_and_idempotent(records):
    async with records.open() as rec:
        assert await rec.schema_version() == LATEST_VERSION
    first = await records.sql("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert [r[0] for r in first] == [v for v, _, _ in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    async with records.open() as rec, records.open() as again:  # reopening applies nothing twice
        assert await rec.schema_version() == await again.schema_version() == LATEST_VERSION
    assert await records.sql("SELECT version, name, applied_at FROM schema_migrations ORDER BY version") == first


async def test_concurrent_migration_from_two_stores(records):
    a, b = records_from_url(records.url), records_from_url(records.url)
    try:
        await asyncio.gather(a.start(), b.start())
        assert await a.schema_version() == await b.schema_version() == LATEST_VERSION
        await a.create_app("app_a", "a", "a" * 64, T0)
        assert (await b.get_app("app_a"))["name"] == "a"
    finally:
        await asyncio.gather(a.close(), b.close())
    versions = await records.sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, LATEST_VERSION + 1))


async def test_two_stores_creating_one_sqlite_file_at_once_both_open(tmp_path):
    # switching a new file to WAL needs it to itself for a moment, and SQLite answers
    # "database is locked" without waiting when another connection is opening it: about
    # one such pair in ten failed before the switch was retried
    for i in range(30):
        url = f"sqlite:///{tmp_path}/race-{i}.sqlite3"
        a, b = records_from_url(url), records_from_url(url)
        try:
            await asyncio.gather(a.start(), b.start())
            assert await a.schema_version() == await b.schema_version() == LATEST_VERSION
        finally:
            await asyncio.gather(a.close(), b.close())


async def test_a_write_is_all_or_nothing(records):
    # SQLite runs a write whole on its worker thread (one hop, BEGIN to COMMIT); both
    # backends must keep a failed write's earlier statements out of the database
    async with records.open() as rec:
        await _app_and_session(rec)

        async def fails_half_way(db):
            await db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                             "ses_1", T0 + 1, "fitting", "half")
            raise RuntimeError("stop")

        with pytest.raises(RuntimeError):
            await rec._write(fails_half_way)
        assert await records.sql("SELECT detail FROM session_events WHERE detail = 'half'") == []

        async def conflicts(db):
            await db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                             "ses_1", T0 + 1, "fitting", "half")
            await db.execute("INSERT INTO apps (app_id, name, api_key_hash, created_at) VALUES (?, ?, ?, ?)",
                             "app_x", "again", "h" * 64, T0)

        with pytest.raises(RecordsConflict):
            await rec._write(conflicts)
        assert await records.sql("SELECT detail FROM session_events WHERE detail = 'half'") == []

        # a state change still goes through whole, with its event, and the store stays usable
        assert await rec.update_session("ses_1", expected_state="created", now=T0 + 2, state="connected")
        assert [e["state"] for e in await rec.session_events("ses_1")][-1] == "connected"


async def test_sqlite_write_may_only_await_its_database(tmp_path):
    async with open_records(f"sqlite:///{tmp_path}/r.sqlite3") as rec:
        await _app_and_session(rec)

        async def sleeps(db):
            await db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                             "ses_1", T0 + 1, "fitting", "half")
            await asyncio.sleep(0)      # not the database: refused, rolled back

        with pytest.raises(RecordsError, match="other than its database"):
            await rec._write(sleeps)
        assert [e["detail"] for e in await rec.session_events("ses_1")].count("half") == 0
        assert (await rec.get_session("ses_1"))["state"] == "created"


async def test_newer_schema_is_refused(records):
    async with records.open():
        pass
    if records.kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(records.url.removeprefix("sqlite:///"))
        con.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (LATEST_VERSION + 1,))
        con.commit()
        con.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(records.url)
        await conn.execute("INSERT INTO schema_migrations VALUES ($1, 'from the future', 0)", LATEST_VERSION + 1)
        await conn.close()
    store = records_from_url(records.url)
    with pytest.raises(RecordsError, match="newer"):
        await store.start()
    with pytest.raises(RecordsError, match="not started"):
        await store.get_app("app_x")


async def test_sqlite_first_release_database_is_adopted(tmp_path):
    """A file made by the first release (``schema_version`` table, schema 1) migrates on."""
    import sqlite3

    from stream_ekyc.stores.sqlite import SQLITE

    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    for sql in MIGRATIONS[0][2]:
        con.execute(SQLITE.ddl(sql))
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    con.execute("INSERT INTO schema_version VALUES (1, 123.0)")
    con.execute("INSERT INTO apps VALUES ('app_old', 'old', ?, 1.0, 0)", ("k" * 64,))
    con.execute("INSERT INTO monitoring (call_id, app_id, interface, result, start_at, end_at, region, fee_units)"
                " VALUES ('c', 'app_old', 'sessions.create', 'ok', 1, 2, 'local', 1)")
    con.commit()
    con.close()
    rec = records_from_url(f"sqlite:///{path}")
    await rec.start()
    try:
        assert await rec.schema_version() == LATEST_VERSION
        assert (await rec.get_app("app_old"))["name"] == "old"
    finally:
        await rec.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()[0] == (1, 123.0)
    assert not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchall()
    assert con.execute("SELECT fee_micros FROM monitoring").fetchall() == [(1,)]
    con.close()


# --- apps and sessions -----------------------------------------------------------------------

async def test_apps(records):
    async with records.open() as rec:
        app = await rec.create_app("app_x", "x", "h" * 64, T0)
        assert app == {"app_id": "app_x", "name": "x", "api_key_hash": "h" * 64, "created_at": T0, "disabled": False}
        with pytest.raises(RecordsConflict):
            await rec.create_app("app_x", "y", "i" * 64, T0)
        with pytest.raises(RecordsConflict):
            await rec.create_app("app_y", "y", "h" * 64, T0)
        assert await rec.ensure_app("app_x", "other", "j" * 64, T0 + 1) == app  # idempotent: the first stays
        assert (await rec.ensure_app("app_demo", "demo", "d" * 64, T0))["name"] == "demo"
        assert await rec.app_by_key_hash("h" * 64) == app
        assert await rec.app_by_key_hash("z" * 64) is None
        assert await rec.get_app("app_nope") is None
        await rec.ping()


async def test_session_lifecycle(records):
    async with records.open() as rec:
        s = await _app_and_session(rec)
        assert s == {"session_id": "ses_1", "app_id": "app_x", "state": "created", "created_at": T0,
                     "expires_at": T0 + 180, "token_used_at": None, "options": {"locale": "en"}, "result": None,
                     "updated_at": T0}
        assert await rec.get_session("ses_1") == s and await rec.get_session("nope") is None
        assert await rec.check_client_token("ses_1", "t" * 64)
        assert not await rec.check_client_token("ses_1", "u" * 64) and not await rec.check_client_token("x", "t" * 64)

        assert await rec.consume_client_token("ses_1", "u" * 64, T0 + 1) == (None, "unknown")
        assert await rec.consume_client_token("nope", "t" * 64, T0 + 1) == (None, "unknown")
        got, problem = await rec.consume_client_token("ses_1", "t" * 64, T0 + 1)
        assert problem is None and got["token_used_at"] == T0 + 1
        assert await rec.consume_client_token("ses_1", "t" * 64, T0 + 2) == (None, "used")
        assert await rec.release_client_token("ses_1", T0 + 3)
        assert (await rec.get_session("ses_1"))["token_used_at"] is None
        await _app_and_session(rec, "ses_2")
        assert await rec.consume_client_token("ses_2", "t" * 64, T0 + 180) == (None, "expired")

        assert not await rec.update_session("ses_1", expected_state="connected", now=T0 + 4, state="fitting")
        assert await rec.update_session("ses_1", expected_state="created", now=T0 + 4, state="connected")
        assert await rec.update_session("ses_1", expected_state=("fitting", "connected"), now=T0 + 5,
                                        state="challenging", detail="go")
        assert await rec.update_session("ses_1", expected_state=None, now=T0 + 6, result={"verdict": "live"})
        assert not await rec.update_session("ses_1", expected_state=[], now=T0 + 6, state="done")
        assert await rec.update_session("ses_1", expected_state="challenging", now=T0 + 7, state="done",
                                        result={"verdict": "live", "score": 0.9})
        assert not await rec.release_client_token("ses_1", T0 + 8)  # no longer 'created'
        with pytest.raises(ValueError):
            await rec.update_session("ses_1", expected_state="nonsense", now=T0, state="done")
        done = await rec.get_session("ses_1")
        assert done["state"] == "done" and done["result"] == {"verdict": "live", "score": 0.9}
        await rec.add_event("ses_1", "done", T0 + 9, "note")
        assert [(e["state"], e["at"], e["detail"]) for e in await rec.session_events("ses_1")] == [
            ("created", T0, None), ("connected", T0 + 4, None), ("challenging", T0 + 5, "go"),
            ("done", T0 + 7, None), ("done", T0 + 9, "note")]

        await _app_and_session(rec, "ses_3", now=T0 + 10, ttl=5)
        expired = await rec.list_expired_sessions(T0 + 200)
        assert [x["session_id"] for x in expired] == ["ses_3", "ses_2"]  # earliest deadline first
        assert [x["session_id"] for x in await rec.list_expired_sessions(T0 + 200, limit=1)] == ["ses_3"]
        assert await rec.list_expired_sessions(T0 + 200, states=("failed",)) == []
        assert await rec.count_sessions_by_state() == {"created": 2, "connected": 0, "fitting": 0,
                                                       "challenging": 0, "scoring": 0}
        assert await rec.count_sessions_by_state(["done", "failed"]) == {"done": 1, "failed": 0}


async def test_client_token_single_use_under_concurrency(records):
    async with records.open() as a, records.open() as b:
        await _app_and_session(a)
        attempts = [(a if i % 2 else b).consume_client_token("ses_1", "t" * 64, T0 + 1) for i in range(24)]
        outcomes = await asyncio.gather(*attempts)
    winners = [s for s, problem in outcomes if problem is None]
    assert len(winners) == 1 and winners[0]["token_used_at"] == T0 + 1
    assert sorted(problem for _, problem in outcomes if problem is not None) == ["used"] * 23


async def test_state_transition_is_optimistic_under_concurrency(records):
    async with records.open() as a, records.open() as b:
        await _app_and_session(a)
        results = await asyncio.gather(*[(a if i % 2 else b).update_session(
            "ses_1", expected_state="created", now=T0 + 1, state="failed" if i % 3 else "connected")
            for i in range(12)])
        assert results.count(True) == 1
        assert len(await a.session_events("ses_1")) == 2


# --- media deadlines, leases, keys, the deletion log -------------------------------------------

async def _media(rec: RecordsStore, sid: str, n: int, *, created: float, delete_at: float, kind: str = "packet"):
    keys = [f"{sid}/{kind}/o{i}.bin" for i in range(n)]
    for i, key in enumerate(keys):
        await rec.add_media_objects([(key, sid, kind, "application/octet-stream", 10 + i)],
                                    created_at=created, delete_at=delete_at + i)
    return keys


async def test_media_objects_and_deletion(records):
    async with records.open() as rec:
        [key] = await _media(rec, "ses_a", 1, created=T0, delete_at=T0 + 7200)
        await rec.add_media_objects([(key, "ses_a", "packet", "application/json", 99)],
                                    created_at=T0 + 5, delete_at=T0 + 9000)
        obj = await rec.media_object(key)
        assert obj == {"key": key, "session_id": "ses_a", "kind": "packet", "content_type": "application/json",
                       "size": 99, "created_at": T0, "delete_at": T0 + 7200, "deleted_at": None,
                       "deleted_reason": None}  # the earliest deadline stays
        await _media(rec, "ses_a", 2, created=T0, delete_at=T0 + 100, kind="video")
        assert [o["key"] for o in await rec.media_objects("ses_a")] == sorted(
            [key, "ses_a/video/o0.bin", "ses_a/video/o1.bin"])
        assert [o["key"] for o in await rec.media_objects("ses_a", "video")] == ["ses_a/video/o0.bin",
                                                                                 "ses_a/video/o1.bin"]
        assert [o["key"] for o in await rec.media_due(T0 + 100.5)] == ["ses_a/video/o0.bin"]
        assert await rec.media_stats(T0 + 101) == {"oldest_live_created_at": T0, "past_deadline": 2,
                                                  "live_objects": 3}

        keys = ["ses_a/video/o0.bin", "ses_a/video/o1.bin", "ses_a/video/missing.bin"]
        assert await rec.mark_media_deleted(keys, T0 + 200, "retention") == 2
        assert await rec.mark_media_deleted(keys, T0 + 201, "retention") == 0  # a double delete shows as 0
        assert (await rec.media_object("ses_a/video/o0.bin"))["deleted_reason"] == "retention"
        assert await rec.media_due(T0 + 10**6) == [await rec.media_object(key)]
        assert await rec.media_stats(T0 + 201) == {"oldest_live_created_at": T0, "past_deadline": 0,
                                                  "live_objects": 1}
        assert await rec.deletions() == [
            {"what": "media", "ref": "ses_a/video/o0.bin", "at": T0 + 200, "reason": "retention"},
            {"what": "media", "ref": "ses_a/video/o1.bin", "at": T0 + 200, "reason": "retention"}]
        # a rewrite revives a deleted record
        await rec.add_media_objects([(key, "ses_a", "packet", "application/json", 5)],
                                    created_at=T0 + 300, delete_at=T0 + 400)
        await rec.mark_media_deleted([key], T0 + 301, "requested")
        await rec.add_media_objects([(key, "ses_a", "packet", "application/json", 5)],
                                    created_at=T0 + 302, delete_at=T0 + 400)
        assert (await rec.media_object(key))["deleted_at"] is None
        assert await rec.media_stats(T0) == {"oldest_live_created_at": T0, "past_deadline": 0, "live_objects": 1}


async def test_lease_media_due(records):
    async with records.open() as rec:
        keys = await _media(rec, "ses_l", 5, created=T0, delete_at=T0 + 10)
        await _media(rec, "ses_later", 1, created=T0, delete_at=T0 + 1000)
        got = await rec.lease_media_due(T0 + 12.5, "sweeper-a", lease_s=30, limit=2)
        assert [r["key"] for r in got] == keys[:2]
        assert set(got[0]) == {"key", "session_id", "kind", "content_type", "size", "created_at", "delete_at"}
        assert got[0]["delete_at"] == T0 + 10 and got[0]["size"] == 10
        assert [r["key"] for r in await rec.lease_media_due(T0 + 13, "sweeper-b", 30)] == keys[2:4]
        # the holder re-claims its own rows; nobody else gets them until the lease runs out
        assert [r["key"] for r in await rec.lease_media_due(T0 + 14, "sweeper-a", 30)] == keys[:2] + keys[4:5]
        assert await rec.lease_media_due(T0 + 20, "sweeper-c", 30) == []
        assert await rec.mark_media_deleted([keys[0]], T0 + 21, "retention") == 1
        # sweeper-a's lease (until T0 + 44) and sweeper-b's (until T0 + 43) are over at T0 + 44
        assert [r["key"] for r in await rec.lease_media_due(T0 + 44, "sweeper-c", 30)] == keys[1:]
        assert await rec.lease_media_due(T0 + 44, "sweeper-c", 30, limit=0) == []


async def test_lease_two_owners_concurrently_never_share_a_row(records):
    async with records.open() as a, records.open() as b:
        keys = await _media(a, "ses_c", 60, created=T0, delete_at=T0)
        claimed: dict[str, list[str]] = {"a1": [], "a2": [], "b1": [], "b2": []}

        async def sweep(store: RecordsStore, owner: str) -> None:
            while True:
                rows = await store.lease_media_due(T0 + 100, owner, lease_s=600, limit=7)
                if not rows:
                    return
                claimed[owner] += [r["key"] for r in rows]
                assert await store.mark_media_deleted([r["key"] for r in rows], T0 + 100, "retention") == len(rows)

        await asyncio.gather(sweep(a, "a1"), sweep(b, "b1"), sweep(a, "a2"), sweep(b, "b2"))
        assert sorted(sum(claimed.values(), [])) == sorted(keys)  # each row once, none missed
        assert len(await a.deletions()) == 60


async def test_session_keys_and_shredding(records):
    key1, key2 = bytes(range(32)), bytes(range(1, 33))
    async with records.open() as rec:
        assert await rec.get_session_key("ses_k") is None
        await rec.put_session_key("ses_k", key1, T0)
        await rec.put_session_key("ses_k", key1, T0 + 1)  # idempotent
        with pytest.raises(RecordsError) as e:
            await rec.put_session_key("ses_k", key2, T0 + 2)
        assert key1.hex() not in str(e.value) and key2.hex() not in str(e.value)
        assert await rec.get_session_key("ses_k") == key1
        # two writers racing to store different keys: one wins, the other is told
        outcomes = await asyncio.gather(rec.put_session_key("ses_r", key1, T0), rec.put_session_key("ses_r", key2, T0),
                                        return_exceptions=True)
        assert sum(isinstance(o, RecordsError) for o in outcomes) == 1
        assert await rec.get_session_key("ses_r") in (key1, key2)

        assert await rec.shred_session_key("ses_k", T0 + 3, "media expired")
        assert not await rec.shred_session_key("ses_k", T0 + 4, "media expired")
        assert await rec.get_session_key("ses_k") is None
        assert await rec.deletions() == [{"what": "session_key", "ref": "ses_k", "at": T0 + 3,
                                          "reason": "media expired"}]


async def test_sessions_with_expired_media(records):
    async with records.open() as rec:
        for sid, at in (("ses_live", T0), ("ses_past", T0 + 1), ("ses_gone", T0 + 2), ("ses_orphan", T0 + 3),
                        ("ses_mixed", T0 + 4)):
            await rec.put_session_key(sid, os.urandom(32), at)
        await _media(rec, "ses_live", 1, created=T0, delete_at=T0 + 7200)
        await _media(rec, "ses_past", 2, created=T0, delete_at=T0 + 10)
        [gone] = await _media(rec, "ses_gone", 1, created=T0, delete_at=T0 + 7200)
        await rec.mark_media_deleted([gone], T0 + 20, "requested")
        await _media(rec, "ses_mixed", 1, created=T0, delete_at=T0 + 10)
        await _media(rec, "ses_mixed", 1, created=T0, delete_at=T0 + 7200, kind="video")
        await _media(rec, "ses_nokey", 1, created=T0, delete_at=T0)
        assert await rec.sessions_with_expired_media(T0 + 100, 10) == ["ses_past", "ses_gone"]
        assert await rec.sessions_with_expired_media(T0 + 100, 1) == ["ses_past"]
        # a key with no object at all is left alone for a day (its first object may be on its way)
        later = T0 + 3 + 24 * 3600
        assert await rec.sessions_with_expired_media(later, 10) == ["ses_live", "ses_past", "ses_gone",
                                                                    "ses_orphan", "ses_mixed"]
        await rec.shred_session_key("ses_past", T0 + 101, "media expired")
        assert await rec.sessions_with_expired_media(T0 + 100, 10) == ["ses_gone"]


async def test_deletion_log_holds_no_content(records):
    secret_key = b"\x13\x37" * 16
    content = "the applicant's face bytes ÿØÿà"
    async with records.open() as rec:
        await rec.add_deletion("media", "ses_d/best_frame/best.jpg", T0, "retention")
        await rec.add_deletion("media", "ses_d/video/v.webm", T0 + 5, "requested")
        await rec.put_session_key("ses_d", secret_key, T0)
        await rec.add_media_objects([("ses_d/packet/p.json", "ses_d", "packet", "application/json", len(content))],
                                    created_at=T0, delete_at=T0)
        await rec.mark_media_deleted(["ses_d/packet/p.json"], T0 + 6, "retention")
        await rec.shred_session_key("ses_d", T0 + 7, "media expired")
        log = await rec.deletions()
        assert [d["ref"] for d in await rec.deletions(since=T0 + 5)] == [
            "ses_d/video/v.webm", "ses_d/packet/p.json", "ses_d"]
        assert len(await rec.deletions(limit=2)) == 2
    assert all(set(d) == {"what", "ref", "at", "reason"} for d in log)
    table = await records.sql("SELECT * FROM deletions")
    dumped = repr(table) + json.dumps(log)
    assert len(table) == 4 and len(table[0]) == 5  # id, what, ref, at, reason: no content column
    for needle in (secret_key.hex(), repr(secret_key), content, "ÿØÿà"):
        assert needle not in dumped


# --- monitoring, operation logs, usage, retention -----------------------------------------------

async def test_monitoring_op_logs_and_usage(records):
    async with records.open() as rec:
        await rec.create_app("app_x", "x", "h" * 64, T0)
        await rec.add_monitoring("c1", "app_x", "sessions.create", "ok", T0, T0 + 0.2, "local", 10_000)
        await rec.add_monitoring("c2", "app_x", "sessions.create", "bad_request", T0 + 1, T0 + 1.1, "local")
        await rec.add_monitoring("c3", "app_x", "sessions.get", "ok", T0 + 2, T0 + 2.1, "local")
        await rec.add_monitoring("c4", None, "sessions.create", "unauthorized", T0 + 3, T0 + 3.1, "local")
        await rec.add_monitoring("c5", "app_x", "sessions.create", "ok", month_start(2026, 12), T0, "local", 10_000)
        with pytest.raises(ValueError):
            await rec.add_monitoring("c6", "app_x", "sessions.create", "ok", T0, T0, "local", -1)
        assert await rec.usage("app_x", "2026-11") == [
            {"interface": "sessions.create", "result": "bad_request", "calls": 1, "fee_micros": 0},
            {"interface": "sessions.create", "result": "ok", "calls": 1, "fee_micros": 10_000},
            {"interface": "sessions.get", "result": "ok", "calls": 1, "fee_micros": 0}]
        assert await rec.usage("app_x", "2026-12") == [
            {"interface": "sessions.create", "result": "ok", "calls": 1, "fee_micros": 10_000}]
        assert await rec.usage("app_nope", "2026-11") == []

        await rec.add_op_logs([{"app_id": "app_x", "call_id": "c1", "at": T0, "step": "request",
                                "detail": {"route": "/v1/sessions", "n": 1}},
                               {"app_id": "app_x", "call_id": "c1", "at": T0 + 0.2, "step": "response",
                                "detail": {"status": 201}}])
        await rec.add_op_log(None, "c4", T0 + 3, "request", {"status": 401, "text": "ünïcode"})
        await rec.add_op_logs([])
        assert [(r["call_id"], r["step"]) for r in await rec.op_logs()] == [
            ("c1", "request"), ("c1", "response"), ("c4", "request")]
        assert await rec.op_logs("c1", limit=1) == [{"app_id": "app_x", "call_id": "c1", "at": T0,
                                                     "step": "request", "detail": {"route": "/v1/sessions", "n": 1}}]
        assert (await rec.op_logs("c4"))[0]["detail"] == {"status": 401, "text": "ünïcode"}
    rows = await records.sql("SELECT call_id, fee_micros FROM monitoring ORDER BY call_id")
    assert rows == [("c1", 10_000), ("c2", 0), ("c3", 0), ("c4", 0), ("c5", 10_000)]


async def test_usage_exact_with_two_concurrent_writers(records):
    n = 150
    async with records.open() as a, records.open() as b:
        await a.create_app("app_u", "u", "u" * 64, T0)

        async def writer(store: RecordsStore, tag: str) -> None:
            for i in range(n):
                ok = i % 5 != 0
                await store.add_monitoring(f"{tag}{i}", "app_u", "sessions.create", "ok" if ok else "bad_request",
                                           T0 + i, T0 + i + 0.1, "local", 10_000 if ok else 0)

        await asyncio.gather(writer(a, "a"), writer(b, "b"), writer(a, "c"), writer(b, "d"))
        rows = {r["result"]: r for r in await a.usage("app_u", "2026-11")}
    assert rows["ok"]["calls"] == 4 * 120 and rows["bad_request"]["calls"] == 4 * 30
    assert rows["ok"]["fee_micros"] == 4 * 120 * 10_000 and rows["bad_request"]["fee_micros"] == 0
    assert await records.sql("SELECT COUNT(*) FROM monitoring") == [(4 * n,)]


WRITER = textwrap.dedent("""
    import asyncio, sys
    from stream_ekyc.stores.records import records_from_url

    async def main(url, tag, n, t0):
        rec = records_from_url(url)
        await rec.start()
        try:
            for i in range(n):
                await rec.add_monitoring(f"{tag}{i}", "app_p", "sessions.create", "ok", t0 + i, t0 + i, "local", 5)
        finally:
            await rec.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
""")


async def test_usage_exact_with_two_processes(records):
    """Two OS processes write into a month no partition exists for yet (PostgreSQL creates it
    on the first insert, once, under its lock)."""
    n = 200
    t = month_start(2031, 3) + 60
    async with records.open() as rec:
        await rec.create_app("app_p", "p", "p" * 64, T0)
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, records.url, tag, str(n), repr(t),
                                                  cwd=REPO, stderr=subprocess.PIPE)
             for tag in ("x", "y")]
    errs = [(await p.communicate())[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    async with records.open() as rec:
        assert await rec.usage("app_p", "2031-03") == [
            {"interface": "sessions.create", "result": "ok", "calls": 2 * n, "fee_micros": 2 * n * 5}]
        if records.kind == "postgres":
            assert "monitoring_p203103" in await rec.partitions("monitoring")


async def test_retention_purge(records):
    """Monitoring and operation logs over three months (Jan–Mar 2024); purging before
    15 Feb drops January whole (PostgreSQL: its partition) and half of February."""
    jan, feb, mar = month_start(2024, 1), month_start(2024, 2), month_start(2024, 3)
    before = feb + 14 * 86400
    now = month_start(2026, 2) + 10
    async with records.open() as rec:
        await rec.create_app("app_x", "x", "h" * 64, jan)
        for day in range(0, 28, 3):
            for base in (jan, feb, mar):
                t = base + day * 86400 + 1
                await rec.add_monitoring(f"c{t}", "app_x", "sessions.create", "ok", t, t + 1, "local", 10)
                await rec.add_op_logs([{"app_id": "app_x", "call_id": f"c{t}", "at": t, "step": "request",
                                        "detail": {}}])
        if records.kind == "postgres":
            assert {"monitoring_p202401", "monitoring_p202402", "monitoring_p202403"} <= set(
                await rec.partitions("monitoring"))
        # sessions: an old finished one (gone with its events), an old stale one, a recent one
        await rec.create_session("ses_old", "app_x", "t" * 64, {}, jan, jan + 180)
        await rec.update_session("ses_old", expected_state="created", now=jan + 5, state="done")
        await rec.create_session("ses_stale", "app_x", "t" * 64, {}, jan + 1, jan + 180)
        await rec.create_session("ses_new", "app_x", "t" * 64, {}, mar, mar + 180)
        await rec.put_session_key("ses_stale", b"k" * 32, jan + 1)
        await rec.add_media_objects([("ses_old/packet/p.json", "ses_old", "packet", "application/json", 1)],
                                    created_at=jan, delete_at=jan)
        await rec.mark_media_deleted(["ses_old/packet/p.json"], jan + 7200, "retention")
        await rec.add_deletion("media", "ses_x/video/v.webm", mar, "retention")
        await rec.add_webhook_delivery("ses_old", "app_x", "https://rp.example/h", {"event": "x"}, jan + 6)
        await rec.add_webhook_delivery("ses_new", "app_x", "https://rp.example/h", {"event": "x"}, mar + 6)

        counts = await rec.purge_records(before, now)
        # days 0..27 step 3 → 10 rows a month; February rows before the 15th: days 0, 3, …, 12 → 5
        assert counts == {"monitoring": 15, "op_logs": 15, "session_events": 3, "session_keys": 1, "sessions": 2,
                          "media_objects": 1, "usage": 1, "deletions": 1, "webhook_deliveries": 1}
        assert await rec.webhook_delivery("ses_old") is None and await rec.webhook_delivery("ses_new") is not None
        assert await rec.get_session("ses_old") is None and await rec.session_events("ses_old") == []
        assert await rec.get_session("ses_new") is not None and await rec.get_session_key("ses_stale") is None
        assert await rec.usage("app_x", "2024-01") == []
        assert (await rec.usage("app_x", "2024-02"))[0]["calls"] == 10  # the month is not over by `before`
        assert len(await rec.op_logs()) == 15
        log = await rec.deletions(since=now)
        assert {d["ref"] for d in log} == set(counts) and {d["what"] for d in log} == {"records"}
        assert all(d["at"] == now and "retention" in d["reason"] for d in log)
        assert await rec.purge_records(before, now + 1) == dict.fromkeys(counts, 0)  # nothing twice
        if records.kind == "postgres":
            parts = await rec.partitions("monitoring")
            assert "monitoring_p202401" not in parts and "monitoring_p202402" in parts
            # partitions ahead of `now`, and a row in a month whose partition was dropped still lands
            assert {"monitoring_p202602", "monitoring_p202603", "monitoring_p202604"} <= set(parts)
            assert "op_logs_p202604" in await rec.partitions("op_logs")
            await rec.add_monitoring("late", "app_x", "sessions.get", "ok", jan + 99, jan + 99, "local")
            assert "monitoring_p202401" in await rec.partitions("monitoring")
    remaining = await records.sql("SELECT COUNT(*), MIN(start_at) FROM monitoring WHERE call_id <> 'late'")
    assert remaining == [(15, feb + 15 * 86400 + 1)]


async def test_usage_command(records):
    async with records.open() as rec:
        await rec.create_app("app_c", "c", "c" * 64, T0)
        for i, (interface, result, fee) in enumerate([("sessions.create", "ok", 10_000)] * 3 + [
                ("sessions.create", "bad_request", 0), ("sessions.get", "ok", 0)]):
            await rec.add_monitoring(f"c{i}", "app_c", interface, result, T0 + i, T0 + i, "local", fee)
    env = {**os.environ, "STREAM_EKYC_RECORDS_URL": records.url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "usage", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    p = run("--app", "app_c", "--month", "2026-11")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["app_id"] == "app_c" and out["month"] == "2026-11" and out["calls"] == 5
    assert out["results"] == {"bad_request": 1, "ok": 4} and out["fee"] == "0.03" and out["fee_micros"] == 30_000
    assert out["interfaces"]["sessions.create"] == {"calls": 4, "results": {"bad_request": 1, "ok": 3},
                                                    "fee": "0.03", "fee_micros": 30_000}
    assert json.loads(run("--app", "app_c", "--month", "2026-10").stdout)["calls"] == 0
    for bad in (["--app", "app_c", "--month", "2026-13"], ["--app", "app_c", "--month", "11/2026"],
                ["--app", "app_nope", "--month", "2026-11"], ["--month", "2026-11"], ["--app", "app_c"]):
        p = run(*bad)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and p.stdout == "", (bad, p.stderr)
