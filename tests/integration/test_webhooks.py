"""Signed webhooks against a real receiver on 127.0.0.1, over both records backends (SQLite
and the real PostgreSQL): delivery and signature, retries with backoff, giving up, exactly
once with two dispatchers, refusal of non-public addresses. Times are a controllable clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from stream_ekyc import webhooks as W
from stream_ekyc.stores.records import RecordsStore
from tests.instances import open_records as store
from tests.postgres_db import fresh_database

T0 = 1_790_000_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Receiver:
    """An HTTP endpoint that answers with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [])
        self.calls: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append({"headers": dict(request.headers), "body": body, "path": request.path})
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")


@contextlib.asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hooks/ekyc", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]     # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/hooks/ekyc"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def records_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/records.sqlite3"
    else:
        with fresh_database() as url:
            yield url


@contextlib.asynccontextmanager
async def dispatcher(rec: RecordsStore, clock: Clock, allow_private: bool = True) -> AsyncIterator[W.WebhookDispatcher]:
    d = W.WebhookDispatcher(rec, clock, interval_s=3600.0, timeout_s=5.0, allow_private=allow_private)
    await d.start(background=False)      # the test makes each pass
    try:
        yield d
    finally:
        await d.close()


RESULT = {"verdict": "spoof", "confidence": 97, "score": 0.03, "reasons": ["flat_response"],
          "outcome": "failed", "features": {"fit": 0.9}, "best_frame_quality": {"t": 1.0},
          "match": None}


async def finished_session(rec: RecordsStore, sid: str, url: str | None, now: float,
                           state: str = "done") -> None:
    if await rec.get_app("app_w") is None:
        await rec.create_app("app_w", "w", "h" * 64, now)
    opts = {"locale": "en", **({"webhook_url": url} if url else {})}
    await rec.create_session(sid, "app_w", "t" * 64, opts, now=now, expires_at=now + 180)
    assert await rec.update_session(sid, expected_state="created", now=now + 5, state=state,
                                    result=RESULT if state == "done" else None)


async def test_a_finished_session_is_delivered_once_and_signed(records_url: str) -> None:
    clock = Clock()
    async with store(records_url) as rec, serve(Receiver()) as rx, dispatcher(rec, clock) as d:
        await finished_session(rec, "ses_a", rx.url, T0)
        await finished_session(rec, "ses_quiet", None, T0)          # no webhook asked for
        clock.t = T0 + 6
        assert await d.run_once() == {"queued": 1, "attempted": 1, "delivered": 1, "retried": 0, "failed": 0}
        assert await d.run_once() == {"queued": 0, "attempted": 0, "delivered": 0, "retried": 0, "failed": 0}
        assert len(rx.calls) == 1
        call = rx.calls[0]
        secret = await rec.webhook_secret("app_w", clock(), W.new_secret())
        assert W.verify(secret, call["headers"][W.SIGNATURE_HEADER], call["body"], now=clock())
        assert not W.verify(W.new_secret(), call["headers"][W.SIGNATURE_HEADER], call["body"], now=clock())
        assert not W.verify(secret, call["headers"][W.SIGNATURE_HEADER], call["body"] + b" ", now=clock())
        assert call["headers"][W.EVENT_ID_HEADER] == "ses_a"
        body = json.loads(call["body"])
        assert body["event"] == "session.completed" and body["session_id"] == "ses_a"
        assert body["verdict"] == "spoof" and body["reasons"] == ["flat_response"] and body["state"] == "done"
        # decisions only: no score, features or media in the event
        assert not {"score", "features", "best_frame_quality", "media"} & set(body)
        row = await rec.webhook_delivery("ses_a")
        assert row is not None and row["status"] == "delivered" and row["attempts"] == 1
        assert row["http_status"] == 200 and row["finished_at"] == clock()
        assert await rec.webhook_delivery("ses_quiet") is None
        # settled: only the receiver's origin is kept (the path or query could name someone)
        origin = rx.url.rsplit("/hooks", 1)[0] + "/…"
        assert row["url"] == origin
        session = await rec.get_session("ses_a")
        assert session["options"]["webhook_url"] == origin
        assert await rec.sessions_owing_webhooks(T0 - 10) == []


async def test_failures_are_retried_with_backoff_then_delivered(records_url: str) -> None:
    clock = Clock()
    async with store(records_url) as rec, serve(Receiver([500, 503])) as rx, dispatcher(rec, clock) as d:
        await finished_session(rec, "ses_b", rx.url, T0)
        clock.t = T0 + 6
        assert (await d.run_once())["retried"] == 1
        row = await rec.webhook_delivery("ses_b")
        assert row["status"] == "pending" and row["attempts"] == 1 and row["last_error"] == "http_500"
        assert row["url"] == rx.url                       # still needed for the retries
        assert row["next_at"] == clock() + W.BACKOFF_S[0]
        clock.t += W.BACKOFF_S[0] - 1            # not due yet
        assert (await d.run_once())["attempted"] == 0
        clock.t += 1
        assert (await d.run_once())["retried"] == 1
        clock.t += W.BACKOFF_S[1]
        assert (await d.run_once())["delivered"] == 1
        assert len(rx.calls) == 3
        assert len({c["headers"][W.EVENT_ID_HEADER] for c in rx.calls}) == 1   # the same event each time
        row = await rec.webhook_delivery("ses_b")
        assert row["status"] == "delivered" and row["attempts"] == 3 and row["last_error"] is None


