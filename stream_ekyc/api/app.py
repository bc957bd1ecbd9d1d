"""The aiohttp application factory.

``create_app(settings)`` wires the stores, the shared CPU executor, the live sessions, the
metrics and the background tasks through typed ``web.AppKey``s, and the middlewares:

* ``call_middleware`` (outermost): request id, HTTP metrics, and for every API call one
  monitoring row and operation-log rows with the redacted request/response shapes;
* ``error_middleware``: every error as ``{"error": {"code", "message"}}``;
* ``on_response_prepare``: security headers on every response.

Other modules reach the shared objects through the keys below, e.g. ``app[RECORDS]``,
and record session state changes with :func:`set_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Collection, Protocol

from aiohttp import web

from ..config import Settings
from ..metrics import Metrics
from ..stores.media import MediaStore, media_from_url
from ..stores.records import FINAL_STATES, RecordsStore, records_from_url
from ..stores.redact import redact
from ..stores.retention import Sweeper
from ..webhooks import WebhookDispatcher
from .auth import hash_secret, new_api_key
from .errors import (APP_ID, ERROR_CODE, FEE_UNITS, INTERFACE, OP_REQUEST, OP_STEPS, REQUEST_ID,
                     error_middleware)

log = logging.getLogger("stream_ekyc.api")


class LiveSessions(Protocol):
    async def start(self, session: dict[str, Any], offer_sdp: str, offer_type: str) -> tuple[str, str]: ...
    def active_count(self) -> int: ...
    async def shutdown(self) -> None: ...


LiveFactory = Callable[[web.Application], "LiveSessions | None"]

SETTINGS = web.AppKey("settings", Settings)
RECORDS = web.AppKey("records", RecordsStore)
MEDIA = web.AppKey("media", MediaStore)
METRICS = web.AppKey("metrics", Metrics)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)  # the shared CPU pool (analysis_threads)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
LIVE: web.AppKey[LiveSessions | None] = web.AppKey("live")
_LIVE_FACTORY: web.AppKey[LiveFactory] = web.AppKey("live_factory")
_TASKS: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("background_tasks")
SWEEPER = web.AppKey("retention_sweeper", Sweeper)
WEBHOOKS = web.AppKey("webhooks", WebhookDispatcher)

DEMO_APP_ID = "app_demo"
DEMO_APP_NAME = "demo"
LOOP_LAG_INTERVAL_S = 0.25
EXPIRY_SWEEP_S = 5.0
MAX_LOGGED_BODY = 64 * 1024

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; font-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PERMISSIONS_POLICY = "camera=(self), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"


def _default_live_factory(app: web.Application) -> LiveSessions | None:
    try:
        from stream_ekyc.live import LiveSessions as RealLive  # written separately; may not exist yet
    except ModuleNotFoundError as e:
        if e.name != "stream_ekyc.live":
            raise
        log.warning("live pipeline module not installed: offers will answer 503 unavailable")
        return None
    return RealLive(app)  # type: ignore[no-any-return]


def create_app(settings: Settings, *, live: LiveSessions | None = None,
               clock: Callable[[], float] | None = None,
               live_factory: LiveFactory | None = None) -> web.Application:
    """Build the application. ``live`` is used as given; otherwise ``live_factory(app)`` (by
    default ``stream_ekyc.live.LiveSessions(app)``) builds it at startup, once the stores are
    open. ``clock`` (Unix seconds) is injectable for tests."""
    from .routes import setup_routes

    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[call_middleware, error_middleware])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[CLOCK] = clock or time.time
    app[LIVE] = live
    app[_LIVE_FACTORY] = live_factory or _default_live_factory
    app.cleanup_ctx.append(_stores_ctx)
    app.cleanup_ctx.append(_executor_ctx)
    app.cleanup_ctx.append(_live_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.on_response_prepare.append(_security_headers)
    setup_routes(app)
    return app


# --- lifecycle -------------------------------------------------------------------------------

async def _stores_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    records = records_from_url(settings.records_url)
    await records.start()
    try:
        media = media_from_url(settings.media_url, records, app[CLOCK], settings=settings)
        await media.start()
    except BaseException:
        await records.close()
        raise
    app[RECORDS] = records
    app[MEDIA] = media
    if settings.demo:
        await ensure_demo_app(records, app[CLOCK]())
    try:
        yield
    finally:
        await media.close()
        await records.close()


async def ensure_demo_app(records: RecordsStore, now: float) -> None:
    """The built-in demo app (idempotent). Its key is random and never shown: demo sessions
    are created through /demo/session from loopback only."""
    await records.ensure_app(DEMO_APP_ID, DEMO_APP_NAME, hash_secret(new_api_key()), now)


async def _executor_ctx(app: web.Application) -> AsyncIterator[None]:
    ex = ThreadPoolExecutor(max_workers=app[SETTINGS].analysis_threads, thread_name_prefix="analysis")
    app[EXECUTOR] = ex
    try:
        yield
    finally:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: ex.shutdown(wait=True, cancel_futures=True))


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    live = app[LIVE]
    if live is None:
        live = app[_LIVE_FACTORY](app)
        app[LIVE] = live
    app[METRICS].live_sessions.set_callback(lambda: float(live.active_count()) if live is not None else 0.0)
    try:
        yield
    finally:
        if live is not None:
            try:
                await live.shutdown()
            except Exception:
                log.exception("live sessions did not shut down cleanly")


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # media past its deadline, session keys, old records (stores/retention.py); a pass now, then every interval
    sweeper = app[SWEEPER] = Sweeper(app[RECORDS], app[MEDIA], app[CLOCK], interval_s=settings.retention_interval_s,
                                     records_retention_s=settings.records_ttl_s)
    tasks = [asyncio.create_task(_loop_lag_monitor(app), name="loop-lag"),
             asyncio.create_task(_expiry_loop(app), name="session-expiry"),
             asyncio.create_task(sweeper.run(), name="retention-sweeper")]
    app[_TASKS] = tasks
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Signed ``session.completed`` events to the relying party's webhook URL (webhooks.py)."""
    settings = app[SETTINGS]
    dispatcher = WebhookDispatcher(
        app[RECORDS], app[CLOCK], interval_s=settings.webhook_interval_s, timeout_s=settings.webhook_timeout_s,
        # the same rule as the URL check: loopback receivers only in demo and test setups
        allow_private=settings.webhook_allow_private or settings.demo or settings.ice_loopback_only)
    await dispatcher.start()
    app[WEBHOOKS] = dispatcher
    try:
        yield
    finally:
        await dispatcher.close()


