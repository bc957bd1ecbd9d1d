"""The PostgreSQL records backend: an asyncpg pool, several service processes per database.

* Migrations run under a session advisory lock, so two processes starting together migrate
  once (the other waits, then finds the versions applied).
* ``monitoring`` and ``op_logs`` are range-partitioned by month on their timestamp
  (``monitoring_p202611`` holds [2026-11-01, 2026-12-01) UTC). Partitions are created on
  start (last month to two months ahead), on retention purge (``now``'s month and the next
  two) and before any insert whose month has none yet. Retention drops whole partitions and
  deletes rows only in the boundary one. Partition DDL runs under a transaction advisory
  lock, in its own short transaction.
* Single-use tokens lock the session row (``FOR UPDATE``); media leases use
  ``FOR UPDATE SKIP LOCKED``; usage counts are ``INSERT … ON CONFLICT DO UPDATE`` upserts.

URL: ``postgresql://user[:password]@host[:port]/dbname``; ``pool_min`` / ``pool_max`` query
parameters size the pool (default 1 / 10); other query parameters are server settings
(e.g. ``search_path``).
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import zlib
from typing import Any, AsyncIterator, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..config import ConfigError
from ..pricing import month_bounds, month_start, next_month
from .records import RecordsConflict, RecordsError, redacted_url
from .sql import TIMED_TABLES, DB, Dialect, MissingPartition, SQLRecords

POSTGRES = Dialect(real="DOUBLE PRECISION", int="BIGINT", blob="BYTEA", id="BIGSERIAL PRIMARY KEY",
                   timed_id="BIGSERIAL",
                   least="LEAST", for_update=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED",
                   partitioned=True)

MIGRATION_LOCK = zlib.crc32(b"stream_ekyc:migrations")
PARTITION_LOCK = zlib.crc32(b"stream_ekyc:partitions")
MONTHS_AHEAD = 2
_PART_RE = re.compile(r"^(?P<table>[a-z_]+)_p(?P<y>\d{4})(?P<m>\d{2})$")


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2, …`` (the SQL of this package has no ``?`` elsewhere)."""
    n = 0

    def sub(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"
    return re.sub(r"\?", sub, sql)


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1] if status else ""
    return int(tail) if tail.isdigit() else 0


def _partition_name(table: str, year: int, month: int) -> str:
    return f"{table}_p{year:04d}{month:02d}"