async def test_gone_stops_at_once_and_an_unreachable_receiver_is_given_up(records_url: str) -> None:
    clock = Clock()
    async with store(records_url) as rec, serve(Receiver([410])) as rx, dispatcher(rec, clock) as d:
        await finished_session(rec, "ses_gone", rx.url, T0)
        dead = rx.url.rsplit(":", 1)[0] + ":9/hooks/ekyc"        # the discard port: nothing listens
        await finished_session(rec, "ses_dead", dead, T0, state="expired")
        clock.t = T0 + 6
        out = await d.run_once()
        assert out["attempted"] == 2 and out["failed"] == 1 and out["retried"] == 1
        assert (await rec.webhook_delivery("ses_gone"))["status"] == "failed"
        for _ in range(W.MAX_ATTEMPTS - 1):
            clock.t += max(W.BACKOFF_S)
            await d.run_once()
        row = await rec.webhook_delivery("ses_dead")
        assert row["status"] == "failed" and row["attempts"] == W.MAX_ATTEMPTS and row["http_status"] is None
        assert json.loads(json.dumps(row["payload"]))["state"] == "expired"
        clock.t += max(W.BACKOFF_S)
        assert (await d.run_once())["attempted"] == 0           # given up for good


async def test_two_dispatchers_deliver_each_event_exactly_once(records_url: str) -> None:
    clock = Clock()
    n = 20
    async with store(records_url) as rec_a, store(records_url) as rec_b, serve(Receiver()) as rx:
        for i in range(n):
            await finished_session(rec_a, f"ses_{i:02d}", rx.url, T0)
        clock.t = T0 + 6
        async with dispatcher(rec_a, clock) as da, dispatcher(rec_b, clock) as db:
            for _ in range(3):
                await asyncio.gather(da.run_once(), db.run_once())
        ids = [c["headers"][W.EVENT_ID_HEADER] for c in rx.calls]
        assert sorted(ids) == [f"ses_{i:02d}" for i in range(n)]     # every one, none twice


async def test_non_public_addresses_are_refused_unless_allowed(records_url: str) -> None:
    clock = Clock()
    async with store(records_url) as rec, serve(Receiver()) as rx, dispatcher(rec, clock, allow_private=False) as d:
        await finished_session(rec, "ses_private", rx.url, T0)
        clock.t = T0 + 6
        assert (await d.run_once())["failed"] == 1
        assert rx.calls == []
        row = await rec.webhook_delivery("ses_private")
        assert row["status"] == "failed" and "non-public" in row["last_error"]


async def test_the_secret_is_stable_per_app_and_differs_between_apps(records_url: str) -> None:
    async with store(records_url) as rec:
        for app in ("app_1", "app_2"):
            await rec.create_app(app, app, app * 16, T0)
        first = await rec.webhook_secret("app_1", T0, W.new_secret())
        assert await rec.webhook_secret("app_1", T0 + 1, W.new_secret()) == first
        assert await rec.webhook_secret("app_2", T0, W.new_secret()) != first
        assert W.parse_secret(W.secret_text(first)) == first


async def test_the_service_sends_the_event_when_a_session_finishes(make_settings) -> None:
    """Through the API: a session created with a webhook URL, finished by the service, is
    delivered (signed with the app's secret) and its delivery state shows on GET."""
    from stream_ekyc.api.app import set_state
    from tests.integration.conftest import auth, serve as serve_api

    settings = make_settings(ice_loopback_only=True, webhook_interval_s=3600.0)   # only the poke wakes it
    async with serve(Receiver()) as rx, serve_api(settings) as h:
        _, key = await h.new_app()
        s = await h.create_session(key, webhook_url=rx.url)
        sid = s["session_id"]
        r = await h.client.get(f"/v1/sessions/{sid}", headers=auth(key))
        assert (await r.json())["webhook"] == {"status": "owed"}
        assert await set_state(h.app, sid, "expired", expected="created", detail="not started in time")
        for _ in range(200):                       # the dispatcher was poked: it sends at once
            if rx.calls:
                break
            await asyncio.sleep(0.02)
        assert len(rx.calls) == 1
        app_id = (await h.records.get_session(sid))["app_id"]
        secret = await h.records.webhook_secret(app_id, h.clock(), W.new_secret())
        call = rx.calls[0]
        assert W.verify(secret, call["headers"][W.SIGNATURE_HEADER], call["body"], now=h.clock())
        assert json.loads(call["body"])["state"] == "expired"
        for _ in range(100):
            body = await (await h.client.get(f"/v1/sessions/{sid}", headers=auth(key))).json()
            if body["webhook"]["status"] == "delivered":
                break
            await asyncio.sleep(0.02)
        assert body["webhook"] == {"status": "delivered", "attempts": 1, "http_status": 200, "last_error": None,
                                   "finished_at": h.clock()}