async def _loop_lag_monitor(app: web.Application, interval: float = LOOP_LAG_INTERVAL_S) -> None:
    """How late the loop wakes a sleep: the delay every coroutine suffers at that moment."""
    metrics = app[METRICS]
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - t0 - interval)
        metrics.loop_lag.observe(lag)
        metrics.loop_lag_last.set(lag)


async def _expiry_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(EXPIRY_SWEEP_S)
        try:
            await expire_due_sessions(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session expiry sweep failed")


async def expire_due_sessions(app: web.Application) -> int:
    """Move ``created`` sessions past their deadline to ``expired``; returns how many."""
    n = 0
    while True:
        rows = await app[RECORDS].list_expired_sessions(app[CLOCK](), states=("created",), limit=100)
        for row in rows:
            if await set_state(app, row["session_id"], "expired", expected="created", detail="not started in time"):
                n += 1
        if len(rows) < 100:
            return n


# --- session state ---------------------------------------------------------------------------

async def set_state(app: web.Application, session_id: str, state: str, *,
                    expected: str | Collection[str] | None, detail: str | None = None,
                    result: dict[str, Any] | None = None) -> bool:
    """Record a state transition (optimistically: only from ``expected``), optionally with the
    result JSON, as one store transaction that also appends the session event. Updates the
    transition and verdict metrics. Returns False when the session was not in ``expected``."""
    ok = await app[RECORDS].update_session(session_id, expected_state=expected, now=app[CLOCK](),
                                           state=state, result=result, detail=detail)
    if ok:
        metrics = app[METRICS]
        metrics.session_transitions.inc(state=state)
        if state in FINAL_STATES and result and result.get("verdict") is not None:
            metrics.verdicts.inc(verdict=str(result["verdict"]))
        if state in FINAL_STATES and WEBHOOKS in app:
            app[WEBHOOKS].poke()
    return ok


# --- middlewares and signals -----------------------------------------------------------------

def _canonical(request: web.Request) -> str:
    try:
        resource = request.match_info.route.resource
    except Exception:
        resource = None
    return resource.canonical if resource is not None else "unmatched"


def note(request: web.Request, step: str, **detail: Any) -> None:
    """Add a step to this call's operation log (redacted before it is stored)."""
    request.setdefault(OP_STEPS, []).append((step, detail))


@web.middleware
async def call_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    app = request.app
    request[REQUEST_ID] = secrets.token_hex(8)
    start = app[CLOCK]()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:  # redirects raised by handlers
        status = e.status
        raise
    finally:
        route = _canonical(request)
        app[METRICS].http_requests.inc(route=route, status=str(status))
        interface = request.get(INTERFACE)
        if interface is not None:
            await _record_call(request, interface, route, status, start, response)


async def _record_call(request: web.Request, interface: str, route: str, status: int, start: float,
                       response: web.StreamResponse | None) -> None:
    app = request.app
    end = app[CLOCK]()
    call_id = request[REQUEST_ID]
    app_id = request.get(APP_ID)
    code = request.get(ERROR_CODE)
    result = "ok" if status < 400 else (code or f"http_{status}")
    rows = [{"app_id": app_id, "call_id": call_id, "at": start, "step": "request",
             "detail": redact({"interface": interface, "method": request.method, "route": route,
                               "params": dict(request.match_info), "query": dict(request.query),
                               "ip": request.remote or "", "content_type": request.content_type,
                               "content_length": request.content_length,
                               "body": request.get(OP_REQUEST)})}]
    for step, detail in request.get(OP_STEPS, []):
        rows.append({"app_id": app_id, "call_id": call_id, "at": end, "step": step, "detail": redact(detail)})
    rows.append({"app_id": app_id, "call_id": call_id, "at": end, "step": "response",
                 "detail": redact({"status": status, "error": code, "body": _response_shape(response)})})
    try:
        records = app[RECORDS]
        settings = app[SETTINGS]
        fee = settings.prices.fee_micros(interface, int(request.get(FEE_UNITS, 0)))
        await records.add_monitoring(call_id, app_id, interface, result, start, end, settings.region, fee)
        await records.add_op_logs(rows)
    except Exception:
        log.exception("could not record call %s (%s)", call_id, interface)


def _response_shape(response: web.StreamResponse | None) -> Any:
    if response is None:
        return None
    if isinstance(response, web.Response) and response.content_type == "application/json":
        body = response.body
        if isinstance(body, (bytes, bytearray)) and len(body) <= MAX_LOGGED_BODY:
            try:
                return json.loads(body)
            except ValueError:
                return {"content_type": response.content_type}
    length = response.content_length
    return {"content_type": response.content_type, "bytes": length}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h["Server"] = "stream-ekyc"
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["Permissions-Policy"] = PERMISSIONS_POLICY
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.secure or request.app[SETTINGS].is_https:
        h["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    if REQUEST_ID in request:
        h["X-Request-Id"] = request[REQUEST_ID]
    if "Cache-Control" not in h and not request.path.startswith("/s/"):
        h["Cache-Control"] = "no-store"
