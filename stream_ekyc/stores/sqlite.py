"""The embedded records backend: one SQLite file (``:memory:`` works too).

All SQLite work runs in ONE dedicated worker thread (a single-thread executor that owns the
connection), so the event loop never blocks on disk. An ``asyncio.Lock`` gives one caller
the connection at a time, so a transaction's statements never interleave with another
caller's. Write transactions are ``BEGIN IMMEDIATE`` (the write lock up front; other
processes on the same file wait up to ``BUSY_WAIT_S``). The database runs in WAL mode.

A write (``SQLRecords._write``: a function of one ``DB`` that only talks to the database)
runs whole on the worker thread, BEGIN to COMMIT in one hop: its database calls there
complete at once, so its coroutine never suspends and is driven to its end in place. Each
hop between the event loop and a thread costs some tens of microseconds of CPU on both
sides; a state change was four hops (BEGIN, UPDATE, INSERT, COMMIT) and is now one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, TypeVar

from .records import RecordsConflict, RecordsError
from .sql import DB, Dialect, SQLRecords

T = TypeVar("T")

SQLITE = Dialect(real="REAL", int="INTEGER", blob="BLOB", id="INTEGER PRIMARY KEY AUTOINCREMENT",
                 timed_id="INTEGER PRIMARY KEY AUTOINCREMENT",
                 least="MIN", for_update="", skip_locked="", partitioned=False)


class _SQLiteDB:
    """``DB`` over the store's connection; every call is one hop to the worker thread."""

    def __init__(self, store: "SQLiteRecords"):
        self._store = store

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._store._run(self._store._execute, sql, args)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._store._run(lambda: self._store._db().executemany(sql, rows))

    async def fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self._store._run(self._store._fetch, sql, args, 1)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self._store._run(self._store._fetch, sql, args, None)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # runs even when the caller was cancelled: the worker thread is FIFO, so the
            # rollback follows whatever statement was in flight
            await asyncio.shield(self.execute("ROLLBACK"))
            raise
        try:
            await asyncio.shield(self.execute("COMMIT"))
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                await asyncio.shield(self.execute("ROLLBACK"))
            raise


class _ThreadDB:
    """``DB`` on the worker thread, inside a write: every call runs the statement at once."""

    def __init__(self, store: "SQLiteRecords"):
        self._store = store

    async def execute(self, sql: str, *args: Any) -> int:
        return self._store._execute(sql, args)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._store._db().executemany(sql, rows)

    async def fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = self._store._fetch(sql, args, 1)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self._store._fetch(sql, args, None)

    def transaction(self) -> Any:
        raise RecordsError("a write is already one transaction")


def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends, driven on the calling thread; a
    coroutine that does suspend is closed and refused (it awaited something besides the
    database, which a write on the worker thread must not)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value   # type: ignore[no-any-return]
    coro.close()
    raise RecordsError("a records write awaited something other than its database")


BUSY_WAIT_S = 10.0   # how long a connection waits for another one's lock before failing


class SQLiteRecords(SQLRecords):
    """Embedded records in one SQLite file (``:memory:`` works too), one worker thread."""

    DIALECT = SQLITE

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None
        self._lock: asyncio.Lock | None = None

    # -- the worker thread ------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RecordsError("records store is not started")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None and threading.get_ident() == self._thread_id
        return self._conn

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        try:
            return self._db().execute(sql, args).rowcount
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e) or "PRIMARY KEY" in str(e):
                raise RecordsConflict("a record with this id or key exists already") from None
            raise

    def _transaction(self, fn: Callable[[DB], Awaitable[T]]) -> T:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = run_to_end(fn(_ThreadDB(self)))   # type: ignore[arg-type]
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return result

    def _fetch(self, sql: str, args: tuple[Any, ...], n: int | None) -> list[dict[str, Any]]:
        cur = self._db().execute(sql, args)
        rows = cur.fetchmany(n) if n is not None else cur.fetchall()
        if n is not None:
            cur.fetchall()  # finish the statement (an UPDATE … RETURNING applies to every row)
        return [{k: r[k] for k in r.keys()} for r in rows]

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # timeout: SQLite's busy handler waits this long for another connection's lock
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_WAIT_S)
        conn.row_factory = sqlite3.Row
        self._conn = conn
        self._thread_id = threading.get_ident()
        if self.path != ":memory:":
            mode = self._journal_mode_wal(conn)
            if str(mode).lower() != "wal":
                raise RecordsError(f"could not put {self.path} in WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")

    @staticmethod
    def _journal_mode_wal(conn: sqlite3.Connection, wait_s: float = BUSY_WAIT_S) -> str:
        """Switch a (possibly new) file to WAL. The switch needs the file to itself for a
        moment, and SQLite answers "database is locked" at once, without its busy handler,
        when another connection is opening the same file: retry for up to ``wait_s`` (this
        runs on the store's worker thread, never on the event loop)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = None

    # -- SQLRecords hooks -------------------------------------------------------------------
    async def _open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records-sqlite")
        self._lock = asyncio.Lock()
        try:
            await self._run(self._connect)
        except BaseException as e:
            await self._close()
            if isinstance(e, sqlite3.Error):
                raise RecordsError(f"cannot open records database {self.path}: {e}") from None
            raise

    async def start(self) -> None:
        try:
            await super().start()
        except sqlite3.Error as e:
            raise RecordsError(f"cannot open records database {self.path}: {e}") from None

    async def _close(self) -> None:
        ex = self._executor
        if ex is None:
            return
        try:
            await self._run(self._disconnect)
        finally:
            self._executor = None
            await asyncio.get_running_loop().run_in_executor(None, ex.shutdown)

    async def _write(self, fn: Callable[[DB], Awaitable[T]]) -> T:
        """The whole transaction in one hop to the worker thread (module docstring). A
        caller cancelled meanwhile does not stop it: it commits or rolls back whole."""
        if self._lock is None or self._executor is None:
            raise RecordsError("records store is not started")
        async with self._lock:
            return await self._run(self._transaction, fn)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[DB]:
        if self._lock is None or self._executor is None:
            raise RecordsError("records store is not started")
        async with self._lock:
            yield _SQLiteDB(self)

    async def _adopt_legacy_versions(self, db: DB) -> None:
        # the first release recorded applied versions in ``schema_version``
        if await db.fetchone("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"):
            await db.execute("INSERT OR IGNORE INTO schema_migrations (version, name, applied_at)"
                             " SELECT version, 'initial schema', applied_at FROM schema_version")
            await db.execute("DROP TABLE schema_version")