class _PgDB:
    """``DB`` over one pooled asyncpg connection."""

    def __init__(self, conn: Any):
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        with _translated():
            return _rowcount(await self.conn.execute(_numbered(sql), *args))

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with _translated():
            await self.conn.executemany(_numbered(sql), rows)

    async def fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        with _translated():
            row = await self.conn.fetchrow(_numbered(sql), *args)
        return dict(row.items()) if row is not None else None

    async def fetchall(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with _translated():
            rows = await self.conn.fetch(_numbered(sql), *args)
        return [dict(r.items()) for r in rows]

    def transaction(self) -> Any:
        return self.conn.transaction()


@contextlib.contextmanager
def _translated() -> Any:
    import asyncpg

    try:
        yield
    except asyncpg.UniqueViolationError:
        raise RecordsConflict("a record with this id or key exists already") from None
    except asyncpg.CheckViolationError as e:
        if "no partition" in str(e):
            raise MissingPartition() from None
        raise


class PostgresRecords(SQLRecords):
    """Records in PostgreSQL through an asyncpg pool (see the module doc)."""

    DIALECT = POSTGRES

    def __init__(self, url: str):
        parts = urlsplit(url)
        if not parts.path.strip("/") and not parts.hostname:
            raise ConfigError(f"records URL {redacted_url(url)!r}: expected postgresql://user@host/dbname")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            self.pool_min = int(query.pop("pool_min", 1))
            self.pool_max = int(query.pop("pool_max", 10))
        except ValueError:
            raise ConfigError(f"records URL {redacted_url(url)!r}: pool_min and pool_max must be integers") from None
        if not 0 <= self.pool_min <= self.pool_max or not 1 <= self.pool_max <= 1000:
            raise ConfigError(f"records URL {redacted_url(url)!r}: need 0 <= pool_min <= pool_max <= 1000")
        self.url = parts._replace(scheme="postgresql", query=urlencode(query)).geturl()
        self._pool: Any = None
        self._partitions: set[tuple[str, int, int]] = set()  # (table, year, month) known to exist

    # -- SQLRecords hooks -------------------------------------------------------------------
    async def _open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=self.pool_min, max_size=self.pool_max,
                                                   command_timeout=60)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise RecordsError(f"cannot open records database {redacted_url(self.url)}:"
                               f" {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        self._partitions.clear()
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[DB]:
        if self._pool is None:
            raise RecordsError("records store is not started")
        async with self._pool.acquire() as conn:
            yield _PgDB(conn)

    @contextlib.asynccontextmanager
    async def _migration_guard(self, db: DB) -> AsyncIterator[None]:
        await db.execute("SELECT pg_advisory_lock(?)", MIGRATION_LOCK)
        try:
            yield
        finally:
            await db.execute("SELECT pg_advisory_unlock(?)", MIGRATION_LOCK)

    async def _after_migrate(self) -> None:
        await self._ensure_partitions_ahead(time.time(), months_back=1)

    async def _ensure_partitions_ahead(self, now: float, months_back: int = 0) -> None:
        """Partitions from ``months_back`` months before ``now``'s month to ``MONTHS_AHEAD`` after."""
        y, m, _, _ = month_bounds(now)
        for _ in range(months_back):
            y, m = (y - 1, 12) if m == 1 else (y, m - 1)
        months = []
        for _ in range(months_back + MONTHS_AHEAD + 1):
            months.append(month_start(y, m))
            y, m = next_month(y, m)
        for table in TIMED_TABLES:
            await self._ensure_partitions(table, months)

    async def _ensure_partitions(self, table: str, times: Iterable[float], force: bool = False) -> None:
        wanted = {month_bounds(t) for t in times}
        missing = sorted(b for b in wanted if force or (table, b[0], b[1]) not in self._partitions)
        if not missing:
            return
        async with self._tx() as db:
            await db.execute("SELECT pg_advisory_xact_lock(?)", PARTITION_LOCK)
            for y, m, lo, hi in missing:
                await db.execute(f"CREATE TABLE IF NOT EXISTS {_partition_name(table, y, m)}"
                                 f" PARTITION OF {table} FOR VALUES FROM ({lo!r}) TO ({hi!r})")
        self._partitions.update((table, y, m) for y, m, _, _ in missing)

    async def partitions(self, table: str) -> list[str]:
        """The monthly partitions of a time-keyed table, oldest first (for operators and tests)."""
        async with self._connection() as db:
            return [name for name, _, _ in await self._list_partitions(db, table)]

    @staticmethod
    async def _list_partitions(db: DB, table: str) -> list[tuple[str, float, float]]:
        rows = await db.fetchall("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                                 " WHERE i.inhparent = to_regclass(?)", table)
        out = []
        for r in rows:
            m = _PART_RE.fullmatch(r["name"])
            if m and m.group("table") == table:
                y, mo = int(m.group("y")), int(m.group("m"))
                out.append((r["name"], month_start(y, mo), month_start(*next_month(y, mo))))
        return sorted(out, key=lambda p: p[1])

    async def _purge_timed(self, table: str, column: str, before: float) -> int:
        n = 0
        async with self._tx() as db:
            await db.execute("SELECT pg_advisory_xact_lock(?)", PARTITION_LOCK)
            for name, lo, hi in await self._list_partitions(db, table):
                if hi <= before:
                    row = await db.fetchone(f"SELECT COUNT(*) AS n FROM {name}")
                    n += int(row["n"]) if row else 0
                    await db.execute(f"DROP TABLE {name}")
                    self._partitions = {p for p in self._partitions if _partition_name(*p) != name}
                elif lo < before:
                    n += await db.execute(f"DELETE FROM {name} WHERE {column} < ?", before)
        return n
