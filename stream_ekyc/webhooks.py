"""Signed webhooks: the relying party hears that a session has finished.

A session created with ``webhook_url`` owes one ``session.completed`` event once it reaches a
final state (done, failed or expired). The outbox is derived from the records store — the
dispatcher looks for finished sessions that have no delivery row yet and queues one — so
no event is lost to a crash between recording the result and sending it, and every
instance of the service can dispatch: deliveries are leased (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), attempted, and retried with backoff until a 2xx answer or the last attempt.

The body is JSON without any biometric data or media: the verdict, confidence, reasons,
the face-match decision and the session's times. It is signed with the app's webhook secret
(HMAC-SHA256, shown once by ``stream-ekyc apps create``)::

    Ekyc-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

``verify`` is the receiving side's check (constant-time compare, timestamp tolerance
against replays). Delivery never follows redirects, and by default refuses private,
loopback and link-local addresses (``webhook_allow_private`` lifts that for on-premises
receivers and tests)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp

from .stores.records import RecordsStore

log = logging.getLogger("stream_ekyc.webhooks")

EVENT = "session.completed"
SIGNATURE_HEADER = "Ekyc-Signature"
EVENT_ID_HEADER = "Ekyc-Event-Id"
# seconds after the first attempt's failure before each retry; after the last, give up
BACKOFF_S = (10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3 * 3600.0)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
LOOKBACK_S = 2 * 86400.0      # finished sessions this recent are checked for a missing event
LEASE_S = 60.0
MAX_PARALLEL = 8


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def secret_text(secret: bytes) -> str:
    """How the secret is shown to the relying party (and what ``verify`` takes)."""
    return "whsec_" + secret.hex()


def parse_secret(text: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("whsec_"):
        raise ValueError("a webhook secret looks like whsec_<64 hex digits>")
    try:
        raw = bytes.fromhex(text[len("whsec_"):])
    except ValueError:
        raise ValueError("a webhook secret looks like whsec_<64 hex digits>") from None
    if len(raw) != 32:
        raise ValueError("a webhook secret looks like whsec_<64 hex digits>")
    return raw


def sign(secret: bytes, body: bytes, t: int) -> str:
    mac = hmac.new(secret, str(int(t)).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"t={int(t)},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now: float | None = None, tolerance_s: float = 300.0) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance_s``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError, AttributeError):
        return False
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def payload_for(session: dict[str, Any]) -> dict[str, Any]:
    """The event body for a finished session: decisions only, never media or features."""
    res = session.get("result") or {}
    match = res.get("match")
    return {
        "event": EVENT,
        "session_id": session["session_id"],
        "app_id": session["app_id"],
        "state": session["state"],
        "verdict": res.get("verdict"),
        "confidence": res.get("confidence"),
        "reasons": res.get("reasons"),
        "outcome": res.get("outcome"),
        "match": ({k: match.get(k) for k in ("similarity", "is_match", "threshold", "error") if k in match}
                  if isinstance(match, dict) else None),
        "created_at": session["created_at"],
        "finished_at": session["updated_at"],
    }


def retry_at(attempts_done: int, now: float) -> float | None:
    """When to try again after ``attempts_done`` failed attempts (None: give up)."""
    if attempts_done >= MAX_ATTEMPTS:
        return None
    return now + BACKOFF_S[attempts_done - 1]


class BlockedAddress(Exception):
    pass


async def _check_address(url: str, allow_private: bool) -> None:
    """Refuse a host that resolves to a private, loopback, link-local or reserved address."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise BlockedAddress(f"cannot resolve the host ({e.__class__.__name__})") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if not ip.is_global:
            raise BlockedAddress("the host resolves to a non-public address")


