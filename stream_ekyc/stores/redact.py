"""Desensitization for operation logs and for the application's log lines.

``redact(obj)`` returns a JSON-safe copy of a request/response shape with:

* image bytes and base64 blobs → ``<bytes n=…>`` (n = decoded length);
* embeddings and long numeric arrays → ``<vector n=…>``;
* API keys (``sk_…``), client tokens (``ct_…``), Bearer values, JWT-like strings and any
  value under a secret-looking key (token, api_key, authorization, password, …) → ``<secret>``;
* ID numbers (long digit runs, SSN / resident-ID / NINO / grouped shapes) → ``<id>``;
* names, dates of birth, ID and document numbers, addresses, e-mail and phone numbers under
  their usual keys → ``<redacted>``; ``key=value`` and ``"key": "value"`` pairs of those
  keys inside free text too; e-mail addresses anywhere → ``<email>``;
* IP addresses → ``ip:<12 hex>``, an HMAC with a per-process random salt: calls from one
  address can be correlated within a run, the address itself cannot be recovered;
* SDP bodies (they carry ICE credentials and candidate addresses) → ``<sdp n=…>``.

``RedactingFilter`` applies the same rules to log records (message, arguments, extra
attributes, exception text); ``install_log_redaction()`` puts it on the root handlers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from typing import Any, Mapping

_SALT = secrets.token_bytes(32)

MAX_DEPTH = 24
MAX_STRING = 2000
VECTOR_MIN = 16

PII_KEYS = frozenset({
    "name", "first_name", "last_name", "full_name", "given_name", "given_names", "family_name",
    "surname", "middle_name", "maiden_name", "birth_name", "display_name", "holder_name",
    "dob", "date_of_birth", "birth_date", "birthdate", "birthday",
    "id_number", "document_number", "doc_number", "national_id", "national_id_number",
    "passport_number", "passport_no", "license_number", "licence_number", "ssn", "nin", "tax_id",
    "personal_number", "personal_id",
    "address", "street", "street_address", "postcode", "postal_code", "zip",
    "email", "e_mail", "phone", "phone_number", "mobile", "telephone",
    "mrz",
})
SECRET_KEYS = frozenset({
    "authorization", "proxy_authorization", "api_key", "apikey", "x_api_key", "client_token",
    "token", "access_token", "refresh_token", "id_token", "secret", "client_secret", "password",
    "passwd", "cookie", "set_cookie", "credential", "credentials", "ice_pwd", "private_key",
})
IP_KEYS = frozenset({
    "ip", "ip_address", "remote", "remote_addr", "remote_ip", "client_ip", "peer", "peername",
    "peer_ip", "x_forwarded_for", "x_real_ip", "forwarded",
})
VECTOR_KEYS = frozenset({"embedding", "embeddings", "descriptor", "feature_vector", "face_vector", "template"})
BLOB_KEYS = frozenset({"id_photo", "photo", "image", "frame", "jpeg", "png", "video", "data", "content"})
SDP_KEYS = frozenset({"sdp"})

# integers under these keys are measurements, not identifiers
_MEASURE_KEY = re.compile(r"(?:^|_)(?:size|length|bytes|count|total|n|status|ms|us|ns|s|seconds|at|units|frames)$")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _norm_key(k: str) -> str:
    return _CAMEL.sub(r"_\1", k).lower().replace("-", "_").replace(" ", "_")


def _key_class(k: str) -> str | None:
    n = _norm_key(k)
    if n in SECRET_KEYS or n.endswith(("_token", "_secret", "_password", "_api_key", "_apikey")):
        return "secret"
    if n in PII_KEYS:
        return "pii"
    if n in IP_KEYS:
        return "ip"
    if n in SDP_KEYS:
        return "sdp"
    if n in VECTOR_KEYS:
        return "vector"
    if n in BLOB_KEYS:
        return "blob"
    return None


def hash_ip(ip: str) -> str:
    """``ip:`` + 12 hex of HMAC-SHA256(per-process salt, normalised address)."""
    try:
        norm = str(ipaddress.ip_address(ip.strip().strip("[]")))
    except ValueError:
        norm = ip.strip()
    return "ip:" + hmac.new(_SALT, norm.encode(), hashlib.sha256).hexdigest()[:12]


# --- free-text scrubbing ---------------------------------------------------------------------

def _b64_len(s: str) -> int:
    s = s.strip().rstrip("=")
    return len(s) * 3 // 4


_DATA_URL = re.compile(r"data:[\w/+.-]*(?:;[\w=.-]+)*;base64,[A-Za-z0-9+/_=-]+")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{120,}={0,2}")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s,;\"'<>]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_OUR_SECRETS = re.compile(r"(?<![A-Za-z0-9])(?:sk|ct)_[A-Za-z0-9_-]{8,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_KV_KEYS = sorted(PII_KEYS | SECRET_KEYS, key=len, reverse=True)
_KV = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(" + "|".join(re.escape(k).replace("_", "[_ -]?") for k in _KV_KEYS) + r")"
    r"([\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|(?:(?!\s+[A-Za-z_][\w-]*\s*[:=])[^,;&\n}\]\)'\"])+)")
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]*\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_ID_SHAPES = [
    re.compile(r"(?<![\w.])\d{3}-\d{2}-\d{4}(?![\w])"),                     # US SSN
    re.compile(r"(?<![\w.])\d{4}[ -]\d{4}[ -]\d{4}(?:[ -]\d{4})?(?![\w])"),  # grouped 12/16 digits
    re.compile(r"(?<![\w.])\d{6}[ -]?\d{8}[\dXx](?:\d{3})?(?![\w])"),        # resident ID (18) variants
    re.compile(r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z]{2}\d{6}[A-D](?![A-Za-z0-9])"),  # UK NINO
    re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d{6,9}(?![A-Za-z0-9])"),          # passport-like
    re.compile(r"(?<![\w.])\d{7,}[Xx]?(?!\w|\.\d)"),                           # long digit runs
]


def _ipv6_sub(m: re.Match[str]) -> str:
    s = m.group(0)
    try:
        ipaddress.ip_address(s.split("%", 1)[0])
    except ValueError:
        return s
    return hash_ip(s)


def scrub(text: str, max_len: int | None = None) -> str:
    """Apply the free-text rules to one string (cut to ``max_len`` characters if given)."""
    s = _DATA_URL.sub(lambda m: f"<bytes n={_b64_len(m.group(0).split(',', 1)[1])}>", text)
    s = _JWT.sub("<secret>", s)
    s = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}<secret>", s)
    s = _OUR_SECRETS.sub("<secret>", s)
    s = _KV.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", s)
    s = _B64_RUN.sub(lambda m: f"<bytes n={_b64_len(m.group(0))}>", s)
    s = _EMAIL.sub("<email>", s)
    s = _IPV4.sub(lambda m: hash_ip(m.group(0)), s)
    s = _IPV6_CANDIDATE.sub(_ipv6_sub, s)
    for rx in _ID_SHAPES:
        s = rx.sub("<id>", s)
    if max_len is not None and len(s) > max_len:
        s = s[:max_len] + f"…<{len(s) - max_len} more>"
    return s


_B64_BODY = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_BLOB_SAMPLE = 4096


def _looks_like_blob(s: str) -> bool:
    """A long run of base64 characters (optionally a data: URL). Long strings are judged on
    their first 4 KB so that a 10 MB photo costs no more than a small one."""
    if len(s) < 64:
        return False
    body = s.split(",", 1)[1] if s.startswith("data:") and "," in s[:200] else s
    return bool(_B64_BODY.fullmatch(body[:_BLOB_SAMPLE] if len(body) > _BLOB_SAMPLE else body))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def redact(obj: Any, _key: str | None = None, _depth: int = 0) -> Any:
    """A JSON-safe, desensitized copy of ``obj`` (see the module doc for the rules)."""
    cls = _key_class(_key) if _key is not None else None
    if obj is None:
        return None
    if cls == "secret":
        return "<secret>"
    if cls == "pii":
        return "<redacted>"
    if _depth > MAX_DEPTH:
        return "<truncated>"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return f"<bytes n={len(obj)}>"
    if type(obj).__module__ == "numpy":
        shape = getattr(obj, "shape", None)
        if shape is None or shape == ():
            try:
                obj = obj.item()
            except Exception:
                return "<value>"
        else:
            size = int(getattr(obj, "size", 0))
            return f"<vector n={size}>" if len(shape) == 1 else f"<array shape={list(shape)}>"
    if isinstance(obj, bool):
        return obj
    if cls == "ip" and isinstance(obj, str):
        return ", ".join(hash_ip(p) for p in obj.split(",") if p.strip()) or obj
    if isinstance(obj, str):
        if cls == "sdp":
            return f"<sdp n={len(obj)}>"
        if _looks_like_blob(obj):
            body = obj.split(",", 1)[1] if obj.startswith("data:") else obj
            return f"<bytes n={_b64_len(body)}>"
        return scrub(obj, MAX_STRING)
    if isinstance(obj, int):
        measure = _key is not None and _MEASURE_KEY.search(_norm_key(_key))
        return "<id>" if abs(obj) >= 10**7 and not measure else obj
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else str(obj)
    if isinstance(obj, Mapping):
        return {str(k) if isinstance(k, str) else scrub(str(k)): redact(v, str(k), _depth + 1)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
        if cls == "vector" or (len(items) >= VECTOR_MIN and all(_is_number(x) for x in items)):
            return f"<vector n={len(items)}>"
        return [redact(x, None, _depth + 1) for x in items]
    return scrub(repr(obj))[:200]


# --- logging ---------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message", "asctime", "taskName"}


class RedactingFilter(logging.Filter):
    """Rewrites each record in place: message and args rendered and scrubbed, extra
    attributes redacted, exception and stack text scrubbed. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._apply(record)
        except Exception:  # redaction must never lose a log line: fall back to a bare notice
            record.msg = "<log message withheld: redaction failed>"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True

    @staticmethod
    def _apply(record: logging.LogRecord) -> None:
        if getattr(record, "_stream_ekyc_redacted", False):
            return
        args = record.args
        msg = str(record.msg)
        if args:
            try:
                safe_args: Any
                if isinstance(args, Mapping):
                    safe_args = {k: _safe_arg(v, k) for k, v in args.items()}
                else:
                    safe_args = tuple(_safe_arg(a) for a in args)
                msg = msg % safe_args
            except (TypeError, ValueError, KeyError):
                msg = record.getMessage()
        record.msg = scrub(msg)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        # the standard Formatter prints exc_text on its own; the raw exception (whose message
        # may hold anything) is dropped so no other handler can render it unscrubbed
        record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for k in list(vars(record)):
            if k not in _STANDARD_ATTRS and not k.startswith("_"):
                setattr(record, k, redact(getattr(record, k), k))
        record._stream_ekyc_redacted = True  # type: ignore[attr-defined]


def _safe_arg(v: Any, key: str | None = None) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and key is None:
        return v  # keep %d / %f working; digit runs are scrubbed in the rendered message
    return redact(v, key)


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one ``RedactingFilter`` on every handler of ``logger`` (default: root). Filters on
    handlers see records propagated from every child logger (aiohttp.access included)."""
    target = logger or logging.getLogger()
    flt = next((f for h in target.handlers for f in h.filters if isinstance(f, RedactingFilter)), None)
    flt = flt or RedactingFilter()
    for h in target.handlers:
        if flt not in h.filters:
            h.addFilter(flt)
    return flt
