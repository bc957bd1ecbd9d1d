"""The SQL shared by both records backends: the migrations and every ``RecordsStore`` method,
written once with ``?`` placeholders against a small connection protocol (``DB``).

A backend supplies ``_connection()`` (one connection, exclusively, as an async context
manager yielding a ``DB``), ``_open``/``_close``, its dialect (``DIALECT``: DDL types, the
scalar minimum, row-locking clauses) and, for PostgreSQL, the monthly partitions of the
time-keyed tables (``_ensure_partitions``, ``_purge_timed``).
"""

from __future__ import annotations

import abc
import contextlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncContextManager, AsyncIterator, Awaitable, Callable, Collection, Iterable, Protocol, TypeVar
from urllib.parse import urlsplit

from ..pricing import month_of
from .records import (ACTIVE_STATES, FINAL_STATES, ORPHAN_KEY_AFTER_S, STATES, RecordsError, RecordsStore,
                      TokenProblem)

T = TypeVar("T")

MEDIA_FIELDS = ("key", "session_id", "kind", "content_type", "size", "created_at", "delete_at",
                "deleted_at", "deleted_reason")
LEASED_FIELDS = MEDIA_FIELDS[:7]
# tables keyed by time (partitioned by month in PostgreSQL): table -> timestamp column
TIMED_TABLES = {"monitoring": "start_at", "op_logs": "at"}


