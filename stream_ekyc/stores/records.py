"""The records store: apps, sessions and their state transitions, media deadlines,
monitoring data and operation logs.

``RecordsStore`` is the async interface the service uses; ``SQLiteRecords`` is the embedded
backend. All SQLite work runs in ONE dedicated worker thread (a single-thread executor that
owns the connection), so the event loop never blocks on disk and writes are serialised.
The database runs in WAL mode. The schema is versioned: numbered migrations run on start,
each in its own transaction, recorded in ``schema_version``.

Times are Unix seconds (float, UTC). JSON columns hold compact JSON text.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import hmac
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Literal, TypeVar

from ..config import ConfigError

T = TypeVar("T")

STATES = ("created", "connected", "fitting", "challenging", "scoring", "done", "failed", "expired")
FINAL_STATES = frozenset({"done", "failed", "expired"})
ACTIVE_STATES = tuple(s for s in STATES if s not in FINAL_STATES)

TokenProblem = Literal["used", "expired", "unknown"]


class RecordsError(RuntimeError):
    """The records store cannot be used (unreachable, newer schema, closed)."""


class RecordsStore(abc.ABC):
    """Async records interface. Every method is safe to call from the event loop."""

    # lifecycle ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Open the store and run pending schema migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise when the store is unreachable."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    # apps -----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_app(self, app_id: str, name: str, api_key_hash: str, now: float) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def ensure_app(self, app_id: str, name: str, api_key_hash: str, now: float) -> dict[str, Any]:
        """Create the app unless one with this id exists; return it (idempotent)."""

    @abc.abstractmethod
    async def app_by_key_hash(self, api_key_hash: str) -> dict[str, Any] | None:
        """The app (enabled or not) whose key hashes to this value."""

    @abc.abstractmethod
    async def get_app(self, app_id: str) -> dict[str, Any] | None: ...

    # sessions -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_session(self, session_id: str, app_id: str, client_token_hash: str,
                             options: dict[str, Any], now: float, expires_at: float) -> dict[str, Any]:
        """Insert a session in state ``created`` and its first event."""

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """{session_id, app_id, state, created_at, expires_at, token_used_at, options,
        result, updated_at} or None. ``options``/``result`` are decoded JSON."""

    @abc.abstractmethod
    async def check_client_token(self, session_id: str, token_hash: str) -> bool:
        """True when the hash matches the session's token (constant-time; does not consume)."""

    @abc.abstractmethod
    async def consume_client_token(self, session_id: str, token_hash: str, now: float
                                   ) -> tuple[dict[str, Any] | None, TokenProblem | None]:
        """Atomically mark the token used if it matches, is unused and the session is still
        ``created`` and unexpired. Returns (session, None) or (None, 'used'|'expired'|'unknown')."""

    @abc.abstractmethod
    async def release_client_token(self, session_id: str, now: float) -> bool:
        """Undo a consumption while the session is still ``created`` (the offer was refused
        for capacity, so the page may retry)."""

    @abc.abstractmethod
    async def update_session(self, session_id: str, *, expected_state: str | Collection[str] | None,
                             now: float, state: str | None = None, result: dict[str, Any] | None = None,
                             detail: str | None = None) -> bool:
        """Optimistic update: applies only when the current state is ``expected_state`` (one
        state or several; None = any). A change of state records an event in the same
        transaction. Returns whether the row was updated."""

    @abc.abstractmethod
    async def add_event(self, session_id: str, state: str, now: float, detail: str | None = None) -> None: ...

    @abc.abstractmethod
    async def session_events(self, session_id: str) -> list[dict[str, Any]]:
        """[{state, at, detail}] in order."""

    @abc.abstractmethod
    async def list_expired_sessions(self, now: float, states: Collection[str] = ("created",),
                                    limit: int = 100) -> list[dict[str, Any]]:
        """Sessions in ``states`` whose ``expires_at`` has passed (oldest first)."""

    @abc.abstractmethod
    async def count_sessions_by_state(self, states: Collection[str] = ACTIVE_STATES) -> dict[str, int]: ...

    # media deadlines ------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_media_object(self, key: str, session_id: str, kind: str, content_type: str,
                               size: int, created_at: float, delete_at: float) -> None:
        """Record an object and its deletion deadline (before its bytes are written)."""

    @abc.abstractmethod
    async def media_object(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def media_objects(self, session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """All objects ever recorded for the session (deleted ones included), by key."""

    @abc.abstractmethod
    async def mark_media_deleted(self, keys: Iterable[str], now: float, reason: str) -> int:
        """Record deletion (when and why) of objects not yet marked deleted."""

    @abc.abstractmethod
    async def media_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Undeleted objects past their deadline, earliest deadline first."""

    # monitoring and operation logs ----------------------------------------------------------
    @abc.abstractmethod
    async def add_monitoring(self, call_id: str, app_id: str | None, interface: str, result: str,
                             start_at: float, end_at: float, region: str, fee_units: int = 0) -> None: ...

    @abc.abstractmethod
    async def add_op_logs(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rows of {app_id, call_id, at, step, detail}; ``detail`` must be redacted already."""

    async def add_op_log(self, app_id: str | None, call_id: str, at: float, step: str,
                         detail: dict[str, Any]) -> None:
        await self.add_op_logs([{"app_id": app_id, "call_id": call_id, "at": at, "step": step,
                                 "detail": detail}])

    @abc.abstractmethod
    async def op_logs(self, call_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...


# ---------------------------------------------------------------------------------------------
# SQLite

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE apps (
            app_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            api_key_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL REFERENCES apps(app_id),
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            client_token_hash TEXT NOT NULL,
            token_used_at REAL,
            options TEXT NOT NULL DEFAULT '{}',
            result TEXT,
            updated_at REAL NOT NULL)""",
        "CREATE INDEX sessions_state_expires ON sessions(state, expires_at)",
        "CREATE INDEX sessions_app_created ON sessions(app_id, created_at)",
        """CREATE TABLE session_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT NOT NULL,
            at REAL NOT NULL,
            state TEXT NOT NULL,
            detail TEXT)""",
        "CREATE INDEX session_events_session ON session_events(session_id, id)",
        """CREATE TABLE media_objects (
            key TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL,
            delete_at REAL NOT NULL,
            deleted_at REAL,
            deleted_reason TEXT)""",
        "CREATE INDEX media_objects_session ON media_objects(session_id)",
        "CREATE INDEX media_objects_due ON media_objects(delete_at) WHERE deleted_at IS NULL",
        """CREATE TABLE monitoring (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            call_id TEXT NOT NULL,
            app_id TEXT,
            interface TEXT NOT NULL,
            result TEXT NOT NULL,
            start_at REAL NOT NULL,
            end_at REAL NOT NULL,
            region TEXT NOT NULL,
            fee_units INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX monitoring_start ON monitoring(start_at)",
        "CREATE INDEX monitoring_app_start ON monitoring(app_id, start_at)",
        """CREATE TABLE op_logs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            app_id TEXT,
            call_id TEXT NOT NULL,
            at REAL NOT NULL,
            step TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        "CREATE INDEX op_logs_at ON op_logs(at)",
        "CREATE INDEX op_logs_call ON op_logs(call_id)",
    ]),
]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _session_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "session_id": row["session_id"], "app_id": row["app_id"], "state": row["state"],
        "created_at": row["created_at"], "expires_at": row["expires_at"],
        "token_used_at": row["token_used_at"],
        "options": json.loads(row["options"]) if row["options"] else {},
        "result": json.loads(row["result"]) if row["result"] else None,
        "updated_at": row["updated_at"],
    }


def _app_row(row: sqlite3.Row) -> dict[str, Any]:
    return {"app_id": row["app_id"], "name": row["name"], "api_key_hash": row["api_key_hash"],
            "created_at": row["created_at"], "disabled": bool(row["disabled"])}


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"unknown session state {state!r}")


class SQLiteRecords(RecordsStore):
    """Embedded records in one SQLite file (``:memory:`` works too), one worker thread."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None

    # -- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            raise RecordsError("records store is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None and threading.get_ident() == self._thread_id
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one immediate (write-locked) transaction."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return out

    def _open(self) -> int:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        conn.row_factory = sqlite3.Row
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RecordsError(f"could not put {self.path} in WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn
        self._thread_id = threading.get_ident()
        return self._migrate()

    def _migrate(self) -> int:
        db = self._db()
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise RecordsError(f"{self.path} has schema version {current}, newer than this program's {latest}")
        for version, statements in MIGRATIONS:
            if version <= current:
                continue

            def apply(db: sqlite3.Connection, version: int = version, statements: list[str] = statements) -> None:
                # re-check inside the write lock: another process may have migrated meanwhile
                if db.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,)).fetchone():
                    return
                for sql in statements:
                    db.execute(sql)
                db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, strftime('%s','now'))",
                           (version,))
            self._write(apply)
        return latest

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records-sqlite")
        try:
            await self._run(self._open)
        except sqlite3.Error as e:
            await self.close()
            raise RecordsError(f"cannot open records database {self.path}: {e}") from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        ex = self._executor
        if ex is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor = None
            await asyncio.get_running_loop().run_in_executor(None, ex.shutdown)

    async def ping(self) -> None:
        def q() -> None:
            self._db().execute("SELECT 1").fetchone()
        await self._run(q)

    async def schema_version(self) -> int:
        def q() -> int:
            return int(self._db().execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        return await self._run(q)

    # -- apps -------------------------------------------------------------------------------
    async def create_app(self, app_id: str, name: str, api_key_hash: str, now: float) -> dict[str, Any]:
        def w(db: sqlite3.Connection) -> dict[str, Any]:
            db.execute("INSERT INTO apps (app_id, name, api_key_hash, created_at) VALUES (?, ?, ?, ?)",
                       (app_id, name, api_key_hash, now))
            return _app_row(db.execute("SELECT * FROM apps WHERE app_id = ?", (app_id,)).fetchone())
        return await self._run(self._write, w)

    async def ensure_app(self, app_id: str, name: str, api_key_hash: str, now: float) -> dict[str, Any]:
        def w(db: sqlite3.Connection) -> dict[str, Any]:
            db.execute("INSERT OR IGNORE INTO apps (app_id, name, api_key_hash, created_at) VALUES (?, ?, ?, ?)",
                       (app_id, name, api_key_hash, now))
            return _app_row(db.execute("SELECT * FROM apps WHERE app_id = ?", (app_id,)).fetchone())
        return await self._run(self._write, w)

    async def app_by_key_hash(self, api_key_hash: str) -> dict[str, Any] | None:
        def q() -> dict[str, Any] | None:
            row = self._db().execute("SELECT * FROM apps WHERE api_key_hash = ?", (api_key_hash,)).fetchone()
            return _app_row(row) if row else None
        return await self._run(q)

    async def get_app(self, app_id: str) -> dict[str, Any] | None:
        def q() -> dict[str, Any] | None:
            row = self._db().execute("SELECT * FROM apps WHERE app_id = ?", (app_id,)).fetchone()
            return _app_row(row) if row else None
        return await self._run(q)

    # -- sessions ---------------------------------------------------------------------------
    async def create_session(self, session_id: str, app_id: str, client_token_hash: str,
                             options: dict[str, Any], now: float, expires_at: float) -> dict[str, Any]:
        opts = _dumps(options)

        def w(db: sqlite3.Connection) -> dict[str, Any]:
            db.execute(
                "INSERT INTO sessions (session_id, app_id, state, created_at, expires_at, client_token_hash,"
                " options, updated_at) VALUES (?, ?, 'created', ?, ?, ?, ?, ?)",
                (session_id, app_id, now, expires_at, client_token_hash, opts, now))
            db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, 'created', NULL)",
                       (session_id, now))
            return _session_row(db.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone())
        return await self._run(self._write, w)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        def q() -> dict[str, Any] | None:
            row = self._db().execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            return _session_row(row) if row else None
        return await self._run(q)

    async def check_client_token(self, session_id: str, token_hash: str) -> bool:
        def q() -> bool:
            row = self._db().execute("SELECT client_token_hash FROM sessions WHERE session_id = ?",
                                     (session_id,)).fetchone()
            stored = row[0] if row else "0" * 64
            ok = hmac.compare_digest(stored.encode(), token_hash.encode())
            return bool(row) and ok
        return await self._run(q)

    async def consume_client_token(self, session_id: str, token_hash: str, now: float
                                   ) -> tuple[dict[str, Any] | None, TokenProblem | None]:
        def w(db: sqlite3.Connection) -> tuple[dict[str, Any] | None, TokenProblem | None]:
            row = db.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            if row is None or not hmac.compare_digest(row["client_token_hash"].encode(), token_hash.encode()):
                return None, "unknown"
            if row["token_used_at"] is not None:
                return None, "used"
            if now >= row["expires_at"] or row["state"] != "created":
                return None, "expired"
            cur = db.execute(
                "UPDATE sessions SET token_used_at = ?, updated_at = ? WHERE session_id = ?"
                " AND token_used_at IS NULL AND state = 'created' AND expires_at > ?",
                (now, now, session_id, now))
            if cur.rowcount != 1:
                return None, "used"
            return _session_row(db.execute("SELECT * FROM sessions WHERE session_id = ?",
                                           (session_id,)).fetchone()), None
        return await self._run(self._write, w)

    async def release_client_token(self, session_id: str, now: float) -> bool:
        def w(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE sessions SET token_used_at = NULL, updated_at = ?"
                             " WHERE session_id = ? AND state = 'created'", (now, session_id))
            return cur.rowcount == 1
        return await self._run(self._write, w)

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
        result_json = _dumps(result) if result is not None else None

        def w(db: sqlite3.Connection) -> bool:
            sets = ["updated_at = ?"]
            args: list[Any] = [now]
            if state is not None:
                sets.append("state = ?")
                args.append(state)
            if result_json is not None:
                sets.append("result = ?")
                args.append(result_json)
            sql = f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = ?"
            args.append(session_id)
            if expected is not None:
                sql += f" AND state IN ({', '.join('?' * len(expected))})"
                args += expected
            cur = db.execute(sql, args)
            if cur.rowcount != 1:
                return False
            if state is not None:
                db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                           (session_id, now, state, detail))
            return True
        return await self._run(self._write, w)

    async def add_event(self, session_id: str, state: str, now: float, detail: str | None = None) -> None:
        _check_state(state)

        def w(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO session_events (session_id, at, state, detail) VALUES (?, ?, ?, ?)",
                       (session_id, now, state, detail))
        await self._run(self._write, w)

    async def session_events(self, session_id: str) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT state, at, detail FROM session_events WHERE session_id = ?"
                                      " ORDER BY id", (session_id,)).fetchall()
            return [{"state": r["state"], "at": r["at"], "detail": r["detail"]} for r in rows]
        return await self._run(q)

    async def list_expired_sessions(self, now: float, states: Collection[str] = ("created",),
                                    limit: int = 100) -> list[dict[str, Any]]:
        states = list(states)
        for s in states:
            _check_state(s)

        def q() -> list[dict[str, Any]]:
            rows = self._db().execute(
                f"SELECT * FROM sessions WHERE state IN ({', '.join('?' * len(states))}) AND expires_at <= ?"
                " ORDER BY expires_at LIMIT ?", (*states, now, limit)).fetchall()
            return [_session_row(r) for r in rows]
        return await self._run(q)

    async def count_sessions_by_state(self, states: Collection[str] = ACTIVE_STATES) -> dict[str, int]:
        states = list(states)

        def q() -> dict[str, int]:
            rows = self._db().execute(
                f"SELECT state, COUNT(*) FROM sessions WHERE state IN ({', '.join('?' * len(states))})"
                " GROUP BY state", states).fetchall()
            got = {r[0]: int(r[1]) for r in rows}
            return {s: got.get(s, 0) for s in states}
        return await self._run(q)

    # -- media deadlines --------------------------------------------------------------------
    async def add_media_object(self, key: str, session_id: str, kind: str, content_type: str,
                               size: int, created_at: float, delete_at: float) -> None:
        def w(db: sqlite3.Connection) -> None:
            # a rewrite of the same key keeps the earliest deadline and revives the record
            db.execute(
                "INSERT INTO media_objects (key, session_id, kind, content_type, size, created_at, delete_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET content_type = excluded.content_type,"
                " size = excluded.size, delete_at = MIN(media_objects.delete_at, excluded.delete_at),"
                " deleted_at = NULL, deleted_reason = NULL",
                (key, session_id, kind, content_type, size, created_at, delete_at))
        await self._run(self._write, w)

    @staticmethod
    def _media_row(r: sqlite3.Row) -> dict[str, Any]:
        return {k: r[k] for k in ("key", "session_id", "kind", "content_type", "size", "created_at",
                                  "delete_at", "deleted_at", "deleted_reason")}

    async def media_object(self, key: str) -> dict[str, Any] | None:
        def q() -> dict[str, Any] | None:
            r = self._db().execute("SELECT * FROM media_objects WHERE key = ?", (key,)).fetchone()
            return self._media_row(r) if r else None
        return await self._run(q)

    async def media_objects(self, session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            if kind is None:
                rows = self._db().execute("SELECT * FROM media_objects WHERE session_id = ? ORDER BY key",
                                          (session_id,)).fetchall()
            else:
                rows = self._db().execute("SELECT * FROM media_objects WHERE session_id = ? AND kind = ?"
                                          " ORDER BY key", (session_id, kind)).fetchall()
            return [self._media_row(r) for r in rows]
        return await self._run(q)

    async def mark_media_deleted(self, keys: Iterable[str], now: float, reason: str) -> int:
        keys = list(keys)

        def w(db: sqlite3.Connection) -> int:
            n = 0
            for k in keys:
                n += db.execute("UPDATE media_objects SET deleted_at = ?, deleted_reason = ?"
                                " WHERE key = ? AND deleted_at IS NULL", (now, reason, k)).rowcount
            return n
        return await self._run(self._write, w)

    async def media_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            rows = self._db().execute("SELECT * FROM media_objects WHERE deleted_at IS NULL AND delete_at <= ?"
                                      " ORDER BY delete_at LIMIT ?", (now, limit)).fetchall()
            return [self._media_row(r) for r in rows]
        return await self._run(q)

    # -- monitoring and operation logs ------------------------------------------------------
    async def add_monitoring(self, call_id: str, app_id: str | None, interface: str, result: str,
                             start_at: float, end_at: float, region: str, fee_units: int = 0) -> None:
        def w(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO monitoring (call_id, app_id, interface, result, start_at, end_at, region,"
                       " fee_units) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (call_id, app_id, interface, result, start_at, end_at, region, fee_units))
        await self._run(self._write, w)

    async def add_op_logs(self, rows: Iterable[dict[str, Any]]) -> None:
        data = [(r.get("app_id"), r["call_id"], r["at"], r["step"], _dumps(r["detail"])) for r in rows]

        def w(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO op_logs (app_id, call_id, at, step, detail) VALUES (?, ?, ?, ?, ?)", data)
        await self._run(self._write, w)

    async def op_logs(self, call_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        def q() -> list[dict[str, Any]]:
            if call_id is None:
                rows = self._db().execute("SELECT * FROM op_logs ORDER BY id LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._db().execute("SELECT * FROM op_logs WHERE call_id = ? ORDER BY id LIMIT ?",
                                          (call_id, limit)).fetchall()
            return [{"app_id": r["app_id"], "call_id": r["call_id"], "at": r["at"], "step": r["step"],
                     "detail": json.loads(r["detail"])} for r in rows]
        return await self._run(q)


def records_from_url(url: str) -> RecordsStore:
    """``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``sqlite://:memory:``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        rest = url[len("sqlite://"):]
        if rest in (":memory:", "/:memory:"):
            return SQLiteRecords(":memory:")
        if not rest.startswith("/") or len(rest) < 2:
            raise ConfigError(f"records URL {url!r}: expected sqlite:///path/to/records.sqlite3")
        return SQLiteRecords(Path(rest[1:]))  # '//abs' -> '/abs'; '/rel' -> 'rel'
    raise ConfigError(f"records URL scheme {scheme or '(none)'!r} is not supported (supported: sqlite)")