class WebhookDispatcher:
    """Finds owed events, leases due deliveries and sends them. One per process."""

    def __init__(self, records: RecordsStore, clock: Callable[[], float] = time.time, *,
                 interval_s: float = 2.0, timeout_s: float = 10.0, allow_private: bool = False,
                 owner: str | None = None):
        self.records = records
        self.clock = clock
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.owner = owner or f"webhooks-{secrets.token_hex(6)}"
        self._secrets: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._pass = asyncio.Lock()      # one pass at a time in this process
        self._task: asyncio.Task | None = None
        self._http: aiohttp.ClientSession | None = None
        self.stats = {"delivered": 0, "retried": 0, "failed": 0}

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, background: bool = True) -> None:
        """Open the HTTP client and (``background``) start the loop: a pass now, then one
        every ``interval_s`` or sooner when poked. Without it, passes are ``run_once`` calls."""
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": "stream-ekyc-webhooks/1"})
        if background:
            self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def poke(self) -> None:
        """A session just finished: look for work now rather than at the next tick."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:   # the store is down: try again at the next tick
                log.warning("webhook dispatch pass failed: %s", e.__class__.__name__)
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    # --- one pass ----------------------------------------------------------------------------
    async def run_once(self) -> dict[str, int]:
        """Queue owed events, then attempt every due delivery this owner can lease."""
        async with self._pass:
            return await self._pass_once()

    async def _pass_once(self) -> dict[str, int]:
        now = self.clock()
        queued = 0
        for s in await self.records.sessions_owing_webhooks(now - LOOKBACK_S, limit=200):
            if await self.records.add_webhook_delivery(s["session_id"], s["app_id"], s["options"]["webhook_url"],
                                                       payload_for(s), now):
                queued += 1
        due = await self.records.lease_webhooks_due(now, self.owner, LEASE_S, limit=50)
        sem = asyncio.Semaphore(MAX_PARALLEL)

        async def one(row: dict[str, Any]) -> str:
            async with sem:
                return await self._attempt(row)
        outcomes = await asyncio.gather(*(one(r) for r in due))
        return {"queued": queued, "attempted": len(due),
                **{k: outcomes.count(k) for k in ("delivered", "retried", "failed")}}

    async def _secret(self, app_id: str) -> bytes:
        key = self._secrets.get(app_id)
        if key is None:
            key = await self.records.webhook_secret(app_id, self.clock(), new_secret())
            if len(self._secrets) > 1024:
                self._secrets.clear()
            self._secrets[app_id] = key
        return key

    async def _attempt(self, row: dict[str, Any]) -> str:
        assert self._http is not None, "start() first"
        sid, url = row["session_id"], row["url"]
        body = row["payload"].encode() if isinstance(row["payload"], str) else row["payload"]
        http_status: int | None = None
        error: str | None = None
        permanent = False
        try:
            await _check_address(url, self.allow_private)
            headers = {"Content-Type": "application/json", EVENT_ID_HEADER: sid,
                       SIGNATURE_HEADER: sign(await self._secret(row["app_id"]), body, int(self.clock()))}
            async with self._http.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                http_status = resp.status
                await resp.read()
            if 200 <= http_status < 300:
                error = None
            else:
                error = f"http_{http_status}"
                permanent = http_status == 410      # the receiver says: gone, stop
        except BlockedAddress as e:
            error, permanent = str(e), True
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            error = e.__class__.__name__
        now = self.clock()
        attempts = int(row["attempts"]) + 1
        if error is None:
            status, next_at = "delivered", None
        else:
            next_at = None if permanent else retry_at(attempts, now)
            status = "pending" if next_at is not None else "failed"
        await self.records.finish_webhook_attempt(sid, self.owner, now, status=status, http_status=http_status,
                                                  error=error, next_at=next_at)
        outcome = {"delivered": "delivered", "pending": "retried", "failed": "failed"}[status]
        self.stats[outcome] += 1
        if status != "delivered":
            # the host only: a URL's path or query may carry the receiver's own tokens
            log.info("webhook to %s: attempt %d %s (%s)", urlsplit(url).hostname, attempts, outcome, error)
        return outcome


def describe(delivery: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the API shows of a delivery: its state, never the URL or the payload."""
    if delivery is None:
        return None
    return {k: delivery.get(k) for k in ("status", "attempts", "http_status", "last_error", "finished_at")}