class DB(Protocol):
    """One connection. SQL uses ``?`` placeholders; rows come back as dicts."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    async def fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None: ...

    async def fetchall(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    def transaction(self) -> AsyncContextManager[None]:
        """A write transaction (SQLite: BEGIN IMMEDIATE)."""


class MissingPartition(Exception):
    """PostgreSQL refused a row: no partition covers its timestamp (dropped meanwhile)."""


@dataclass(frozen=True)
class Dialect:
    real: str            # a float column
    int: str             # a counter or size column
    blob: str
    id: str              # an auto-increment primary key
    timed_id: str        # ... of a time-keyed table (PostgreSQL: the key adds the timestamp)
    least: str           # the scalar minimum of two values
    for_update: str      # locks the selected rows for this transaction
    skip_locked: str     # ... skipping rows other transactions hold
    partitioned: bool    # monitoring and op_logs partitioned by month

    def ddl(self, sql: str) -> str:
        return sql.format(real=self.real, int=self.int, blob=self.blob, id=self.id, timed_id=self.timed_id,
                          pk=_TimedKey(self.partitioned), partition=_Partition(self.partitioned))


class _TimedKey:
    """``{pk:col}``: the primary key of a partitioned table must include its partition key."""

    def __init__(self, on: bool):
        self.on = on

    def __format__(self, col: str) -> str:
        return f", PRIMARY KEY (id, {col})" if self.on else ""


class _Partition(_TimedKey):
    def __format__(self, col: str) -> str:
        return f" PARTITION BY RANGE ({col})" if self.on else ""


# (version, name, statements); rendered per dialect by Dialect.ddl. Never edit a released
# migration: add the next one. Version 1 is the schema of the first SQLite release.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        """CREATE TABLE apps (
            app_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            api_key_hash TEXT NOT NULL UNIQUE,
            created_at {real} NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps(app_id),
            state TEXT NOT NULL,
            created_at {real} NOT NULL,
            expires_at {real} NOT NULL,
            client_token_hash TEXT NOT NULL,
            token_used_at {real},
            options TEXT NOT NULL DEFAULT '{{}}',
            result TEXT,
            updated_at {real} NOT NULL)""",
        "CREATE INDEX sessions_state_expires ON sessions(state, expires_at)",
        "CREATE INDEX sessions_app_created ON sessions(app_id, created_at)",
        """CREATE TABLE session_events (
            id {id},
            session_id TEXT NOT NULL,
            at {real} NOT NULL,
            state TEXT NOT NULL,
            detail TEXT)""",
        "CREATE INDEX session_events_session ON session_events(session_id, id)",
        """CREATE TABLE media_objects (
            key TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size {int} NOT NULL,
            created_at {real} NOT NULL,
            delete_at {real} NOT NULL,
            deleted_at {real},
            deleted_reason TEXT)""",
        "CREATE INDEX media_objects_session ON media_objects(session_id)",
        "CREATE INDEX media_objects_due ON media_objects(delete_at) WHERE deleted_at IS NULL",
        """CREATE TABLE monitoring (
            id {timed_id},
            call_id TEXT NOT NULL,
            app_id TEXT,
            interface TEXT NOT NULL,
            result TEXT NOT NULL,
            start_at {real} NOT NULL,
            end_at {real} NOT NULL,
            region TEXT NOT NULL,
            fee_units {int} NOT NULL DEFAULT 0{pk:start_at}){partition:start_at}""",
        "CREATE INDEX monitoring_start ON monitoring(start_at)",
        "CREATE INDEX monitoring_app_start ON monitoring(app_id, start_at)",
        """CREATE TABLE op_logs (
            id {timed_id},
            app_id TEXT,
            call_id TEXT NOT NULL,
            at {real} NOT NULL,
            step TEXT NOT NULL,
            detail TEXT NOT NULL{pk:at}){partition:at}""",
        "CREATE INDEX op_logs_at ON op_logs(at)",
        "CREATE INDEX op_logs_call ON op_logs(call_id)",
    ]),
    (2, "media leases, session keys, deletion log, usage; fees in micro-units", [
        "ALTER TABLE monitoring RENAME COLUMN fee_units TO fee_micros",
        "ALTER TABLE media_objects ADD COLUMN lease_owner TEXT",
        "ALTER TABLE media_objects ADD COLUMN lease_until {real}",
        "CREATE INDEX media_objects_live ON media_objects(created_at) WHERE deleted_at IS NULL",
        """CREATE TABLE session_keys (
            session_id TEXT PRIMARY KEY,
            key {blob} NOT NULL,
            created_at {real} NOT NULL)""",
        "CREATE INDEX session_keys_created ON session_keys(created_at)",
        """CREATE TABLE deletions (
            id {id},
            what TEXT NOT NULL,
            ref TEXT NOT NULL,
            at {real} NOT NULL,
            reason TEXT NOT NULL)""",
        "CREATE INDEX deletions_at ON deletions(at)",
        """CREATE TABLE usage (
            app_id TEXT NOT NULL,
            month TEXT NOT NULL,
            interface TEXT NOT NULL,
            result TEXT NOT NULL,
            calls {int} NOT NULL,
            fee_micros {int} NOT NULL,
            PRIMARY KEY (app_id, month, interface, result))""",
    ]),
    (3, "signed webhooks: per-app signing secrets, a delivery outbox", [
        "ALTER TABLE sessions ADD COLUMN webhook_url TEXT",
        "CREATE INDEX sessions_webhook ON sessions(updated_at) WHERE webhook_url IS NOT NULL",
        """CREATE TABLE app_secrets (
            app_id TEXT PRIMARY KEY,
            webhook_secret {blob} NOT NULL,
            created_at {real} NOT NULL)""",
        """CREATE TABLE webhook_deliveries (
            session_id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL,
            url TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at {real} NOT NULL,
            next_at {real} NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            http_status {int},
            last_error TEXT,
            finished_at {real},
            lease_owner TEXT,
            lease_until {real})""",
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_at) WHERE status = 'pending'",
        "CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at)",
    ]),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def url_origin(url: str) -> str:
    """``scheme://host[:port]/…``: where a URL points, without its path, query or fragment."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}/…"
    except ValueError:
        return "…"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _session_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "session_id": row["session_id"], "app_id": row["app_id"], "state": row["state"],
        "created_at": row["created_at"], "expires_at": row["expires_at"],
        "token_used_at": row["token_used_at"],
        "options": json.loads(row["options"]) if row["options"] else {},
        "result": json.loads(row["result"]) if row["result"] else None,
        "updated_at": row["updated_at"],
    }


def _app_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"app_id": row["app_id"], "name": row["name"], "api_key_hash": row["api_key_hash"],
            "created_at": row["created_at"], "disabled": bool(row["disabled"])}


