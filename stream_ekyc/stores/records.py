"""The records store: apps, sessions and their state transitions, media deadlines and
leases, session keys, the deletion log, monitoring data, operation logs and usage.

``RecordsStore`` is the async interface the service uses. Two backends implement it with the
same semantics, both in ``stores/sql.py`` (one body of SQL, two dialects):

* ``SQLiteRecords`` (``stores/sqlite.py``), the embedded default: one file, all work in one
  dedicated worker thread, WAL mode;
* ``PostgresRecords`` (``stores/postgres.py``): an asyncpg pool; monitoring and operation
  logs partitioned by month, so that retention drops whole partitions.

``records_from_url`` picks one by URL. The schema is versioned: numbered migrations run on
start, each in its own transaction, recorded in ``schema_migrations``.

Times are Unix seconds (float, UTC). JSON columns hold compact JSON text. Fees are integer
micro-units of the operator's currency (see ``stream_ekyc/pricing.py``).
"""

from __future__ import annotations

import abc
from typing import Any, Collection, Iterable, Literal
from urllib.parse import urlsplit

from ..config import ConfigError

STATES = ("created", "connected", "fitting", "challenging", "scoring", "done", "failed", "expired")
FINAL_STATES = frozenset({"done", "failed", "expired"})
ACTIVE_STATES = tuple(s for s in STATES if s not in FINAL_STATES)

TokenProblem = Literal["used", "expired", "unknown"]


class RecordsError(RuntimeError):
    """The records store cannot be used (unreachable, newer schema, closed), or a stored
    value conflicts with the one given."""


