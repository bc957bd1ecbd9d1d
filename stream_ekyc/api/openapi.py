"""The OpenAPI 3.1 document served at ``/v1/openapi.json``.

Kept by hand next to the routes; a test checks that every registered route and method is
described here, and that every error code the API uses is listed.
"""

from __future__ import annotations

from typing import Any

from .errors import ERROR_CODES


def _err(*codes: str) -> dict[str, Any]:
    return {"description": "Error; `error.code` is one of: " + ", ".join(f"`{c}`" for c in codes),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_API_KEY = [{"apiKey": []}]
_CLIENT_TOKEN = [{"clientToken": []}]
_SID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "enum": sorted(ERROR_CODES)},
            "message": {"type": "string"}}}},
    },
    "SessionOptions": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "challenge_steps": {"type": "integer", "minimum": 6, "maximum": 10,
                                "description": "number of colour steps (default: chosen by the server)"},
            "locale": {"type": "string", "default": "en", "examples": ["en", "pt-BR"]},
            "webhook_url": {"type": "string", "format": "uri",
                            "description": "https only (http to a loopback host in demo/test setups)"},
            "id_photo": {"type": "string", "contentEncoding": "base64",
                         "description": "JPEG or PNG, at most 10 MB and 8000 px a side; deleted after 2 h"},
        },
    },
    "SessionOptionsForm": {
        "type": "object",
        "properties": {
            "challenge_steps": {"type": "integer", "minimum": 6, "maximum": 10},
            "locale": {"type": "string"},
            "webhook_url": {"type": "string"},
            "id_photo": {"type": "string", "contentMediaType": "application/octet-stream"},
        },
    },
    "SessionCreated": {
        "type": "object", "required": ["session_id", "client_token", "expires_at", "page_url"],
        "properties": {
            "session_id": {"type": "string"},
            "client_token": {"type": "string", "description": "single use; give it to the applicant's page only"},
            "expires_at": {"type": "string", "format": "date-time"},
            "page_url": {"type": "string", "format": "uri",
                         "description": "{public_url}/s/#sid=…&token=… (the fragment never reaches server logs)"},
        },
    },
    "Offer": {
        "type": "object", "required": ["sdp", "type", "consent"],
        "properties": {
            "sdp": {"type": "string", "maxLength": 65536},
            "type": {"const": "offer"},
            "consent": {"type": "object", "required": ["privacy", "min_age"], "properties": {
                "privacy": {"const": True}, "min_age": {"const": True}}},
        },
    },
    "Answer": {
        "type": "object", "required": ["sdp", "type"],
        "properties": {"sdp": {"type": "string"}, "type": {"const": "answer"}},
    },
    "Event": {
        "type": "object", "required": ["state", "at"],
        "properties": {"state": {"$ref": "#/components/schemas/State"}, "at": {"type": "string", "format": "date-time"}},
    },
    "State": {"type": "string", "enum": ["created", "connected", "fitting", "challenging", "scoring", "done",
                                         "failed", "expired"]},
    "Result": {
        "type": "object", "additionalProperties": True,
        "properties": {
            "verdict": {"type": "string"},
            "confidence": {"type": "number"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "timings": {"type": "object", "additionalProperties": True},
            "best_frame": {"type": ["string", "null"], "format": "uri"},
            "audit_frames": {"type": "array", "maxItems": 4, "items": {"type": "string", "format": "uri"}},
        },
    },
    "Session": {
        "type": "object", "required": ["session_id", "status", "created_at", "expires_at", "updated_at", "events"],
        "properties": {
            "session_id": {"type": "string"},
            "status": {"$ref": "#/components/schemas/State"},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "result": {"$ref": "#/components/schemas/Result"},
            "webhook": {"$ref": "#/components/schemas/WebhookState"},
        },
    },
    "WebhookState": {
        "type": "object", "required": ["status"],
        "description": "The session.completed event's delivery (sessions created with webhook_url only)",
        "properties": {
            "status": {"type": "string", "enum": ["owed", "pending", "delivered", "failed"]},
            "attempts": {"type": "integer"},
            "http_status": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "finished_at": {"type": ["number", "null"]},
        },
    },
    "Deleted": {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "integer"}}},
    "PageConfig": {
        "type": "object", "required": ["demo", "min_age", "operator", "ice_servers"],
        "properties": {
            "demo": {"type": "boolean"}, "min_age": {"type": "integer"}, "operator": {"type": "string"},
            "ice_servers": {"type": "array", "items": {"type": "object"}},
            "media_retention_hours": {"type": "number", "description": "media is deleted this long after capture"},
        },
    },
}