def _pick(row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {k: row[k] for k in names}


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"unknown session state {state!r}")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SQLRecords(RecordsStore):
    """Every ``RecordsStore`` method over a ``DB``; see the module doc for what backends add."""

    DIALECT: Dialect
    _started = False

    # -- backend hooks ----------------------------------------------------------------------
    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect (the store is usable by ``_connection`` afterwards)."""

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    def _connection(self) -> AsyncContextManager[DB]: ...

    def _migration_guard(self, db: DB) -> AsyncContextManager[None]:
        """Held around the whole migration run (PostgreSQL: an advisory lock)."""
        return contextlib.nullcontext()

    async def _ensure_partitions(self, table: str, times: Iterable[float], force: bool = False) -> None:
        """Make sure rows at these times have a partition to go to (PostgreSQL)."""

    async def _purge_timed(self, table: str, column: str, before: float) -> int:
        async with self._tx() as db:
            return await db.execute(f"DELETE FROM {table} WHERE {column} < ?", before)

    async def _after_migrate(self) -> None:
        """Work on start once the schema is current (PostgreSQL: partitions ahead)."""

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[DB]:
        async with self._connection() as db:
            async with db.transaction():
                yield db

    async def _write(self, fn: Callable[[DB], Awaitable[T]]) -> T:
        async with self._tx() as db:
            return await fn(db)

    async def _timed_write(self, table: str, times: list[float], fn: Callable[[DB], Awaitable[T]]) -> T:
        """A write into a time-keyed table: partitions first, and once more if one was
        dropped in between."""
        await self._ensure_partitions(table, times)
        try:
            return await self._write(fn)
        except MissingPartition:
            await self._ensure_partitions(table, times, force=True)
            return await self._write(fn)

    async def _fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        async with self._connection() as db:
            return await db.fetchone(sql, *args)

    async def _fetchall(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._connection() as db:
            return await db.fetchall(sql, *args)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        await self._open()
        self._started = True
        try:
            await self._migrate()
            await self._after_migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._close()

    async def _migrate(self) -> int:
        async with self._connection() as db:
            async with self._migration_guard(db):
                async with db.transaction():
                    await db.execute(self.DIALECT.ddl(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                        " name TEXT NOT NULL, applied_at {real} NOT NULL)"))
                    await self._adopt_legacy_versions(db)
                current = await self._version(db)
                if current > LATEST_VERSION:
                    raise RecordsError(f"the records database has schema version {current}, newer than"
                                       f" this program's {LATEST_VERSION}")
                for version, name, statements in MIGRATIONS:
                    if version <= current:
                        continue
                    async with db.transaction():
                        # re-checked inside the transaction: another process may have migrated
                        if await db.fetchone("SELECT 1 AS x FROM schema_migrations WHERE version = ?", version):
                            continue
                        for sql in statements:
                            await db.execute(self.DIALECT.ddl(sql))
                        await db.execute("INSERT INTO schema_migrations (version, name, applied_at)"
                                         " VALUES (?, ?, ?)", version, name, time.time())
        return LATEST_VERSION

    async def _adopt_legacy_versions(self, db: DB) -> None:
        """Databases made before ``schema_migrations`` recorded versions elsewhere (SQLite)."""

    @staticmethod
    async def _version(db: DB) -> int:
        row = await db.fetchone("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        return int(row["v"]) if row else 0

    async def ping(self) -> None:
        await self._fetchone("SELECT 1 AS x")

    async def schema_version(self) -> int:
        async with self._connection() as db:
            return await self._version(db)

    # -- apps -------------------------------------------------------------------------------
    async def create_app(self, app_id: str, name: str, api_key_hash: str, now: float) -> dict[str, Any]:
        return await self._insert_app(app_id, name, api_key_hash, now, "")

    async def ensure_app(self, app_id: str, name: str, api_key_hash: str, now: float) -> dict[str, Any]:
        return await self._insert_app(app_id, name, api_key_hash, now, " ON CONFLICT (app_id) DO NOTHING")

    async def _insert_app(self, app_id: str, name: str, api_key_hash: str, now: float,
                          on_conflict: str) -> dict[str, Any]:
        async def w(db: DB) -> dict[str, Any]:
            await db.execute("INSERT INTO apps (app_id, name, api_key_hash, created_at) VALUES (?, ?, ?, ?)"
                             + on_conflict, app_id, name, api_key_hash, now)
            row = await db.fetchone("SELECT * FROM apps WHERE app_id = ?", app_id)
            assert row is not None
            return _app_row(row)
        return await self._write(w)

    async def app_by_key_hash(self, api_key_hash: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM apps WHERE api_key_hash = ?", api_key_hash)
        return _app_row(row) if row else None

    async def get_app(self, app_id: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM apps WHERE app_id = ?", app_id)
        return _app_row(row) if row else None

    # -- sessions ---------------------------------------------------------------------------
    async def create_session(self, session_id: str, app_id: str, client_token_hash: str,
                             options: dict[str, Any], now: float, expires_at: float) -> dict[str, Any]:
        opts = dumps(options)
        hook = options.get("webhook_url")

        async def w(db: DB) -> dict[str, Any]:
            await db.execute(
                "INSERT INTO sessions (session_id, app_id, state, created_at, expires_at, client_token_hash,"
                " options, updated_at, webhook_url) VALUES (?, ?, 'created', ?, ?, ?, ?, ?, ?)",
                session_id, app_id, now, expires_at, client_token_hash, opts, now, hook)
            await db.execute("INSERT INTO session_events (session_id, at, state, detail)"
                             " VALUES (?, ?, 'created', NULL)", session_id, now)
            row = await db.fetchone("SELECT * FROM sessions WHERE session_id = ?", session_id)
            assert row is not None
            return _session_row(row)
        return await self._write(w)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM sessions WHERE session_id = ?", session_id)
        return _session_row(row) if row else None

    async def check_client_token(self, session_id: str, token_hash: str) -> bool:
        row = await self._fetchone("SELECT client_token_hash FROM sessions WHERE session_id = ?", session_id)
        stored = row["client_token_hash"] if row else "0" * 64
        ok = hmac.compare_digest(stored.encode(), token_hash.encode())
        return bool(row) and ok

    async def consume_client_token(self, session_id: str, token_hash: str, now: float
                                   ) -> tuple[dict[str, Any] | None, TokenProblem | None]:
        async def w(db: DB) -> tuple[dict[str, Any] | None, TokenProblem | None]:
            row = await db.fetchone("SELECT * FROM sessions WHERE session_id = ?" + self.DIALECT.for_update,
                                    session_id)
            if row is None or not hmac.compare_digest(row["client_token_hash"].encode(), token_hash.encode()):
                return None, "unknown"
            if row["token_used_at"] is not None:
                return None, "used"
            if now >= row["expires_at"] or row["state"] != "created":
                return None, "expired"
            n = await db.execute(
                "UPDATE sessions SET token_used_at = ?, updated_at = ? WHERE session_id = ?"
                " AND token_used_at IS NULL AND state = 'created' AND expires_at > ?",
                now, now, session_id, now)
            if n != 1:
                return None, "used"
            got = await db.fetchone("SELECT * FROM sessions WHERE session_id = ?", session_id)
            assert got is not None
            return _session_row(got), None
        return await self._write(w)

    async def release_client_token(self, session_id: str, now: float) -> bool:
        async def w(db: DB) -> bool:
            return await db.execute("UPDATE sessions SET token_used_at = NULL, updated_at = ?"
                                    " WHERE session_id = ? AND state = 'created'", now, session_id) == 1
        return await self._write(w)

    async def update_session(self, session_id: str, *, expected_state: str | Collection[str] | None,
                             now: float, state: str | None = None, result: dict[str, Any] | None = None,
                             detail: str | None = None) -> bool:
        if state is not None:
            _check_state(state)
        expected: list[str] | None
        if expected_state is None:
            expected = None
        elif isinstance(expected_state, str):
            expected = [expected_state]
        else:
            expected = list(expected_state)
        for s in expected or ():
            _check_state(s)
        sets = ["updated_at = ?"]
        args: list[Any] = [now]
        if state is not None:
            sets.append("state = ?")
            args.append(state)
        if result is not None:
            sets.append("result = ?")
            args.append(dumps(result))
        sql = f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = ?"
        args.append(session_id)
        if expected is not None:
            if not expected:
                return False
            sql += f" AND state IN ({_marks(len(expected))})"
            args += expected

        async def w(db: DB) -> bool:
            if await db.execute(sql, *args) != 1:
                return False
            if state is not None:
                await db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                                 session_id, now, state, detail)
            return True
        return await self._write(w)

    async def add_event(self, session_id: str, state: str, now: float, detail: str | None = None) -> None:
        _check_state(state)

        async def w(db: DB) -> None:
            await db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                             session_id, now, state, detail)
        await self._write(w)

    async def session_events(self, session_id: str) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT state, at, detail FROM session_events WHERE session_id = ?"
                                    " ORDER BY id", session_id)
        return [_pick(r, ("state", "at", "detail")) for r in rows]

    async def list_expired_sessions(self, now: float, states: Collection[str] = ("created",),
                                    limit: int = 100) -> list[dict[str, Any]]:
        states = list(states)
        for s in states:
            _check_state(s)
        if not states:
            return []
        rows = await self._fetchall(
            f"SELECT * FROM sessions WHERE state IN ({_marks(len(states))}) AND expires_at <= ?"
            " ORDER BY expires_at LIMIT ?", *states, now, limit)
        return [_session_row(r) for r in rows]

    async def count_sessions_by_state(self, states: Collection[str] = ACTIVE_STATES) -> dict[str, int]:
        states = list(states)
        if not states:
            return {}
        rows = await self._fetchall(
            f"SELECT state, COUNT(*) AS n FROM sessions WHERE state IN ({_marks(len(states))})"
            " GROUP BY state", *states)
        got = {r["state"]: int(r["n"]) for r in rows}
        return {s: got.get(s, 0) for s in states}

    # -- media deadlines and leases ---------------------------------------------------------
    async def add_media_objects(self, objects: list[tuple[str, str, str, str, int]], *,
                                created_at: float, delete_at: float) -> None:
        rows = [(key, sid, kind, ct, size, created_at, delete_at) for key, sid, kind, ct, size in objects]
        if not rows:
            return

        async def w(db: DB) -> None:
            # a rewrite of the same key keeps the earliest deadline and revives the record
            await db.executemany(
                "INSERT INTO media_objects (key, session_id, kind, content_type, size, created_at, delete_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " content_type = excluded.content_type, size = excluded.size,"
                f" delete_at = {self.DIALECT.least}(media_objects.delete_at, excluded.delete_at),"
                " deleted_at = NULL, deleted_reason = NULL", rows)
        await self._write(w)

    async def media_object(self, key: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM media_objects WHERE key = ?", key)
        return _pick(row, MEDIA_FIELDS) if row else None

    async def media_objects(self, session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        if kind is None:
            rows = await self._fetchall("SELECT * FROM media_objects WHERE session_id = ? ORDER BY key", session_id)
        else:
            rows = await self._fetchall("SELECT * FROM media_objects WHERE session_id = ? AND kind = ?"
                                        " ORDER BY key", session_id, kind)
        return [_pick(r, MEDIA_FIELDS) for r in rows]

    async def mark_media_deleted(self, keys: Iterable[str], now: float, reason: str) -> int:
        keys = list(dict.fromkeys(keys))

        async def w(db: DB) -> int:
            n = 0
            for k in keys:
                changed = await db.execute(
                    "UPDATE media_objects SET deleted_at = ?, deleted_reason = ?, lease_owner = NULL,"
                    " lease_until = NULL WHERE key = ? AND deleted_at IS NULL", now, reason, k)
                if changed:
                    await self._log_deletion(db, "media", k, now, reason)
                n += changed
            return n
        return await self._write(w)

    async def media_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT * FROM media_objects WHERE deleted_at IS NULL AND delete_at <= ?"
                                    " ORDER BY delete_at, key LIMIT ?", now, limit)
        return [_pick(r, MEDIA_FIELDS) for r in rows]

    async def lease_media_due(self, now: float, owner: str, lease_s: float, limit: int = 100
                              ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        until = now + lease_s

        async def w(db: DB) -> list[dict[str, Any]]:
            due = await db.fetchall(
                "SELECT key FROM media_objects WHERE deleted_at IS NULL AND delete_at <= ?"
                " AND (lease_until IS NULL OR lease_until <= ? OR lease_owner = ?)"
                " ORDER BY delete_at, key LIMIT ?" + self.DIALECT.skip_locked, now, now, owner, limit)
            keys = [r["key"] for r in due]
            if not keys:
                return []
            rows = await db.fetchall(
                f"UPDATE media_objects SET lease_owner = ?, lease_until = ? WHERE key IN ({_marks(len(keys))})"
                f" RETURNING {', '.join(LEASED_FIELDS)}", owner, until, *keys)
            return sorted((_pick(r, LEASED_FIELDS) for r in rows), key=lambda r: (r["delete_at"], r["key"]))
        return await self._write(w)

    async def media_stats(self, now: float) -> dict[str, Any]:
        row = await self._fetchone(
            "SELECT MIN(created_at) AS oldest, COUNT(*) AS live,"
            " COALESCE(SUM(CASE WHEN delete_at <= ? THEN 1 ELSE 0 END), 0) AS past"
            " FROM media_objects WHERE deleted_at IS NULL", now)
        assert row is not None
        return {"oldest_live_created_at": row["oldest"], "past_deadline": int(row["past"]),
                "live_objects": int(row["live"])}

    # -- session keys -----------------------------------------------------------------------
    async def put_session_key(self, session_id: str, key: bytes, now: float) -> None:
        key = bytes(key)

        async def w(db: DB) -> None:
            await db.execute("INSERT INTO session_keys (session_id, key, created_at) VALUES (?, ?, ?)"
                             " ON CONFLICT (session_id) DO NOTHING", session_id, key, now)
            row = await db.fetchone("SELECT key FROM session_keys WHERE session_id = ?", session_id)
            if row is None or not hmac.compare_digest(bytes(row["key"]), key):
                raise RecordsError("a different media key is stored for this session already")
        await self._write(w)

    async def get_session_key(self, session_id: str) -> bytes | None:
        row = await self._fetchone("SELECT key FROM session_keys WHERE session_id = ?", session_id)
        return bytes(row["key"]) if row else None

    async def shred_session_key(self, session_id: str, now: float, reason: str) -> bool:
        async def w(db: DB) -> bool:
            if not await db.execute("DELETE FROM session_keys WHERE session_id = ?", session_id):
                return False
            await self._log_deletion(db, "session_key", session_id, now, reason)
            return True
        return await self._write(w)

    async def sessions_with_expired_media(self, now: float, limit: int) -> list[str]:
        rows = await self._fetchall(
            "SELECT k.session_id FROM session_keys k WHERE NOT EXISTS ("
            "  SELECT 1 FROM media_objects m WHERE m.session_id = k.session_id"
            "  AND m.deleted_at IS NULL AND m.delete_at > ?)"
            " AND (k.created_at <= ? OR EXISTS ("
            "  SELECT 1 FROM media_objects m WHERE m.session_id = k.session_id))"
            " ORDER BY k.created_at, k.session_id LIMIT ?", now, now - ORPHAN_KEY_AFTER_S, limit)
        return [r["session_id"] for r in rows]

    # -- the deletion log -------------------------------------------------------------------
    @staticmethod
    async def _log_deletion(db: DB, what: str, ref: str, at: float, reason: str) -> None:
        await db.execute("INSERT INTO deletions (what, ref, at, reason) VALUES (?, ?, ?, ?)", what, ref, at, reason)

    async def add_deletion(self, what: str, ref: str, at: float, reason: str) -> None:
        async def w(db: DB) -> None:
            await self._log_deletion(db, what, ref, at, reason)
        await self._write(w)

    async def deletions(self, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if since is None:
            rows = await self._fetchall("SELECT what, ref, at, reason FROM deletions ORDER BY id LIMIT ?", limit)
        else:
            rows = await self._fetchall("SELECT what, ref, at, reason FROM deletions WHERE at >= ?"
                                        " ORDER BY id LIMIT ?", since, limit)
        return [_pick(r, ("what", "ref", "at", "reason")) for r in rows]

    # -- webhooks -------------------------------------------------------------------------------
    async def webhook_secret(self, app_id: str, now: float, new: bytes) -> bytes:
        async def w(db: DB) -> bytes:
            await db.execute("INSERT INTO app_secrets (app_id, webhook_secret, created_at) VALUES (?, ?, ?)"
                             " ON CONFLICT (app_id) DO NOTHING", app_id, new, now)
            row = await db.fetchone("SELECT webhook_secret FROM app_secrets WHERE app_id = ?", app_id)
            assert row is not None
            return bytes(row["webhook_secret"])
        return await self._write(w)

    async def sessions_owing_webhooks(self, since: float, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._fetchall(
            "SELECT s.* FROM sessions s WHERE s.webhook_url IS NOT NULL AND s.updated_at >= ?"
            f" AND s.state IN ({_marks(len(FINAL_STATES))})"
            " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.session_id = s.session_id)"
            " ORDER BY s.updated_at LIMIT ?", since, *sorted(FINAL_STATES), limit)
        return [_session_row(r) for r in rows]

    async def add_webhook_delivery(self, session_id: str, app_id: str, url: str, payload: dict[str, Any],
                                   now: float) -> bool:
        body = dumps(payload)

        async def w(db: DB) -> bool:
            n = await db.execute(
                "INSERT INTO webhook_deliveries (session_id, app_id, url, payload, created_at, next_at, attempts,"
                " status) VALUES (?, ?, ?, ?, ?, ?, 0, 'pending') ON CONFLICT (session_id) DO NOTHING",
                session_id, app_id, url, body, now, now)
            return n > 0
        return await self._write(w)

    async def lease_webhooks_due(self, now: float, owner: str, lease_s: float, limit: int = 20
                                 ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []

        async def w(db: DB) -> list[dict[str, Any]]:
            due = await db.fetchall(
                "SELECT session_id FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ?"
                " AND (lease_until IS NULL OR lease_until <= ?)"
                " ORDER BY next_at, session_id LIMIT ?" + self.DIALECT.skip_locked, now, now, limit)
            ids = [r["session_id"] for r in due]
            if not ids:
                return []
            rows = await db.fetchall(
                f"UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? WHERE session_id IN ({_marks(len(ids))})"
                " RETURNING session_id, app_id, url, payload, attempts, created_at", owner, now + lease_s, *ids)
            return sorted((dict(r) for r in rows), key=lambda r: r["session_id"])
        return await self._write(w)

    async def finish_webhook_attempt(self, session_id: str, owner: str, now: float, *, status: str,
                                     http_status: int | None, error: str | None, next_at: float | None) -> bool:
        if status not in ("pending", "delivered", "failed"):
            raise ValueError(f"unknown webhook status {status!r}")

        async def w(db: DB) -> bool:
            n = await db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, http_status = ?,"
                " last_error = ?, next_at = COALESCE(?, next_at), finished_at = ?, lease_owner = NULL,"
                " lease_until = NULL WHERE session_id = ? AND lease_owner = ? AND status = 'pending'",
                status, http_status, error, next_at, None if status == "pending" else now, session_id, owner)
            if n and status != "pending":
                await self._forget_webhook_url(db, session_id)
            return n > 0
        return await self._write(w)

    @staticmethod
    async def _forget_webhook_url(db: DB, session_id: str) -> None:
        """Once the event is settled, keep only the receiver's origin: a path or query the
        relying party put in its URL could carry personal data, and records live 2 years."""
        row = await db.fetchone("SELECT url FROM webhook_deliveries WHERE session_id = ?", session_id)
        origin = url_origin(row["url"]) if row else None
        await db.execute("UPDATE webhook_deliveries SET url = ? WHERE session_id = ?", origin, session_id)
        srow = await db.fetchone("SELECT options FROM sessions WHERE session_id = ?", session_id)
        if srow is not None:
            opts = json.loads(srow["options"]) if srow["options"] else {}
            if "webhook_url" in opts:
                opts["webhook_url"] = origin
            await db.execute("UPDATE sessions SET webhook_url = NULL, options = ? WHERE session_id = ?",
                             dumps(opts), session_id)

    async def webhook_delivery(self, session_id: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT session_id, app_id, url, payload, created_at, next_at, attempts, status,"
                                   " http_status, last_error, finished_at FROM webhook_deliveries"
                                   " WHERE session_id = ?", session_id)
        if row is None:
            return None
        out = dict(row)
        out["payload"] = json.loads(out["payload"])
        return out

    # -- retention of records ---------------------------------------------------------------
    async def purge_records(self, before: float, now: float) -> dict[str, int]:
        await self._ensure_partitions_ahead(now)
        counts = {table: await self._purge_timed(table, column, before) for table, column in TIMED_TABLES.items()}

        async def w(db: DB) -> dict[str, int]:
            old = "SELECT session_id FROM sessions WHERE updated_at < ?"
            out = {
                "session_events": await db.execute(f"DELETE FROM session_events WHERE session_id IN ({old})", before),
                "session_keys": await db.execute(f"DELETE FROM session_keys WHERE session_id IN ({old})", before),
                "sessions": await db.execute("DELETE FROM sessions WHERE updated_at < ?", before),
                "media_objects": await db.execute("DELETE FROM media_objects WHERE deleted_at < ?", before),
                # a month goes once it has ended by ``before``
                "usage": await db.execute("DELETE FROM usage WHERE month < ?", month_of(before)),
                "deletions": await db.execute("DELETE FROM deletions WHERE at < ?", before),
                "webhook_deliveries": await db.execute("DELETE FROM webhook_deliveries WHERE created_at < ?",
                                                       before),
            }
            for table, n in {**counts, **out}.items():
                if n:
                    await self._log_deletion(db, "records", table, now, f"retention: {n} rows before {before:.0f}")
            return out
        counts.update(await self._write(w))
        return counts

    async def _ensure_partitions_ahead(self, now: float) -> None:
        for table in TIMED_TABLES:
            await self._ensure_partitions(table, [now])

    # -- monitoring, operation logs, usage --------------------------------------------------
    async def add_monitoring(self, call_id: str, app_id: str | None, interface: str, result: str,
                             start_at: float, end_at: float, region: str, fee_micros: int = 0) -> None:
        fee = int(fee_micros)
        if fee < 0:
            raise ValueError("fee_micros must not be negative")

        async def w(db: DB) -> None:
            await db.execute("INSERT INTO monitoring (call_id, app_id, interface, result, start_at, end_at, region,"
                             " fee_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             call_id, app_id, interface, result, start_at, end_at, region, fee)
            if app_id is not None:
                await db.execute(
                    "INSERT INTO usage (app_id, month, interface, result, calls, fee_micros) VALUES (?, ?, ?, ?, 1, ?)"
                    " ON CONFLICT (app_id, month, interface, result) DO UPDATE SET calls = usage.calls + 1,"
                    " fee_micros = usage.fee_micros + excluded.fee_micros",
                    app_id, month_of(start_at), interface, result, fee)
        await self._timed_write("monitoring", [start_at], w)

    async def usage(self, app_id: str, month: str) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT interface, result, calls, fee_micros FROM usage"
                                    " WHERE app_id = ? AND month = ? ORDER BY interface, result", app_id, month)
        return [{"interface": r["interface"], "result": r["result"], "calls": int(r["calls"]),
                 "fee_micros": int(r["fee_micros"])} for r in rows]

    async def add_op_logs(self, rows: Iterable[dict[str, Any]]) -> None:
        data = [(r.get("app_id"), r["call_id"], float(r["at"]), r["step"], dumps(r["detail"])) for r in rows]
        if not data:
            return

        async def w(db: DB) -> None:
            await db.executemany("INSERT INTO op_logs (app_id, call_id, at, step, detail) VALUES (?, ?, ?, ?, ?)", data)
        await self._timed_write("op_logs", [d[2] for d in data], w)

    async def op_logs(self, call_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if call_id is None:
            rows = await self._fetchall("SELECT * FROM op_logs ORDER BY id LIMIT ?", limit)
        else:
            rows = await self._fetchall("SELECT * FROM op_logs WHERE call_id = ? ORDER BY id LIMIT ?", call_id, limit)
        return [{"app_id": r["app_id"], "call_id": r["call_id"], "at": r["at"], "step": r["step"],
                 "detail": json.loads(r["detail"])} for r in rows]
