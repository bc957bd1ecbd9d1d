"""Retention: delete media past its deadline, shred session keys, purge old records.

``Sweeper.sweep_once(now)`` is one pass:

1. **media** — lease the objects past their deadline (``lease_media_due``: each row goes to
   one owner while its lease runs, so two instances never work on the same object), delete
   each from the media backend, then mark them deleted in the records store (which logs each
   deletion once: what, when, why — never content). When the backend fails (an S3 outage),
   the rest of the pass's media work is postponed: nothing is marked, the leases run out and
   the next pass — by this or any other instance — tries again. Deadlines live in the records
   store, so a restart forgets nothing.
2. **keys** — shred the data key of every session whose media are all deleted or past their
   deadline (``sessions_with_expired_media``): from then on no copy of them can be decrypted,
   even while the backend is still unreachable and the bytes are still there.
3. **records** — purge records older than the records retention (``purge_records``), at most
   once per ``purge_every_s`` in a long-running sweeper.

``run()`` does a pass at once and then every ``interval_s``; a pass that fails (the records
store unreachable) is logged in one line and retried on the next tick. With the default
interval of 60 s no object outlives its deadline by more than the interval plus one pass
(while the backend is up). Log lines name counts and exception classes only: no keys, session
ids or URLs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any, Callable

from .media import MediaStore
from .records import RecordsStore

log = logging.getLogger("stream_ekyc.retention")

DEFAULT_INTERVAL_S = 60.0
DEFAULT_RECORDS_RETENTION_S = 2 * 365 * 86400.0
REASON_MEDIA = "retention: media deadline passed"
REASON_KEY = "retention: all media of the session deleted or past deadline"


def default_owner() -> str:
    """A lease owner name unique to this sweeper: host, process and a random suffix."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Sweeper:
    def __init__(self, records: RecordsStore, media: MediaStore, clock: Callable[[], float] = time.time,
                 interval_s: float = DEFAULT_INTERVAL_S, owner: str | None = None, *,
                 lease_s: float | None = None, records_retention_s: float = DEFAULT_RECORDS_RETENTION_S,
                 purge_every_s: float = 3600.0, batch: int = 100, max_batches: int = 100):
        if interval_s <= 0 or records_retention_s <= 0 or batch < 1:
            raise ValueError("interval, records retention and batch must be positive")
        self.records = records
        self.media = media
        self.clock = clock
        self.interval_s = float(interval_s)
        self.owner = owner or default_owner()
        # a crashed sweeper's rows come free after lease_s, in time for the next pass
        self.lease_s = float(lease_s) if lease_s is not None else max(30.0, self.interval_s)
        self.records_retention_s = float(records_retention_s)
        self.purge_every_s = purge_every_s
        self.batch = batch
        self.max_batches = max_batches
        self.next_sweep_at: float | None = None
        self.last_report: dict[str, Any] | None = None
        self._last_purge: float | None = None
        self._media_down = False

    # -- one pass ---------------------------------------------------------------------------
    async def sweep_once(self, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        report: dict[str, Any] = {"owner": self.owner, "at": now}
        report["media"] = await self._sweep_media(now)
        report["keys_shredded"] = await self._shred_keys(now)
        report["records_purged"] = await self._purge(now)
        self.next_sweep_at = now + self.interval_s
        report["next_sweep_at"] = self.next_sweep_at
        self.last_report = report
        return report

    async def _sweep_media(self, now: float) -> dict[str, Any]:
        out = {"due": 0, "deleted": 0, "already_gone": 0, "postponed": 0, "backend": "ok"}
        failure: BaseException | None = None
        for _ in range(self.max_batches):
            rows = await self.records.lease_media_due(now, self.owner, self.lease_s, self.batch)
            out["due"] += len(rows)
            removed: list[str] = []
            for i, row in enumerate(rows):
                try:
                    if not await self.media.remove(row["key"]):
                        out["already_gone"] += 1
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # backend down or refusing: the lease runs out, a later pass retries
                    failure = e
                    out["postponed"] += len(rows) - i
                    break
                removed.append(row["key"])
            if removed:
                out["deleted"] += await self.media.record_deleted(removed, REASON_MEDIA, now)
            if failure is not None or len(rows) < self.batch:
                break
        if failure is not None:
            out["backend"] = "unavailable"
            if not self._media_down:
                log.warning("retention: media backend failed (%s); %d deletion(s) postponed to a later pass",
                            type(failure).__name__, out["postponed"])
            self._media_down = True
        elif self._media_down:
            log.info("retention: media backend answers again")
            self._media_down = False
        return out

    async def _shred_keys(self, now: float) -> int:
        shredded = 0
        for _ in range(self.max_batches):
            sessions = await self.records.sessions_with_expired_media(now, self.batch)
            for sid in sessions:
                if await self.media.shred_session_key(sid, REASON_KEY, now):
                    shredded += 1
            if len(sessions) < self.batch:
                break
        return shredded

    async def _purge(self, now: float) -> dict[str, int] | None:
        if self._last_purge is not None and now - self._last_purge < self.purge_every_s:
            return None
        purged = await self.records.purge_records(now - self.records_retention_s, now)
        self._last_purge = now
        return {k: int(v) for k, v in purged.items()}

    # -- status -----------------------------------------------------------------------------
    async def status(self, now: float | None = None) -> dict[str, Any]:
        """Oldest live media object's age, objects past their deadline, the next sweep."""
        now = self.clock() if now is None else now
        stats = await self.records.media_stats(now)
        oldest = stats.get("oldest_live_created_at")
        return {
            "at": now,
            "live_objects": int(stats.get("live_objects") or 0),
            "oldest_media_age_s": None if oldest is None else round(max(0.0, now - oldest), 3),
            "objects_past_deadline": int(stats.get("past_deadline") or 0),
            "sweep_interval_s": self.interval_s,
            # known to a running sweeper; otherwise an in-service sweeper passes within one interval
            "next_sweep_at": self.next_sweep_at if self.next_sweep_at is not None else now + self.interval_s,
        }

    # -- in the service -----------------------------------------------------------------------
    async def run(self) -> None:
        """A pass now, then one every ``interval_s`` (measured on the event loop's clock)."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.next_sweep_at = self.clock() + self.interval_s
                log.warning("retention: sweep failed (%s); next try in %.0f s", type(e).__name__, self.interval_s)
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))
