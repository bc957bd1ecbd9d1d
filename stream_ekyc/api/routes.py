"""REST routes (JSON). See docs/api.md and /v1/openapi.json.

Handlers stay small: parse → authorise → one store call or two → shape the answer. Every
API handler is wrapped by ``_api(name)``, which names the interface for the monitoring row
and operation log written by the call middleware.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import ipaddress
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web

from .. import idphoto, models
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..stores.media import (KIND_AUDIT_FRAME, KIND_BEST_FRAME, KIND_ID_PHOTO, MAX_AUDIT_FRAMES,
                            MediaKeyError, check_session_id)
from ..stores.records import ACTIVE_STATES
from ..webhooks import describe as describe_webhook
from .app import (CLOCK, DEMO_APP_ID, EXECUTOR, LIVE, MEDIA, METRICS, RECORDS, SETTINGS, note,
                  set_state)
from .auth import (CLIENT_TOKEN_PREFIX, bearer, hash_secret, new_client_token, new_session_id,
                   require_app, well_formed)
from .errors import APP_ID, FEE_UNITS, INTERFACE, OP_REQUEST, ApiError, read_json
from .openapi import build_openapi

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_PHOTO_BYTES = idphoto.MAX_BYTES
MAX_SDP_BYTES = 64 * 1024
MIN_STEPS, MAX_STEPS = 6, 10
OPTION_KEYS = ("challenge_steps", "locale", "webhook_url", "id_photo")
_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$")


def _api(interface: str) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.StreamResponse:
            request[INTERFACE] = interface
            return await fn(request)
        return handler
    return wrap


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now(request: web.Request) -> float:
    return request.app[CLOCK]()


# --- option validation -----------------------------------------------------------------------

def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_peer(remote: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else or unknown."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def validate_options(raw: dict[str, Any], request: web.Request) -> dict[str, Any]:
    """The session options as stored (without the photo bytes)."""
    unknown = sorted(set(raw) - set(OPTION_KEYS))
    if unknown:
        raise _bad(f"unknown option(s): {', '.join(k[:40] for k in unknown[:5])}")
    out: dict[str, Any] = {"locale": "en"}
    steps = raw.get("challenge_steps")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not MIN_STEPS <= steps <= MAX_STEPS:
            raise _bad(f"challenge_steps must be an integer from {MIN_STEPS} to {MAX_STEPS}")
        out["challenge_steps"] = steps
    locale = raw.get("locale")
    if locale is not None:
        if not isinstance(locale, str) or not _LOCALE_RE.fullmatch(locale):
            raise _bad("locale must be a language tag such as \"en\" or \"pt-BR\"")
        out["locale"] = locale
    hook = raw.get("webhook_url")
    if hook is not None:
        out["webhook_url"] = _validate_webhook(hook, request)
    return out


def _validate_webhook(url: Any, request: web.Request) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        raise _bad("webhook_url must be an https URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        raise _bad("webhook_url is not a valid URL") from None
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise _bad("webhook_url must be https://host/path (no credentials or fragment)")
    if parts.scheme == "https":
        return url
    settings = request.app[SETTINGS]
    if parts.scheme == "http" and _is_loopback_host(parts.hostname) and (settings.demo or settings.ice_loopback_only):
        return url
    raise _bad("webhook_url must use https")


# --- ID photo --------------------------------------------------------------------------------

async def check_photo(request: web.Request, data: bytes) -> idphoto.IdPhoto:
    """A valid ID photo with its face embedding (``idphoto.check``); ApiError 422 otherwise.

    The header checks run here (no decoding); decoding and the face run in the executor."""
    try:
        idphoto.check_bytes(data)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(request.app[EXECUTOR], idphoto.check, data)
    except idphoto.IdPhotoError as e:
        raise ApiError(422, f"photo_{e.code}", f"id_photo: {e}") from None


def decode_photo_b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ApiError(422, "photo_bad_base64", "id_photo must be a base64 string")
    s = value.strip()
    if s.startswith("data:"):
        head, _, s = s.partition(",")
        if ";base64" not in head:
            raise ApiError(422, "photo_bad_base64", "id_photo data URL must be base64")
    s = re.sub(r"\s+", "", s)
    if len(s) * 3 // 4 > MAX_PHOTO_BYTES + 2:
        raise ApiError(422, "photo_too_large", "id_photo must be at most 10 MB")
    try:
        if re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", s):
            return base64.b64decode(s, validate=True)
        if re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", s):
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError):
        pass
    raise ApiError(422, "photo_bad_base64", "id_photo is not valid base64")


# --- session creation ------------------------------------------------------------------------

async def _read_create_request(request: web.Request, *, allow_empty: bool = False
                               ) -> tuple[dict[str, Any], bytes | None]:
    """(options, photo bytes) from a JSON or multipart/form-data body."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request)
    body = await read_json(request, allow_empty=allow_empty)
    photo = None
    value = body.get("id_photo")
    if value is not None:
        # the operation log keeps only the photo's size
        request[OP_REQUEST] = {**body, "id_photo": f"<base64 chars={len(value) if isinstance(value, str) else 0}>"}
        photo = await asyncio.to_thread(decode_photo_b64, value) if isinstance(value, str) and len(value) > 65536 \
            else decode_photo_b64(value)
        request[OP_REQUEST] = {**body, "id_photo": photo}  # bytes: logged as <bytes n=…>
    return {k: v for k, v in body.items() if k != "id_photo"}, photo


