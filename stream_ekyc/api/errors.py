"""Errors as JSON: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx status.

``ApiError`` is raised by handlers; ``error_middleware`` turns it, aiohttp's own HTTP
errors (404, 405, 413, …) and any unexpected exception into that shape. An unexpected
exception becomes ``500 internal`` with only the request id in the message; the traceback
goes to the log (through the redacting filter), never to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

log = logging.getLogger("stream_ekyc.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# request-scoped values shared by the middlewares and handlers (typed keys where aiohttp has them)
_RequestKey: Any = getattr(web, "RequestKey", None)


def _rkey(name: str, t: Any) -> Any:
    return _RequestKey(name, t) if _RequestKey is not None else name


REQUEST_ID = _rkey("request_id", str)         # random id, echoed as X-Request-Id
INTERFACE = _rkey("interface", str)           # the API interface name, for monitoring
APP_ID = _rkey("app_id", str)                 # the AppID the call acted for
ERROR_CODE = _rkey("error_code", str)         # the error code answered, if any
OP_REQUEST = _rkey("op_request", object)      # the parsed request body (redacted when logged)
OP_STEPS = _rkey("op_steps", list)            # [(step, detail)] for the operation log
FEE_UNITS = _rkey("fee_units", int)

# every error code the API can answer, with its meaning (the OpenAPI document lists them)
ERROR_CODES: dict[str, str] = {
    "bad_json": "the body is not a JSON object",
    "bad_request": "a field is missing or has a wrong type or value",
    "unsupported_media_type": "the Content-Type is not one this route accepts",
    "too_large": "the request body is larger than the limit",
    "unauthorized": "missing or invalid API key",
    "bad_token": "missing or invalid client token",
    "forbidden": "not allowed from this address",
    "not_found": "no such route or session (or not yours)",
    "method_not_allowed": "the route does not accept this method",
    "token_used": "the client token was already used",
    "expired": "the session expired before it started",
    "media_deleted": "the media was deleted (retention period over or deleted on request)",
    "consent_required": "the applicant has not given both privacy consent and the minimum-age attestation",
    "bad_sdp": "the SDP offer is malformed",
    "photo_bad_base64": "id_photo is not valid base64",
    "photo_too_large": "id_photo is larger than 10 MB",
    "photo_unsupported_format": "id_photo is not a JPEG or PNG file",
    "photo_too_many_pixels": "id_photo is over 8000 pixels a side or 40 megapixels (checked before decoding)",
    "photo_corrupt_image": "id_photo is truncated, has no readable header, or does not decode",
    "photo_no_face": "no face was found in id_photo",
    "photo_multiple_faces": "id_photo has more than one face of comparable size",
    "photo_face_too_small": "the face in id_photo is too small to compare (under 24 px between the eyes)",
    "busy": "the service is at capacity; retry after Retry-After seconds",
    "unavailable": "the live pipeline is not available",
    "not_ready": "a dependency (store or model) is not ready",
    "internal": "an unexpected server error",
}

_PARSE_OFF_LOOP = 256 * 1024

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        assert 400 <= status <= 599 and code in ERROR_CODES, (status, code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(request: web.Request, status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    request[ERROR_CODE] = code
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=dict(headers or {}))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(request, e.status, e.code, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _STATUS_CODES.get(e.status, "internal" if e.status >= 500 else "bad_request")
        keep = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
        message = {404: "not found", 405: "method not allowed",
                   413: "request body too large"}.get(e.status, e.reason or "error")
        return error_response(request, e.status, code, message, keep)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        rid = request.get(REQUEST_ID, "-")
        log.exception("unhandled error in %s %s (request id %s)", request.method,
                      _route_name(request), rid)
        return error_response(request, 500, "internal", f"internal error (request id {rid})")


def _route_name(request: web.Request) -> str:
    try:
        return request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
    except Exception:
        return "-"


async def read_json(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object: 415 for another content type, 400 ``bad_json`` when it does
    not parse or is not an object, 413 beyond the body limit."""
    if not request.body_exists:
        if allow_empty:
            request[OP_REQUEST] = {}
            return {}
        raise ApiError(400, "bad_json", "a JSON object body is required")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await request.read()
    if not raw.strip() and allow_empty:
        request[OP_REQUEST] = {}
        return {}
    try:
        if len(raw) > _PARSE_OFF_LOOP:  # a large body (a photo) is parsed in a worker thread
            obj = await asyncio.to_thread(json.loads, raw, parse_constant=_reject_constant)
        else:
            obj = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    request[OP_REQUEST] = obj
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