_CREATE_BODY = {"required": False, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/SessionOptions"}},
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/SessionOptionsForm"}}}}


def _paths() -> dict[str, Any]:
    jpeg = {"description": "JPEG image", "content": {"image/jpeg": {"schema": {"type": "string",
                                                                               "format": "binary"}}}}
    media_errors = {"401": _err("unauthorized"), "404": _err("not_found"), "410": _err("media_deleted")}
    return {
        "/": {"get": {"summary": "Redirect to the page (demo mode); 404 otherwise", "tags": ["page"],
                      "responses": {"302": {"description": "to /s/"}, "404": _err("not_found")}}},
        "/s": {"get": {"summary": "Redirect to /s/", "tags": ["page"],
                       "responses": {"302": {"description": "to /s/"}}}},
        "/s/": {"get": {"summary": "The applicant's page", "tags": ["page"],
                        "responses": {"200": {"description": "index.html"}, "404": _err("not_found")}}},
        "/s/{path}": {"get": {"summary": "The page's static files", "tags": ["page"],
                              "parameters": [{"name": "path", "in": "path", "required": True,
                                              "schema": {"type": "string"}}],
                              "responses": {"200": {"description": "file"}, "404": _err("not_found")}}},
        "/healthz": {"get": {"summary": "Process is alive", "tags": ["operations"],
                             "responses": {"200": {"description": "{\"status\": \"ok\"}"}}}},
        "/readyz": {"get": {"summary": "Stores reachable and models present", "tags": ["operations"],
                            "responses": {"200": {"description": "ready, with checks"},
                                          "503": _err("not_ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "tags": ["operations"],
                             "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
        "/v1/openapi.json": {"get": {"summary": "This document", "tags": ["api"],
                                     "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/v1/page-config": {"get": {"summary": "What the page needs to start", "tags": ["page"],
                                    "responses": {"200": _json("PageConfig", "page configuration")}}},
        "/v1/sessions": {"post": {
            "summary": "Create a session", "tags": ["sessions"], "security": _API_KEY,
            "requestBody": _CREATE_BODY,
            "responses": {"201": _json("SessionCreated", "created"),
                          "400": _err("bad_json", "bad_request"), "401": _err("unauthorized"),
                          "413": _err("too_large"), "415": _err("unsupported_media_type"),
                          "422": _err("photo_bad_base64", "photo_too_large", "photo_unsupported_format",
                                      "photo_too_many_pixels", "photo_corrupt_image", "photo_no_face",
                                      "photo_multiple_faces", "photo_face_too_small")}}},
        "/v1/sessions/{id}": {
            "get": {"summary": "Status, events and (when done) the result", "tags": ["sessions"],
                    "security": _API_KEY, "parameters": [_SID],
                    "responses": {"200": _json("Session", "the session"), "401": _err("unauthorized"),
                                  "404": _err("not_found")}},
            "delete": {"summary": "Delete the session's media now", "tags": ["sessions"],
                       "security": _API_KEY, "parameters": [_SID],
                       "responses": {"200": _json("Deleted", "objects deleted"), "401": _err("unauthorized"),
                                     "404": _err("not_found")}},
        },
        "/v1/sessions/{id}/offer": {"post": {
            "summary": "Start the live check: SDP offer in, SDP answer out (client token)",
            "tags": ["sessions"], "security": _CLIENT_TOKEN, "parameters": [_SID],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Offer"}}}},
            "responses": {"200": _json("Answer", "SDP answer"),
                          "400": _err("bad_json", "consent_required", "bad_sdp"), "401": _err("bad_token"),
                          "409": _err("token_used"), "410": _err("expired"), "413": _err("too_large"),
                          "415": _err("unsupported_media_type"),
                          "503": {**_err("busy", "unavailable"),
                                  "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}}},
        "/v1/sessions/{id}/best-frame": {"get": {
            "summary": "The best frame (JPEG) while it is kept", "tags": ["sessions"], "security": _API_KEY,
            "parameters": [_SID], "responses": {"200": jpeg, **media_errors}}},
        "/v1/sessions/{id}/audit-frames/{n}": {"get": {
            "summary": "Audit frame n (0-3, JPEG) while it is kept", "tags": ["sessions"], "security": _API_KEY,
            "parameters": [_SID, {"name": "n", "in": "path", "required": True,
                                  "schema": {"type": "integer", "minimum": 0, "maximum": 3}}],
            "responses": {"200": jpeg, **media_errors}}},
        "/demo/session": {"post": {
            "summary": "Demo mode only, loopback only: a session for the built-in demo app", "tags": ["page"],
            "requestBody": _CREATE_BODY,
            "responses": {"201": _json("SessionCreated", "created"), "403": _err("forbidden"),
                          "404": _err("not_found"), "400": _err("bad_json", "bad_request")}}},
    }


def build_openapi(public_url: str) -> dict[str, Any]:
    try:
        from importlib.metadata import version
        __version__ = version("stream-ekyc")
    except Exception:
        __version__ = "0.0.0"

    return {
        "openapi": "3.1.0",
        "info": {"title": "stream_ekyc", "version": __version__,
                 "description": "Reflective-liveness eKYC sessions. Errors are "
                                "{\"error\": {\"code\", \"message\"}}; codes: "
                                + ", ".join(f"`{k}` ({v})" for k, v in ERROR_CODES.items()),
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": public_url}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "the AppID's API key (sk_…)"},
                "clientToken": {"type": "http", "scheme": "bearer",
                                "description": "the session's single-use client token (ct_…)"},
            },
        },
    }
