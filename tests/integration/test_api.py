"""The REST API on a real socket with the real SQLite and media stores (tmp_path).

The live pipeline is replaced by a stub behind its protocol (it is another module); the
stores, auth, errors, monitoring and operation logs are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from datetime import datetime
from unittest import mock

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import make_mocked_request

from stream_ekyc import models
from stream_ekyc.api.app import MEDIA, METRICS, expire_due_sessions, set_state
from stream_ekyc.api.errors import ERROR_CODES, ApiError
from stream_ekyc.api.openapi import build_openapi
from stream_ekyc.api.routes import ROUTES, demo_session, is_loopback_peer
from stream_ekyc.config import ConfigError, Settings
from stream_ekyc.stores.media import LocalMediaStore, MediaKeyError, audit_frame_name, media_from_url, media_key
from stream_ekyc.stores.records import records_from_url
from stream_ekyc.stores.redact import RedactingFilter
from stream_ekyc.stores.sql import LATEST_VERSION

from .conftest import OFFER_SDP, StubLive, auth, serve


def jpeg(w: int = 64, h: int = 48) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 1] = 200
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def face_jpeg() -> bytes:
    """A real face photo (NASA astronaut portrait, public domain) as an ID photo."""
    import skimage.data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


async def error_of(resp: aiohttp.ClientResponse) -> str:
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def parse_iso(s: str) -> float:
    assert s.endswith("Z")
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# --- creation and auth -----------------------------------------------------------------------

async def test_create_session_shape(make_settings):
    async with serve(make_settings(public_url="https://kyc.example.org")) as h:
        _, key = await h.new_app()
        body = await h.create_session(key, challenge_steps=8, locale="pt-BR")
        assert set(body) == {"session_id", "client_token", "expires_at", "page_url"}
        assert body["client_token"].startswith("ct_") and len(body["client_token"]) == 46
        assert abs(parse_iso(body["expires_at"]) - (h.clock() + 180)) < 0.01
        assert body["page_url"] == (f"https://kyc.example.org/s/#sid={body['session_id']}"
                                    f"&token={body['client_token']}")
        r = await h.client.get(f"/v1/sessions/{body['session_id']}", headers=auth(key))
        assert r.status == 200
        got = await r.json()
        assert got["status"] == "created" and [e["state"] for e in got["events"]] == ["created"]
        assert "result" not in got
        stored = await h.records.get_session(body["session_id"])
        assert stored["options"] == {"challenge_steps": 8, "locale": "pt-BR", "id_photo": False}


async def test_auth_failures(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}, auth("sk_" + "A" * 43),
                        auth(key + "x"), auth(s["client_token"]), {"Authorization": key}):
            r = await h.client.post("/v1/sessions", json={}, headers=headers)
            assert r.status == 401 and await error_of(r) == "unauthorized", headers
            assert "Bearer" in r.headers["WWW-Authenticate"]
            r = await h.client.get(f"/v1/sessions/{s['session_id']}", headers=headers)
            assert r.status == 401


async def test_app_isolation(make_settings):
    async with serve(make_settings()) as h:
        _, key_a = await h.new_app("A")
        _, key_b = await h.new_app("B")
        s = await h.create_session(key_a)
        sid = s["session_id"]
        missing = "ses_doesnotexist0000000"
        for path in (f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/best-frame",
                     f"/v1/sessions/{sid}/audit-frames/0"):
            r_b = await h.client.get(path, headers=auth(key_b))
            r_missing = await h.client.get(path.replace(sid, missing), headers=auth(key_b))
            assert r_b.status == r_missing.status == 404
            assert await r_b.json() == await r_missing.json()  # existence is not revealed
        r = await h.client.delete(f"/v1/sessions/{sid}", headers=auth(key_b))
        assert r.status == 404 and await error_of(r) == "not_found"
        r = await h.client.get(f"/v1/sessions/{sid}", headers=auth(key_a))
        assert r.status == 200


async def test_create_bad_bodies(make_settings):
    async with serve(make_settings(max_body_bytes=4096)) as h:
        _, key = await h.new_app()
        post = h.client.post
        r = await post("/v1/sessions", data=b"{not json", headers={**auth(key), "Content-Type": "application/json"})
        assert r.status == 400 and await error_of(r) == "bad_json"
        r = await post("/v1/sessions", data=b"[1, 2]", headers={**auth(key), "Content-Type": "application/json"})
        assert r.status == 400 and await error_of(r) == "bad_json"
        r = await post("/v1/sessions", data=b"locale=en", headers={**auth(key), "Content-Type": "text/plain"})
        assert r.status == 415 and await error_of(r) == "unsupported_media_type"
        r = await post("/v1/sessions", json={"locale": "x" * 5000}, headers=auth(key))
        assert r.status == 413 and await error_of(r) == "too_large"
        for options in ({"challenge_steps": 5}, {"challenge_steps": 11}, {"challenge_steps": "8"},
                        {"challenge_steps": True}, {"locale": "english language"}, {"colour": "red"},
                        {"webhook_url": "http://hooks.example.com/x"}, {"webhook_url": "ftp://x/y"},
                        {"webhook_url": "https://user:pw@hooks.example.com/"},
                        {"webhook_url": "http://127.0.0.1:9/hook"}):  # http loopback: demo/test only
            r = await post("/v1/sessions", json=options, headers=auth(key))
            assert r.status == 400 and await error_of(r) == "bad_request", options
        r = await post("/v1/sessions", json={"webhook_url": "https://hooks.example.com/x"}, headers=auth(key))
        assert r.status == 201
        r = await h.client.get("/v1/nothing-here")
        assert r.status == 404 and await error_of(r) == "not_found"
        r = await h.client.put("/v1/sessions", json={}, headers=auth(key))
        assert r.status == 405 and await error_of(r) == "method_not_allowed"


async def test_webhook_http_loopback_allowed_in_demo(make_settings):
    async with serve(make_settings(demo=True)) as h:
        _, key = await h.new_app()
        await h.create_session(key, webhook_url="http://127.0.0.1:8099/hook")


# --- ID photo --------------------------------------------------------------------------------

async def test_id_photo_accepted_and_stored_with_deadline(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        photo = face_jpeg()
        s = await h.create_session(key, id_photo=base64.b64encode(photo).decode())
        objs = await h.records.media_objects(s["session_id"])
        # the photo and its face embedding (128 float32), both under the media deadline
        assert sorted((o["kind"], o["content_type"], o["size"]) for o in objs) == [
            ("id_photo", "application/octet-stream", 512), ("id_photo", "image/jpeg", len(photo))]
        assert all(abs(o["delete_at"] - (h.clock() + 7200)) < 0.01 for o in objs)
        photo_obj = next(o for o in objs if o["content_type"] == "image/jpeg")
        assert await h.app[MEDIA].get(photo_obj["key"]) == photo
        # multipart: fields and a file part
        form = aiohttp.FormData()
        form.add_field("challenge_steps", "7")
        form.add_field("id_photo", photo, filename="id.jpg", content_type="image/jpeg")
        r = await h.client.post("/v1/sessions", data=form, headers=auth(key))
        assert r.status == 201, await r.text()
        sid = (await r.json())["session_id"]
        assert (await h.records.get_session(sid))["options"]["challenge_steps"] == 7
        assert len(await h.app[MEDIA].list_session(sid)) == 2


async def test_id_photo_errors(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        good = jpeg()
        cases = {
            "photo_bad_base64": "this is not base64!!",
            "photo_unsupported_format": base64.b64encode(b"GIF89a" + b"\x00" * 100).decode(),
            "photo_corrupt_image": base64.b64encode(good[:40] + b"\x00" * 200).decode(),
            "photo_too_many_pixels": base64.b64encode(png_header(9000, 10)).decode(),
            "photo_no_face": base64.b64encode(good).decode(),      # a green square
        }
        for code, value in cases.items():
            r = await h.client.post("/v1/sessions", json={"id_photo": value}, headers=auth(key))
            assert r.status == 422 and await error_of(r) == code, code
        big = good + b"\x00" * (10 * 1024 * 1024)  # valid header, over 10 MB, under the body limit
        form = aiohttp.FormData()
        form.add_field("id_photo", big, filename="id.jpg", content_type="image/jpeg")
        r = await h.client.post("/v1/sessions", data=form, headers=auth(key))
        assert r.status == 422 and await error_of(r) == "photo_too_large"
        # nothing was created by the refused requests
        rows = sqlite3.connect(h.settings.records_url.removeprefix("sqlite:///")).execute(
            "SELECT COUNT(*) FROM sessions").fetchone()[0]
        assert rows == 0


# --- offer -----------------------------------------------------------------------------------

async def test_offer_token_single_use(make_settings):
    live = StubLive()
    async with serve(make_settings(), live=live) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        sid, token = s["session_id"], s["client_token"]
        r = await h.offer(sid, None)
        assert r.status == 401 and await error_of(r) == "bad_token"
        r = await h.offer(sid, "ct_" + "B" * 43)
        assert r.status == 401 and await error_of(r) == "bad_token"
        r = await h.offer(sid, key)  # an API key is not a client token
        assert r.status == 401
        r = await h.offer(sid, token)
        assert r.status == 200, await r.text()
        assert await r.json() == {"sdp": StubLive.ANSWER, "type": "answer"}
        assert [x["session_id"] for x in live.started] == [sid]
        r = await h.offer(sid, token)
        assert r.status == 409 and await error_of(r) == "token_used"
        assert len(live.started) == 1
        # a token works only for its own session
        other = await h.create_session(key)
        r = await h.offer(other["session_id"], token)
        assert r.status == 401


async def test_offer_bad_requests_do_not_consume_the_token(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        sid, token = s["session_id"], s["client_token"]
        consent = {"privacy": True, "min_age": True}
        r = await h.client.post(f"/v1/sessions/{sid}/offer", data=b"{oops",
                                headers={**auth(token), "Content-Type": "application/json"})
        assert r.status == 400 and await error_of(r) == "bad_json"
        r = await h.client.post(f"/v1/sessions/{sid}/offer", data=b"sdp", headers={**auth(token),
                                                                                   "Content-Type": "text/plain"})
        assert r.status == 415
        for bad_consent in (None, {}, {"privacy": True}, {"privacy": True, "min_age": False},
                            {"privacy": "yes", "min_age": True}):
            body = {"sdp": OFFER_SDP, "type": "offer"}
            if bad_consent is not None:
                body["consent"] = bad_consent
            r = await h.offer(sid, token, body)
            assert r.status == 400 and await error_of(r) == "consent_required", bad_consent
        for sdp, typ in ((None, "offer"), (42, "offer"), ("hello", "offer"),
                         ("v=0\r\nm=audio 9 RTP/AVP 0\r\n", "offer"), (OFFER_SDP, "answer"),
                         ("v=0\r\nm=video 9 X 96\r\n" + "a=x\r\n" * 20000, "offer")):
            r = await h.offer(sid, token, {"sdp": sdp, "type": typ, "consent": consent})
            assert r.status == 400 and await error_of(r) == "bad_sdp", (str(sdp)[:20], typ)
        r = await h.offer(sid, token)
        assert r.status == 200


async def test_offer_sdp_refused_by_live_fails_the_session(make_settings):
    live = StubLive()
    live.mode = "bad_sdp"
    async with serve(make_settings(), live=live) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        r = await h.offer(s["session_id"], s["client_token"])
        assert r.status == 400 and await error_of(r) == "bad_sdp"
        got = await (await h.client.get(f"/v1/sessions/{s['session_id']}", headers=auth(key))).json()
        assert got["status"] == "failed"
        assert [e["state"] for e in got["events"]] == ["created", "failed"]


async def test_offer_busy_gives_the_token_back(make_settings):
    live = StubLive()
    async with serve(make_settings(max_sessions=2), live=live) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        live.active = 2
        r = await h.offer(s["session_id"], s["client_token"])
        assert r.status == 503 and await error_of(r) == "busy" and int(r.headers["Retry-After"]) >= 1
        live.active = 0
        live.mode = "busy"
        r = await h.offer(s["session_id"], s["client_token"])
        assert r.status == 503 and await error_of(r) == "busy" and r.headers["Retry-After"] == "3"
        live.mode = "ok"
        r = await h.offer(s["session_id"], s["client_token"])
        assert r.status == 200


async def test_offer_unexpected_error_is_500_without_details(make_settings, caplog):
    live = StubLive()
    live.mode = "crash"
    async with serve(make_settings(), live=live) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        with caplog.at_level(logging.ERROR, logger="stream_ekyc"):
            r = await h.offer(s["session_id"], s["client_token"])
        assert r.status == 500 and await error_of(r) == "internal"
        text = await r.text()
        assert "secret-sauce" not in text and r.headers["X-Request-Id"] in text
        assert any(r.headers["X-Request-Id"] in rec.getMessage() for rec in caplog.records)
        assert (await h.records.get_session(s["session_id"]))["state"] == "failed"


async def test_offer_without_live_module_is_unavailable(make_settings):
    async with serve(make_settings(), live_factory=lambda app: None) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        r = await h.offer(s["session_id"], s["client_token"])
        assert r.status == 503 and await error_of(r) == "unavailable"
        assert (await h.records.get_session(s["session_id"]))["token_used_at"] is None


async def test_expiry(make_settings):
    async with serve(make_settings(session_ttl_s=180)) as h:
        _, key = await h.new_app()
        s1 = await h.create_session(key)
        s2 = await h.create_session(key)
        h.clock.advance(179.9)
        r = await h.client.get(f"/v1/sessions/{s1['session_id']}", headers=auth(key))
        assert (await r.json())["status"] == "created"
        h.clock.advance(0.2)
        r = await h.offer(s1["session_id"], s1["client_token"])
        assert r.status == 410 and await error_of(r) == "expired"
        got = await (await h.client.get(f"/v1/sessions/{s1['session_id']}", headers=auth(key))).json()
        assert got["status"] == "expired" and [e["state"] for e in got["events"]] == ["created", "expired"]
        r = await h.offer(s1["session_id"], s1["client_token"])
        assert r.status == 410
        # the background sweep expires sessions nobody asked about
        assert await expire_due_sessions(h.app) == 1
        assert (await h.records.get_session(s2["session_id"]))["state"] == "expired"
        assert await expire_due_sessions(h.app) == 0


# --- results and media -----------------------------------------------------------------------

async def test_result_and_media_lifecycle(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        s = await h.create_session(key)
        sid = s["session_id"]
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 404 and await error_of(r) == "not_found"
        # what the live pipeline does: store evidence with deadlines, then record the result
        media, now = h.app[MEDIA], h.clock()
        best = jpeg(80, 60)
        await media.put(sid, "best_frame", "best.jpg", best, "image/jpeg", now + 7200)
        for i in range(3):
            await media.put(sid, "audit_frame", audit_frame_name(i), jpeg(32 + i, 32), "image/jpeg", now + 7200)
        for state in ("connected", "fitting", "challenging", "scoring"):
            assert await set_state(h.app, sid, state, expected=None)
        result = {"verdict": "live", "confidence": 97, "reasons": [], "timings": {"verdict_ms": 310}}
        assert await set_state(h.app, sid, "done", expected="scoring", result=result)
        assert not await set_state(h.app, sid, "failed", expected="scoring")  # optimistic check
        got = await (await h.client.get(f"/v1/sessions/{sid}", headers=auth(key))).json()
        assert got["status"] == "done"
        assert [e["state"] for e in got["events"]] == ["created", "connected", "fitting", "challenging",
                                                       "scoring", "done"]
        base = f"{h.settings.public_url}/v1/sessions/{sid}"
        assert got["result"] == {**result, "best_frame": f"{base}/best-frame",
                                 "audit_frames": [f"{base}/audit-frames/{i}" for i in range(3)]}
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 200 and r.content_type == "image/jpeg" and await r.read() == best
        r = await h.client.get(f"/v1/sessions/{sid}/audit-frames/2", headers=auth(key))
        assert r.status == 200 and await r.read() == jpeg(34, 32)
        r = await h.client.get(f"/v1/sessions/{sid}/audit-frames/3", headers=auth(key))
        assert r.status == 404
        assert h.app[METRICS].verdicts.value(verdict="live") == 1

        r = await h.client.delete(f"/v1/sessions/{sid}", headers=auth(key))
        assert r.status == 200 and await r.json() == {"deleted": 4}
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 410 and await error_of(r) == "media_deleted"
        r = await h.client.get(f"/v1/sessions/{sid}/audit-frames/0", headers=auth(key))
        assert r.status == 410
        objs = await h.records.media_objects(sid)
        assert all(o["deleted_at"] is not None and o["deleted_reason"] == "deleted on request" for o in objs)
        assert await h.app[MEDIA].list_session(sid) == []
        r = await h.client.delete(f"/v1/sessions/{sid}", headers=auth(key))
        assert await r.json() == {"deleted": 0}


async def test_media_past_deadline_is_gone(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        sid = (await h.create_session(key))["session_id"]
        await h.app[MEDIA].put(sid, "best_frame", "best.jpg", jpeg(), "image/jpeg", h.clock() + 7200)
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 200
        h.clock.advance(7200)
        r = await h.client.get(f"/v1/sessions/{sid}/best-frame", headers=auth(key))
        assert r.status == 410 and await error_of(r) == "media_deleted"


# --- public, operational, page ---------------------------------------------------------------

async def test_page_config(make_settings):
    ice = '[{"urls": ["stun:stun.example.org:3478"]}]'
    async with serve(make_settings(min_age=21, operator="Example Bank plc", ice_servers=ice)) as h:
        r = await h.client.get("/v1/page-config")
        assert r.status == 200
        assert await r.json() == {"demo": False, "min_age": 21, "operator": "Example Bank plc",
                                  "ice_servers": [{"urls": ["stun:stun.example.org:3478"]}],
                                  "media_retention_hours": 2}


async def test_openapi_covers_every_route(make_settings):
    async with serve(make_settings()) as h:
        r = await h.client.get("/v1/openapi.json")
        doc = await r.json()
        assert doc["openapi"].startswith("3.1")
        registered = {(route.method.lower(), route.resource.canonical)
                      for route in h.app.router.routes() if route.method not in ("HEAD", "*")}
        documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert registered == documented
        assert len(registered) == len(ROUTES)
        assert set(doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]) \
            == set(ERROR_CODES)
        # every error code a route can answer is one the API defines
        text = json.dumps(build_openapi("http://x"))
        for code in re.findall(r"`([a-z_]+)`", text):
            assert code in ERROR_CODES or code in ("error",), code


METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                         r'(-?[0-9.e+-]+|NaN|\+Inf|-Inf)$')


async def test_metrics_text_parses(make_settings):
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        await h.create_session(key)
        h.app[METRICS].analysis_latency.observe(0.012)
        h.app[METRICS].frames_received.inc(3)
        await asyncio.sleep(0.6)  # the loop-lag monitor samples every 0.25 s
        assert h.app[METRICS].loop_lag.count() >= 1
        r = await h.client.get("/metrics")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
        names = set()
        for line in text.splitlines():
            if line.startswith("#"):
                assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
                continue
            assert METRIC_LINE.match(line), line
            names.add(line.split("{")[0].split(" ")[0])
        for required in ("stream_ekyc_sessions", "stream_ekyc_verdicts_total", "stream_ekyc_frames_received_total",
                         "stream_ekyc_frames_analysed_total", "stream_ekyc_frames_dropped_total",
                         "stream_ekyc_analysis_latency_seconds_bucket", "stream_ekyc_event_loop_lag_seconds_count",
                         "stream_ekyc_event_loop_lag_last_seconds", "stream_ekyc_http_requests_total"):
            assert required in names, required
        assert 'stream_ekyc_sessions{state="created"} 1' in text
        assert 'stream_ekyc_http_requests_total{route="/v1/sessions",status="201"} 1' in text
        assert 'stream_ekyc_analysis_latency_seconds_bucket{le="0.02"} 1' in text


async def test_health_and_readiness(make_settings, tmp_path, monkeypatch):
    async with serve(make_settings()) as h:
        r = await h.client.get("/healthz")
        assert r.status == 200 and await r.json() == {"status": "ok"}
        monkeypatch.setenv("STREAM_EKYC_MODELS", str(tmp_path / "no-models"))
        r = await h.client.get("/readyz")
        body = await r.json()
        assert r.status == 503 and body["error"]["code"] == "not_ready" and body["checks"]["models"] is False
        cache = tmp_path / "models"
        cache.mkdir()
        monkeypatch.setenv("STREAM_EKYC_MODELS", str(cache))
        for name in models.MODELS:
            models.model_path(name).write_bytes(b"x")
        r = await h.client.get("/readyz")
        body = await r.json()
        assert r.status == 200 and body["checks"] == {"records": True, "media": True, "models": True, "live": True}


async def test_security_headers_and_page(make_settings):
    async with serve(make_settings()) as h:
        for path in ("/v1/page-config", "/v1/sessions/x", "/s/", "/s/app.js", "/healthz"):
            r = await h.client.get(path)
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert r.headers["Permissions-Policy"].startswith("camera=(self)")
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "Strict-Transport-Security" not in r.headers  # plain http
        r = await h.client.get("/s/")
        assert r.status == 200 and "<title>t</title>" in await r.text()
        assert r.headers["Cache-Control"] == "no-cache" and r.content_type == "text/html"
        r = await h.client.get("/s/app.js")
        assert r.status == 200 and "max-age" in r.headers["Cache-Control"] and r.content_type == "text/javascript"
        r = await h.client.get("/s", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/s/"
        for bad in ("/s/%2e%2e/data/records.sqlite3", "/s/..%2f..%2fetc%2fpasswd", "/s/.hidden", "/s/nope.js"):
            r = await h.client.get(bad)
            assert r.status == 404, bad
        r = await h.client.get("/", allow_redirects=False)
        assert r.status == 404  # not demo
    async with serve(make_settings(public_url="https://kyc.example.org")) as h:
        r = await h.client.get("/healthz")
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_demo_endpoint(make_settings):
    async with serve(make_settings()) as h:
        r = await h.client.post("/demo/session")
        assert r.status == 404 and await error_of(r) == "not_found"
    async with serve(make_settings(demo=True)) as h:
        r = await h.client.get("/", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/s/"
        r = await h.client.post("/demo/session")
        assert r.status == 201
        body = await r.json()
        assert set(body) == {"session_id", "client_token", "expires_at", "page_url"}
        assert (await h.records.get_session(body["session_id"]))["app_id"] == "app_demo"
        r = await h.offer(body["session_id"], body["client_token"])
        assert r.status == 200
        assert (await h.client.get("/v1/page-config").__aenter__()).status == 200
        # a peer that is not loopback is refused (the handler, with a non-loopback transport)
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            ("198.51.100.7", 40000) if name == "peername" else default)
        req = make_mocked_request("POST", "/demo/session", app=h.app, transport=transport)
        with pytest.raises(ApiError) as e:
            await demo_session(req)
        assert e.value.status == 403 and e.value.code == "forbidden"
    async with serve(make_settings(demo=True)) as h:  # restart: the demo app is created once
        rows = sqlite3.connect(h.settings.records_url.removeprefix("sqlite:///")).execute(
            "SELECT COUNT(*) FROM apps WHERE app_id = 'app_demo'").fetchone()[0]
        assert rows == 1


def test_loopback_peer_check():
    for addr in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert is_loopback_peer(addr), addr
    for addr in (None, "", "10.0.0.1", "198.51.100.7", "::ffff:10.0.0.1", "fe80::1", "localhost", "unix"):
        assert not is_loopback_peer(addr), addr


# --- records: monitoring, operation logs, redaction ------------------------------------------

async def test_monitoring_and_no_secrets_in_logs_or_op_logs(make_settings, caplog):
    caplog.set_level(logging.DEBUG)
    name, id_number = "Philippa Vandersloot", "110105198704231234"
    async with serve(make_settings()) as h:
        _, key = await h.new_app()
        s = await h.create_session(key, id_photo=base64.b64encode(face_jpeg()).decode(), locale="en")
        await h.offer(s["session_id"], s["client_token"])
        await h.offer(s["session_id"], s["client_token"])  # 409
        await h.client.get(f"/v1/sessions/{s['session_id']}", headers=auth(key))
        await h.client.post("/v1/sessions", json={"name": name, "id_number": id_number}, headers=auth(key))
        await h.client.post("/v1/sessions", json={}, headers=auth("sk_" + "Z" * 43))
        db = h.settings.records_url.removeprefix("sqlite:///")
        con = sqlite3.connect(db)
        monitoring = con.execute("SELECT interface, app_id, result, start_at <= end_at, region FROM monitoring"
                                 " ORDER BY id").fetchall()
        op_logs = "\n".join(r[0] for r in con.execute("SELECT detail FROM op_logs"))
        steps = [r[0] for r in con.execute("SELECT step FROM op_logs ORDER BY id")]
    assert [m[0] for m in monitoring] == ["sessions.create", "sessions.offer", "sessions.offer", "sessions.get",
                                          "sessions.create", "sessions.create"]
    assert [m[2] for m in monitoring] == ["ok", "ok", "token_used", "ok", "bad_request", "unauthorized"]
    assert all(m[3] == 1 and m[4] == "local" for m in monitoring)
    assert monitoring[-1][1] is None and monitoring[0][1] is not None
    assert "consent" in steps and "token_consumed" in steps and steps.count("request") == 6
    secrets_ = [key, s["client_token"], name, id_number, s["page_url"], base64.b64encode(face_jpeg()).decode()[:32]]
    everything = caplog.text + "\n" + "\n".join(str(vars(r)) for r in caplog.records)
    for value in secrets_:
        assert value not in op_logs, value[:12]
        assert value not in everything, value[:12]
    assert "127.0.0.1" not in op_logs  # peer addresses are hashed
    # the access log names the peer; with the filter `serve` installs, only its hash remains
    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert access
    for rec in access:
        copy = logging.makeLogRecord(dict(vars(rec)))
        RedactingFilter().filter(copy)
        assert "127.0.0.1" not in copy.getMessage() and "ip:" in copy.getMessage()
    assert '"client_token":"<secret>"' in op_logs and "<bytes n=" in op_logs


# --- settings and stores ---------------------------------------------------------------------

def test_settings_from_env(tmp_path):
    s = Settings.from_env({"STREAM_EKYC_PORT": "9001", "STREAM_EKYC_DEMO": "yes",
                           "STREAM_EKYC_DATA_DIR": str(tmp_path), "STREAM_EKYC_HOST": "0.0.0.0"})
    assert s.port == 9001 and s.demo is True and s.public_url == "http://127.0.0.1:9001"
    assert s.records_url == f"sqlite:///{tmp_path}/records.sqlite3" and s.media_url == f"file://{tmp_path}/media"
    assert Settings.from_env({"STREAM_EKYC_PORT": "9001"}, port=7000).port == 7000
    assert Settings.from_env({}, host="::1", port=1).public_url == "http://[::1]:1"
    for env in ({"STREAM_EKYC_PORT": "http"}, {"STREAM_EKYC_PORT": "70000"}, {"STREAM_EKYC_DEMO": "maybe"},
                {"STREAM_EKYC_SESSION_TTL_S": "0"}, {"STREAM_EKYC_ICE_SERVERS": "[{\"url\": 1}]"},
                {"STREAM_EKYC_ICE_SERVERS": "not json"}, {"STREAM_EKYC_LOG_LEVEL": "LOUD"},
                {"STREAM_EKYC_PUBLIC_URL": "ftp://x"}, {"STREAM_EKYC_MAX_SESSIONS": "0"}):
        with pytest.raises(ConfigError) as e:
            Settings.from_env(env)
        assert "\n" not in str(e.value) and "STREAM_EKYC_" in str(e.value)
    with pytest.raises(ConfigError):
        records_from_url("mysql://db/ekyc")


async def test_records_migrations_and_token_atomicity(tmp_path):
    url = f"sqlite:///{tmp_path}/r.sqlite3"
    rec = records_from_url(url)
    await rec.start()
    try:
        assert await rec.schema_version() == LATEST_VERSION
        await rec.create_app("app_x", "x", "h" * 64, 1.0)
        await rec.create_session("ses_1", "app_x", "t" * 64, {}, now=10.0, expires_at=20.0)
        assert await rec.consume_client_token("ses_1", "u" * 64, 11.0) == (None, "unknown")
        got, problem = await rec.consume_client_token("ses_1", "t" * 64, 11.0)
        assert problem is None and got["token_used_at"] == 11.0
        assert await rec.consume_client_token("ses_1", "t" * 64, 12.0) == (None, "used")
        await rec.create_session("ses_2", "app_x", "v" * 64, {}, now=10.0, expires_at=20.0)
        assert await rec.consume_client_token("ses_2", "v" * 64, 20.0) == (None, "expired")
        mode = sqlite3.connect(f"{tmp_path}/r.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await rec.close()
    rec = records_from_url(url)  # reopening does not re-run migrations
    await rec.start()
    assert await rec.schema_version() == LATEST_VERSION
    await rec.close()


# --- the command line ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_apps_create_and_serve(tmp_path):
    env = {**os.environ, "STREAM_EKYC_DATA_DIR": str(tmp_path / "data")}
    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "apps", "create", "Acme"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    created = json.loads(p.stdout)
    assert set(created) == {"app_id", "api_key", "webhook_secret"} and created["api_key"].startswith("sk_")
    con = sqlite3.connect(tmp_path / "data" / "records.sqlite3")
    stored = con.execute("SELECT api_key_hash FROM apps WHERE app_id = ?", (created["app_id"],)).fetchone()[0]
    con.close()
    assert created["api_key"] not in stored and len(stored) == 64
    # the webhook secret can be shown again (it signs, so the service must keep it); the key cannot
    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "apps", "webhook-secret", created["app_id"]],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"app_id": created["app_id"], "webhook_secret": created["webhook_secret"]}
    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "apps", "webhook-secret", "app_nope"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and not p.stdout

    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "serve", "--port", "x"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    bad_env = {**env, "STREAM_EKYC_RECORDS_URL": "mysql://db"}
    p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "serve"], env=bad_env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "mysql" in p.stderr and len(p.stderr.strip().splitlines()) == 1

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream_ekyc.cli", "serve", "--port", str(port), "--demo"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
                time.sleep(0.1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/sessions", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {created['api_key']}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201
        req = urllib.request.Request(f"http://127.0.0.1:{port}/demo/session", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert created["api_key"] not in err and "127.0.0.1 [" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_local_media_store(tmp_path):
    rec = records_from_url(f"sqlite:///{tmp_path}/r.sqlite3")
    await rec.start()
    store = media_from_url(f"file://{tmp_path}/media", rec, clock=lambda: 100.0)
    assert isinstance(store, LocalMediaStore)
    await store.start()
    try:
        key = await store.put("ses_a", "packet", "packet.json", b'{"a": 1}', "application/json", delete_at=200.0)
        assert key == "ses_a/packet/packet.json"
        await store.put("ses_a", "packet", "packet.json", b'{"a": 2}', "application/json", delete_at=300.0)
        assert await store.get(key) == b'{"a": 2}' and await store.exists(key)
        assert await store.get("ses_a/packet/other.json") is None
        obj = await rec.media_object(key)
        assert obj["delete_at"] == 200.0 and obj["created_at"] == 100.0  # the earliest deadline stays
        assert [o["key"] for o in await rec.media_due(250.0)] == [key]
        files = [p.name for p in (tmp_path / "media" / "ses_a" / "packet").iterdir()]
        assert files == ["packet.json"]  # no temporary files left behind
        assert oct((tmp_path / "media" / "ses_a" / "packet" / "packet.json").stat().st_mode & 0o777) == "0o600"
        await store.put("ses_b", "video", "v.webm", b"x" * 10, "video/webm", delete_at=200.0)
        assert await store.list_session("ses_a") == [key]
        assert await store.delete_session("ses_a") == 1
        assert not (tmp_path / "media" / "ses_a").exists()
        assert (await rec.media_object(key))["deleted_reason"] == "requested"
        assert await store.list_session("ses_b") == ["ses_b/video/v.webm"]
        assert await store.delete("ses_b/video/v.webm", reason="retention")
        assert (await rec.media_object("ses_b/video/v.webm"))["deleted_reason"] == "retention"
        for sid, kind, name in (("../x", "packet", "a"), ("ses_a", "../../etc", "a"), ("ses_a", "packet", "../a"),
                                ("ses_a", "packet", ".hidden"), ("ses_a", "packet", "a/b"), ("", "packet", "a"),
                                ("ses_a", "Packet", "a"), ("ses_a", "packet", "a\x00"), ("s" * 65, "packet", "a"),
                                ("ses_a", "packet", "..")):
            with pytest.raises(MediaKeyError):
                media_key(sid, kind, name)
            with pytest.raises(MediaKeyError):
                await store.put(sid, kind, name, b"x", "text/plain", 1.0)
        for bad_key in ("../../etc/passwd", "ses_a/packet", "ses_a/packet/../../x", "/abs/packet/x", "a/b/c/d"):
            with pytest.raises(MediaKeyError):
                await store.get(bad_key)
        with pytest.raises(MediaKeyError):
            await store.delete_session("../ses_b")
    finally:
        await store.close()
        await rec.close()
    with pytest.raises(ConfigError):
        media_from_url("ftp://host/media")
    with pytest.raises(ConfigError):
        media_from_url("s3://Not_A_Bucket/prefix")
    with pytest.raises(ConfigError):
        media_from_url("file://relative/dir")