class RecordsConflict(RecordsError):
    """A unique value (an AppID, an API key hash, a session id) exists already."""


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
    async def add_media_objects(self, objects: list[tuple[str, str, str, str, int]], *,
                                created_at: float, delete_at: float) -> None:
        """Record objects, ``(key, session_id, kind, content_type, size)`` each, and their one
        deletion deadline (before their bytes are written), in one transaction. A rewrite of
        a key keeps the earlier deadline and revives the record."""

    @abc.abstractmethod
    async def media_object(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def media_objects(self, session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """All objects ever recorded for the session (deleted ones included), by key."""

    @abc.abstractmethod
    async def mark_media_deleted(self, keys: Iterable[str], now: float, reason: str) -> int:
        """Mark objects deleted (when and why) and clear their lease, in one transaction that
        also writes one deletion-log row (what ``media``) per object it changed. Objects
        already marked are left alone, so a double delete returns 0. Returns how many rows
        changed. Callers do not ``add_deletion`` for media themselves."""

    @abc.abstractmethod
    async def media_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Undeleted objects past their deadline, earliest deadline first (no lease taken)."""

    @abc.abstractmethod
    async def lease_media_due(self, now: float, owner: str, lease_s: float, limit: int = 100
                              ) -> list[dict[str, Any]]:
        """Claim up to ``limit`` undeleted objects with ``delete_at <= now`` that no other
        owner holds an unexpired lease on: each gets ``lease_owner = owner`` and
        ``lease_until = now + lease_s``. Two owners never get the same row while the lease
        runs (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: one write transaction). An
        owner re-claims its own leased rows. Rows {key, session_id, kind, content_type, size,
        created_at, delete_at}, earliest deadline first."""

    @abc.abstractmethod
    async def media_stats(self, now: float) -> dict[str, Any]:
        """``{"oldest_live_created_at": float | None, "past_deadline": int,
        "live_objects": int}`` over undeleted objects."""

    # session keys (crypto-shredding) ----------------------------------------------------------
    @abc.abstractmethod
    async def put_session_key(self, session_id: str, key: bytes, now: float) -> None:
        """Store the session's media key. Idempotent for the same key; ``RecordsError`` when a
        different key is stored already."""

    @abc.abstractmethod
    async def get_session_key(self, session_id: str) -> bytes | None:
        """The session's media key, or None (never stored, or shredded)."""

    @abc.abstractmethod
    async def shred_session_key(self, session_id: str, now: float, reason: str) -> bool:
        """Delete the key row (making every copy of the session's media unreadable) and write
        a deletion-log row (what ``session_key``) in the same transaction. False when there
        was no key."""

    @abc.abstractmethod
    async def sessions_with_expired_media(self, now: float, limit: int) -> list[str]:
        """Session ids whose key still exists and whose media objects are all deleted or past
        their deadline (at least one object recorded). A key with no object recorded at all
        is listed once it is ``ORPHAN_KEY_AFTER_S`` old. Oldest key first."""

    # the deletion log -------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_deletion(self, what: str, ref: str, at: float, reason: str) -> None:
        """Record a deletion: what kind of thing (``media``, ``session_key``, ``records``, …),
        its reference (object key, session id or table name), when and why. Never content."""

    @abc.abstractmethod
    async def deletions(self, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """[{what, ref, at, reason}] with ``at >= since``, in the order written."""

    # retention of records -----------------------------------------------------------------
    @abc.abstractmethod
    async def purge_records(self, before: float, now: float) -> dict[str, int]:
        """Delete what the retention period is over for: monitoring and operation logs with a
        timestamp before ``before`` (PostgreSQL drops whole monthly partitions and deletes
        rows in the boundary one), sessions last updated before it with their events and
        keys, media records deleted before it, usage of months that ended by then, and
        deletion-log rows before it. Returns the count per table and writes one deletion-log
        row (what ``records``, ref = table) per table that lost rows. PostgreSQL also creates
        the partitions of ``now``'s month and the next ones."""

    # webhooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def webhook_secret(self, app_id: str, now: float, new: bytes) -> bytes:
        """The app's webhook signing secret; ``new`` becomes it if the app has none yet (the
        first caller wins when several race)."""

    @abc.abstractmethod
    async def sessions_owing_webhooks(self, since: float, limit: int = 100) -> list[dict[str, Any]]:
        """Sessions with a webhook URL, in a final state, updated at or after ``since``, that
        have no delivery yet (the outbox is derived from the sessions' state)."""

    @abc.abstractmethod
    async def add_webhook_delivery(self, session_id: str, app_id: str, url: str, payload: dict[str, Any],
                                   now: float) -> bool:
        """Queue the session's completion event (one per session: False if already queued)."""

    @abc.abstractmethod
    async def lease_webhooks_due(self, now: float, owner: str, lease_s: float, limit: int = 20
                                 ) -> list[dict[str, Any]]:
        """Claim pending deliveries due by ``now`` that nobody (this owner included) holds an
        unexpired lease on: rows {session_id, app_id, url, payload (JSON text), attempts,
        created_at}."""

    @abc.abstractmethod
    async def finish_webhook_attempt(self, session_id: str, owner: str, now: float, *, status: str,
                                     http_status: int | None, error: str | None, next_at: float | None) -> bool:
        """Record one attempt by the lease's ``owner``: ``pending`` again (retry at ``next_at``),
        ``delivered`` or ``failed`` (given up). False if the lease was lost meanwhile."""

    @abc.abstractmethod
    async def webhook_delivery(self, session_id: str) -> dict[str, Any] | None:
        """The session's delivery record (payload decoded), or None."""

    # monitoring and operation logs ----------------------------------------------------------
    @abc.abstractmethod
    async def add_monitoring(self, call_id: str, app_id: str | None, interface: str, result: str,
                             start_at: float, end_at: float, region: str, fee_micros: int = 0) -> None:
        """One monitoring row per API call and, for a call made for an AppID, one more call
        (and ``fee_micros``) on its usage row for (app, month of ``start_at``, interface,
        result) — an atomic upsert, so concurrent writers add up exactly."""

    @abc.abstractmethod
    async def usage(self, app_id: str, month: str) -> list[dict[str, Any]]:
        """[{interface, result, calls, fee_micros}] of the app in the month ``YYYY-MM`` (UTC)."""

    @abc.abstractmethod
    async def add_op_logs(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rows of {app_id, call_id, at, step, detail}; ``detail`` must be redacted already."""

    async def add_op_log(self, app_id: str | None, call_id: str, at: float, step: str,
                         detail: dict[str, Any]) -> None:
        await self.add_op_logs([{"app_id": app_id, "call_id": call_id, "at": at, "step": step,
                                 "detail": detail}])

    @abc.abstractmethod
    async def op_logs(self, call_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...


ORPHAN_KEY_AFTER_S = 24 * 3600.0


def redacted_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def records_from_url(url: str) -> RecordsStore:
    """``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, ``sqlite://:memory:`` or
    ``postgresql://user[:password]@host[:port]/dbname[?pool_min=1&pool_max=10&…]``
    (``postgres://`` too; other query parameters are PostgreSQL settings, e.g.
    ``search_path=ekyc``)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from .sqlite import SQLiteRecords

        rest = url[len("sqlite://"):]
        if rest in (":memory:", "/:memory:"):
            return SQLiteRecords(":memory:")
        if not rest.startswith("/") or len(rest) < 2:
            raise ConfigError(f"records URL {url!r}: expected sqlite:///path/to/records.sqlite3")
        return SQLiteRecords(rest[1:])  # '//abs' -> '/abs'; '/rel' -> 'rel'
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresRecords

        return PostgresRecords(url)
    raise ConfigError(f"records URL scheme {scheme or '(none)'!r} is not supported"
                      " (supported: sqlite, postgresql)")


def __getattr__(name: str) -> Any:
    # the backends live in their own modules; importable from here as before
    if name == "SQLiteRecords":
        from .sqlite import SQLiteRecords
        return SQLiteRecords
    if name == "PostgresRecords":
        from .postgres import PostgresRecords
        return PostgresRecords
    raise AttributeError(name)