async def _read_multipart(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", "request body too large")
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise _bad("malformed multipart body") from None
    fields: dict[str, Any] = {}
    photo: bytes | None = None
    total = 0
    try:
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise _bad("nested multipart is not accepted")
            name = part.name or ""
            cap = MAX_PHOTO_BYTES + 1 if name == "id_photo" else 4096
            buf = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                buf += chunk
                total += len(chunk)
                if total > limit:
                    raise ApiError(413, "too_large", "request body too large")
                if len(buf) > cap:
                    if name == "id_photo":
                        raise ApiError(422, "photo_too_large", "id_photo must be at most 10 MB")
                    raise _bad(f"field {name[:40]!r} is too long")
            if name == "id_photo":
                photo = bytes(buf)
            elif name in OPTION_KEYS:
                try:
                    text = buf.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise _bad(f"field {name!r} is not UTF-8 text") from None
                fields[name] = _int_or_text(text) if name == "challenge_steps" else text
            else:
                raise _bad(f"unknown field {name[:40]!r}")
    except ApiError:
        raise
    except ValueError:
        raise _bad("malformed multipart body") from None
    request[OP_REQUEST] = {**fields, "id_photo": photo}
    return fields, photo


def _int_or_text(text: str) -> Any:
    return int(text) if re.fullmatch(r"-?\d{1,3}", text) else text


async def _create_session(request: web.Request, app_id: str, raw: dict[str, Any],
                          photo: bytes | None) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    options = validate_options(raw, request)
    checked = await check_photo(request, photo) if photo is not None else None
    options["id_photo"] = checked is not None
    session_id = new_session_id()
    token = new_client_token()
    now = _now(request)
    expires_at = now + settings.session_ttl_s
    await app[RECORDS].create_session(session_id, app_id, hash_secret(token), options, now, expires_at)
    app[METRICS].session_transitions.inc(state="created")
    if photo is not None and checked is not None:
        # the photo and its face embedding (computed once, here), under the same deadline
        await app[MEDIA].put(session_id, KIND_ID_PHOTO, f"id_photo.{checked.extension}", photo,
                             checked.content_type, delete_at=now + settings.media_ttl_s)
        await app[MEDIA].put(session_id, KIND_ID_PHOTO, idphoto.EMBEDDING_NAME,
                             idphoto.embedding_bytes(checked.embedding), idphoto.EMBEDDING_CONTENT_TYPE,
                             delete_at=now + settings.media_ttl_s)
        note(request, "id_photo_stored", bytes=len(photo), content_type=checked.content_type,
             iod_px=round(checked.face.iod, 1))
    request[FEE_UNITS] = 1
    return web.json_response({
        "session_id": session_id,
        "client_token": token,
        "expires_at": iso(expires_at),
        "page_url": f"{settings.public_url}/s/#sid={session_id}&token={token}",
    }, status=201)


@_api("sessions.create")
async def create_session(request: web.Request) -> web.StreamResponse:
    app_id = await require_app(request)
    raw, photo = await _read_create_request(request)
    return await _create_session(request, app_id, raw, photo)


@_api("demo.session")
async def demo_session(request: web.Request) -> web.StreamResponse:
    if not request.app[SETTINGS].demo:
        raise ApiError(404, "not_found", "not found")
    if not is_loopback_peer(request.remote):
        raise ApiError(403, "forbidden", "the demo endpoint answers loopback addresses only")
    request[APP_ID] = DEMO_APP_ID
    raw, photo = await _read_create_request(request, allow_empty=True)
    return await _create_session(request, DEMO_APP_ID, raw, photo)


# --- offer -----------------------------------------------------------------------------------

def check_sdp(sdp: Any) -> str:
    if not isinstance(sdp, str) or not sdp or len(sdp.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise ApiError(400, "bad_sdp", "sdp must be a string of at most 64 KB")
    if not (sdp.startswith("v=0\r\n") or sdp.startswith("v=0\n")) or "\x00" in sdp:
        raise ApiError(400, "bad_sdp", "sdp must start with v=0")
    if not any(line.startswith("m=video ") for line in sdp.splitlines()):
        raise ApiError(400, "bad_sdp", "sdp must offer a video track (m=video)")
    return sdp


def _bad_token() -> ApiError:
    return ApiError(401, "bad_token", "a valid client token is required (Authorization: Bearer ct_…)",
                    headers={"WWW-Authenticate": 'Bearer realm="stream-ekyc"'})


def _retry_after(seconds: Any) -> str:
    try:
        return str(max(1, math.ceil(float(seconds))))
    except (TypeError, ValueError):
        return "5"


@_api("sessions.offer")
async def offer(request: web.Request) -> web.StreamResponse:
    app = request.app
    records = app[RECORDS]
    session_id = request.match_info["id"]
    token = bearer(request)
    if token is None or not well_formed(token, CLIENT_TOKEN_PREFIX):
        raise _bad_token()
    try:
        check_session_id(session_id)
    except MediaKeyError:
        raise _bad_token() from None
    digest = hash_secret(token)
    if not await records.check_client_token(session_id, digest):
        raise _bad_token()
    session = await records.get_session(session_id)
    if session is None:
        raise _bad_token()
    request[APP_ID] = session["app_id"]
    if session["token_used_at"] is not None:
        raise ApiError(409, "token_used", "this client token was already used")
    if _now(request) >= session["expires_at"] or session["state"] != "created":
        await set_state(app, session_id, "expired", expected="created", detail="offer after deadline")
        raise ApiError(410, "expired", "the session expired; ask for a new one")

    body = await read_json(request)
    consent = body.get("consent")
    if not (isinstance(consent, dict) and consent.get("privacy") is True and consent.get("min_age") is True):
        raise ApiError(400, "consent_required", "privacy consent and the minimum-age attestation are both required")
    if body.get("type") != "offer":
        raise ApiError(400, "bad_sdp", "type must be \"offer\"")
    sdp = check_sdp(body.get("sdp"))
    note(request, "consent", privacy=True, min_age=True, min_age_years=app[SETTINGS].min_age)

    live = app[LIVE]
    if live is None:
        raise ApiError(503, "unavailable", "the live pipeline is not available on this server")
    if live.active_count() >= app[SETTINGS].max_sessions:
        raise ApiError(503, "busy", "at capacity; retry shortly", headers={"Retry-After": "5"})

    claimed, problem = await records.consume_client_token(session_id, digest, _now(request))
    if claimed is None:
        if problem == "used":
            raise ApiError(409, "token_used", "this client token was already used")
        if problem == "expired":
            await set_state(app, session_id, "expired", expected="created", detail="offer after deadline")
            raise ApiError(410, "expired", "the session expired; ask for a new one")
        raise _bad_token()
    note(request, "token_consumed")

    try:
        answer_sdp, answer_type = await live.start(claimed, sdp, "offer")
    except Exception as e:
        retry_after = getattr(e, "retry_after_s", None)
        if retry_after is not None:  # the live module's Busy: give the token back so the page can retry
            await records.release_client_token(session_id, _now(request))
            note(request, "busy", retry_after_s=retry_after)
            raise ApiError(503, "busy", "at capacity; retry shortly",
                           headers={"Retry-After": _retry_after(retry_after)}) from None
        if isinstance(e, ValueError):
            await set_state(app, session_id, "failed", expected=ACTIVE_STATES, detail="bad_sdp")
            raise ApiError(400, "bad_sdp", "the SDP offer could not be used") from None
        await set_state(app, session_id, "failed", expected=ACTIVE_STATES, detail="start_failed")
        raise
    note(request, "answered")
    return web.json_response({"sdp": answer_sdp, "type": answer_type})


# --- reading results and media ---------------------------------------------------------------

async def _owned_session(request: web.Request) -> dict[str, Any]:
    """The session if it belongs to the calling app; 404 otherwise (existence not revealed)."""
    app_id = await require_app(request)
    session_id = request.match_info["id"]
    try:
        check_session_id(session_id)
    except MediaKeyError:
        raise ApiError(404, "not_found", "no such session") from None
    session = await request.app[RECORDS].get_session(session_id)
    if session is None or session["app_id"] != app_id:
        raise ApiError(404, "not_found", "no such session")
    return session


def _session_url(request: web.Request, session_id: str, tail: str) -> str:
    return f"{request.app[SETTINGS].public_url}/v1/sessions/{session_id}/{tail}"


@_api("sessions.get")
async def get_session(request: web.Request) -> web.StreamResponse:
    app = request.app
    session = await _owned_session(request)
    sid = session["session_id"]
    if session["state"] == "created" and _now(request) >= session["expires_at"]:
        await set_state(app, sid, "expired", expected="created", detail="not started in time")
        session = await app[RECORDS].get_session(sid) or session
    events = await app[RECORDS].session_events(sid)
    body: dict[str, Any] = {
        "session_id": sid,
        "status": session["state"],
        "created_at": iso(session["created_at"]),
        "expires_at": iso(session["expires_at"]),
        "updated_at": iso(session["updated_at"]),
        "events": [{"state": e["state"], "at": iso(e["at"])} for e in events],
    }
    if session["result"] is not None:
        result = dict(session["result"])
        media = await app[RECORDS].media_objects(sid)
        has_best = any(o["kind"] == KIND_BEST_FRAME for o in media)
        audits = [o for o in media if o["kind"] == KIND_AUDIT_FRAME][:MAX_AUDIT_FRAMES]
        result["best_frame"] = _session_url(request, sid, "best-frame") if has_best else None
        result["audit_frames"] = [_session_url(request, sid, f"audit-frames/{i}") for i in range(len(audits))]
        body["result"] = result
    if session["options"].get("webhook_url"):
        body["webhook"] = describe_webhook(await app[RECORDS].webhook_delivery(sid)) or {"status": "owed"}
    return web.json_response(body)


async def _media_response(request: web.Request, obj: dict[str, Any] | None, what: str) -> web.Response:
    if obj is None:
        raise ApiError(404, "not_found", f"no {what} for this session (yet)")
    if obj["deleted_at"] is not None or _now(request) >= obj["delete_at"]:
        raise ApiError(410, "media_deleted", f"the {what} was deleted")
    data = await request.app[MEDIA].get(obj["key"])
    if data is None:
        raise ApiError(410, "media_deleted", f"the {what} was deleted")
    return web.Response(body=data, content_type=obj["content_type"] or "image/jpeg",
                        headers={"Cache-Control": "no-store"})


@_api("sessions.best_frame")
async def best_frame(request: web.Request) -> web.StreamResponse:
    session = await _owned_session(request)
    objs = await request.app[RECORDS].media_objects(session["session_id"], KIND_BEST_FRAME)
    return await _media_response(request, objs[0] if objs else None, "best frame")


@_api("sessions.audit_frame")
async def audit_frame(request: web.Request) -> web.StreamResponse:
    session = await _owned_session(request)
    n = int(request.match_info["n"])
    objs = (await request.app[RECORDS].media_objects(session["session_id"], KIND_AUDIT_FRAME))[:MAX_AUDIT_FRAMES]
    return await _media_response(request, objs[n] if n < len(objs) else None, f"audit frame {n}")


@_api("sessions.delete")
async def delete_session(request: web.Request) -> web.StreamResponse:
    session = await _owned_session(request)
    n = await request.app[MEDIA].delete_session(session["session_id"], reason="deleted on request")
    note(request, "media_deleted", objects=n)
    return web.json_response({"deleted": n})


# --- public and operational ------------------------------------------------------------------

@_api("page_config")
async def page_config(request: web.Request) -> web.StreamResponse:
    s = request.app[SETTINGS]
    return web.json_response({"demo": s.demo, "min_age": s.min_age, "operator": s.operator,
                              "ice_servers": [dict(x) for x in s.ice_servers],
                              "media_retention_hours": round(s.media_ttl_s / 3600, 3)})


@_api("openapi")
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(build_openapi(request.app[SETTINGS].public_url))


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    app = request.app
    checks: dict[str, bool] = {}
    try:
        await asyncio.wait_for(app[RECORDS].ping(), 2.0)
        checks["records"] = True
    except Exception:
        checks["records"] = False
    try:
        await asyncio.wait_for(app[MEDIA].ping(), 2.0)
        checks["media"] = True
    except Exception:
        checks["media"] = False
    checks["models"] = await asyncio.to_thread(
        lambda: all(models.model_path(n).is_file() for n in models.MODELS))
    checks["live"] = app[LIVE] is not None
    ready = checks["records"] and checks["media"] and checks["models"]
    if not ready:
        failing = ", ".join(k for k in ("records", "media", "models") if not checks[k])
        return web.json_response({"error": {"code": "not_ready", "message": f"not ready: {failing}"},
                                  "checks": checks}, status=503)
    return web.json_response({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.StreamResponse:
    app = request.app
    m = app[METRICS]
    try:
        counts = await app[RECORDS].count_sessions_by_state(ACTIVE_STATES)
        for state, n in counts.items():
            m.sessions.set(n, state=state)
    except Exception:
        pass  # render what we have; /readyz reports the store
    return web.Response(body=m.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})


# --- the page --------------------------------------------------------------------------------

_ASSET_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
          ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
          ".webmanifest": "application/manifest+json", ".woff2": "font/woff2", ".txt": "text/plain"}


def _resolve_asset(web_dir: Path, rel: str) -> Path | None:
    if not _ASSET_RE.fullmatch(rel) or ".." in rel:
        return None
    root = web_dir.resolve()
    p = (root / rel).resolve()
    if not p.is_relative_to(root) or not p.is_file():
        return None
    return p


async def page(request: web.Request) -> web.StreamResponse:
    web_dir = request.app[SETTINGS].web_dir
    rel = request.match_info.get("path") or "index.html"
    path = await asyncio.to_thread(_resolve_asset, web_dir, rel) if web_dir is not None else None
    if path is None or path.suffix not in _TYPES:
        raise ApiError(404, "not_found", "not found")
    cache = "no-cache" if path.suffix == ".html" else "public, max-age=600"
    ctype = _TYPES[path.suffix]
    if ctype.startswith("text/") or ctype.endswith("json"):
        ctype += "; charset=utf-8"
    return web.FileResponse(path, headers={"Cache-Control": cache, "Content-Type": ctype})


async def page_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/s/")


async def root(request: web.Request) -> web.StreamResponse:
    if request.app[SETTINGS].demo:
        raise web.HTTPFound("/s/")
    raise ApiError(404, "not_found", "not found; the API is under /v1 (see /v1/openapi.json)")


# --- registration ----------------------------------------------------------------------------

ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/", root),
    ("GET", "/s", page_redirect),
    ("GET", "/s/", page),
    ("GET", "/s/{path:.+}", page),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/v1/openapi.json", openapi),
    ("GET", "/v1/page-config", page_config),
    ("POST", "/v1/sessions", create_session),
    ("GET", "/v1/sessions/{id}", get_session),
    ("DELETE", "/v1/sessions/{id}", delete_session),
    ("POST", "/v1/sessions/{id}/offer", offer),
    ("GET", "/v1/sessions/{id}/best-frame", best_frame),
    ("GET", "/v1/sessions/{id}/audit-frames/{n:\\d+}", audit_frame),
    ("POST", "/demo/session", demo_session),
]


def setup_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
