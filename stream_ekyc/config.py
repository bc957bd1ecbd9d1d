"""One ``Settings`` object for the service, read from ``STREAM_EKYC_*`` environment variables.

Every setting has an embedded default, so ``stream-ekyc serve`` runs with nothing configured:
SQLite records and a local media directory under the user data directory. A bad value is a
``ConfigError`` carrying one line that names the variable; the CLI prints it and exits 2.

Explicit overrides (``Settings.from_env(port=9000)``; the CLI's flags) win over the
environment. ``None`` as an override means "not given".
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import platformdirs

from .pricing import PriceError, PriceTable

ENV_PREFIX = "STREAM_EKYC_"

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting has a value the service cannot use (one line, names the setting)."""


def _usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


def default_analysis_threads() -> int:
    """One thread of the shared CPU executor per two CPUs this process may use, at least one.
    The frame analysis holds the GIL for much of its work and shares the CPUs with the
    decoder threads and the event loop: on 2 cores at 8 sessions, one analysis thread took
    about 5 % less CPU per stream than two (less contention, warmer caches; docs/capacity.md)
    and kept every verdict on time."""
    return max(1, _usable_cpus() // 2)


def default_malloc_arenas() -> int:
    """glibc malloc arenas for the server: one per CPU this process may use, at least two
    (glibc's own limit is eight per CPU; stream_ekyc/heap.py says why fewer)."""
    return max(2, _usable_cpus())


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("stream-ekyc")))
    records_url: str = ""           # derived: sqlite:///<data_dir>/records.sqlite3
    media_url: str = ""             # derived: file://<data_dir>/media
    public_url: str = ""            # derived: http://<host>:<port>
    session_ttl_s: float = 180.0    # how long a created session can wait for its offer
    media_ttl_s: float = 7200.0     # media is deleted this long after capture
    records_ttl_s: float = 730 * 86400.0  # monitoring, operation logs, sessions: kept 2 years
    prices: PriceTable = field(default_factory=PriceTable.default)  # fee per interface (pricing.py)
    max_sessions: int = 8           # concurrent live sessions; beyond: 503 busy
    analysis_threads: int = field(default_factory=default_analysis_threads)  # the shared CPU executor
    malloc_arenas: int = field(default_factory=default_malloc_arenas)  # glibc arenas (0: glibc's default)
    demo: bool = False
    ice_loopback_only: bool = False  # dev/test only: gather loopback candidates only
    decode_only: bool = False       # benchmark baseline: receive and decode frames, nothing else
    ice_servers: tuple[dict[str, Any], ...] = ()
    min_age: int = 18
    match_threshold: float = 70.0   # face match: similarity (0-100) needed; 70 <-> FAR 0.1 %
    operator: str = "the operator of this service"
    region: str = "local"
    log_level: str = "INFO"
    max_body_bytes: int = 12 * 1024 * 1024
    web_dir: Path | None = None     # the page's files; default: the repository's web_client/
    # media at rest: per-session data keys, optionally wrapped by this key (base64 of 32 bytes)
    master_key: bytes | None = field(default=None, repr=False)
    # media in S3 (STREAM_EKYC_MEDIA_URL=s3://bucket/prefix): endpoint for non-AWS stores;
    # credentials default to the AWS variables / profile chain when these are empty
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_access_key_id: str = field(default="", repr=False)
    s3_secret_access_key: str = field(default="", repr=False)
    retention_interval_s: float = 60.0  # the media retention sweeper's period (in the service)
    webhook_interval_s: float = 2.0     # how often the webhook dispatcher looks for work
    webhook_timeout_s: float = 10.0     # one delivery attempt, connect to last byte
    webhook_allow_private: bool = False  # deliver to private/loopback addresses (tests, on-premises)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``STREAM_EKYC_<FIELD>`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        raw: dict[str, Any] = {}
        for name in names:
            var = ENV_PREFIX + name.upper()
            if var in env:
                raw[name] = (var, env[var])
        for name, value in overrides.items():
            if value is not None:
                raw[name] = (name, value)
        values: dict[str, Any] = {}
        for name, (label, value) in raw.items():
            values[name] = _PARSERS[name](label, value)

        return cls(**values)

    def __post_init__(self) -> None:
        """Fill the derived settings (store URLs, public URL, page directory) left empty."""
        data_dir = Path(self.data_dir).expanduser().absolute()
        derived = {
            "data_dir": data_dir,
            "records_url": self.records_url or f"sqlite:///{data_dir / 'records.sqlite3'}",
            "media_url": self.media_url or f"file://{data_dir / 'media'}",
            "public_url": self.public_url or _derived_public_url(self.host, self.port),
            "web_dir": self.web_dir or Path(__file__).resolve().parent.parent / "web_client",
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def is_https(self) -> bool:
        return self.public_url.startswith("https://")


# --- parsers: (label, value) -> typed value; raise ConfigError with one line -----------------

def _str(label: str, v: Any, *, max_len: int = 500) -> str:
    s = str(v).strip()
    if not s:
        raise ConfigError(f"{label}: must not be empty")
    if len(s) > max_len or "\n" in s or "\r" in s:
        raise ConfigError(f"{label}: must be one line of at most {max_len} characters")
    return s


def _int(label: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool):
        raise ConfigError(f"{label}: expected an integer, got {v!r}")
    try:
        n = int(str(v).strip()) if not isinstance(v, int) else v
    except ValueError:
        raise ConfigError(f"{label}: expected an integer, got {str(v)[:40]!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{label}: must be between {lo} and {hi}, got {n}")
    return n


def _float(label: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool):
        raise ConfigError(f"{label}: expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{label}: expected a number, got {str(v)[:40]!r}") from None
    if not (lo < x <= hi):  # also rejects NaN
        raise ConfigError(f"{label}: must be > {lo:g} and <= {hi:g}, got {x:g}")
    return x


def _bool(label: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ConfigError(f"{label}: expected true/false, got {str(v)[:40]!r}")


def _host(label: str, v: Any) -> str:
    s = _str(label, v, max_len=253)
    if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", s):
        raise ConfigError(f"{label}: not a host name or address: {s[:60]!r}")
    return s.strip("[]")


def _path(label: str, v: Any) -> Path:
    return Path(_str(label, v, max_len=4096)).expanduser()


def _url_with_scheme(label: str, v: Any, schemes: tuple[str, ...]) -> str:
    s = _str(label, v, max_len=4096)
    scheme = s.split("://", 1)[0].lower() if "://" in s else ""
    if scheme not in schemes:
        raise ConfigError(f"{label}: expected a URL starting with {' or '.join(s_ + '://' for s_ in schemes)}")
    return s


def _records_url(label: str, v: Any) -> str:
    # scheme support is decided by the store factory (it knows which backends exist)
    s = _str(label, v, max_len=4096)
    if "://" not in s:
        raise ConfigError(f"{label}: expected a URL such as sqlite:///path/records.sqlite3")
    return s


def _media_url(label: str, v: Any) -> str:
    s = _str(label, v, max_len=4096)
    if "://" not in s:
        raise ConfigError(f"{label}: expected a URL such as file:///path/media")
    return s


def _prices(label: str, v: Any) -> PriceTable:
    if isinstance(v, PriceTable):
        return v
    try:
        return PriceTable.parse(v)
    except PriceError as e:
        raise ConfigError(f"{label}: {e}") from None


def _public_url(label: str, v: Any) -> str:
    s = _url_with_scheme(label, v, ("http", "https")).rstrip("/")
    parts = urlsplit(s)
    if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{label}: expected http(s)://host[:port][/path] without query, fragment or user")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{label}: bad port in {s[:80]!r}") from None
    return s


def _ice_servers(label: str, v: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else []
        except json.JSONDecodeError as e:
            raise ConfigError(f"{label}: not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{label}: expected a JSON list of {{\"urls\": ...}} objects")
    out = []
    for i, server in enumerate(v):
        if not isinstance(server, dict) or "urls" not in server:
            raise ConfigError(f"{label}[{i}]: expected an object with \"urls\"")
        urls = server["urls"]
        url_list = [urls] if isinstance(urls, str) else urls
        if not isinstance(url_list, list) or not url_list or not all(isinstance(u, str) for u in url_list):
            raise ConfigError(f"{label}[{i}].urls: expected a string or a non-empty list of strings")
        for u in url_list:
            if not re.match(r"^(stun|stuns|turn|turns):", u):
                raise ConfigError(f"{label}[{i}].urls: {u[:60]!r} is not a stun:/turn:/turns: URL")
        extra = set(server) - {"urls", "username", "credential"}
        if extra:
            raise ConfigError(f"{label}[{i}]: unknown key(s) {', '.join(sorted(extra))}")
        for k in ("username", "credential"):
            if k in server and not isinstance(server[k], str):
                raise ConfigError(f"{label}[{i}].{k}: expected a string")
        out.append(dict(server))
    return tuple(out)


def _master_key(label: str, v: Any) -> bytes:
    if isinstance(v, (bytes, bytearray)) and len(v) == 32:
        return bytes(v)
    from .stores.crypto import parse_master_key
    try:
        return parse_master_key(str(v))
    except ValueError as e:
        raise ConfigError(f"{label}: {e}") from None


def _s3_endpoint(label: str, v: Any) -> str:
    s = _url_with_scheme(label, v, ("http", "https")).rstrip("/")
    if not urlsplit(s).hostname:
        raise ConfigError(f"{label}: expected http(s)://host[:port]")
    return s


def _log_level(label: str, v: Any) -> str:
    s = _str(label, v).upper()
    if s not in _LOG_LEVELS:
        raise ConfigError(f"{label}: expected one of {', '.join(_LOG_LEVELS)}, got {str(v)[:20]!r}")
    return s


def _region(label: str, v: Any) -> str:
    s = _str(label, v, max_len=64)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", s):
        raise ConfigError(f"{label}: letters, digits, '_', '.', '-' only")
    return s


_PARSERS: dict[str, Any] = {
    "host": _host,
    "port": lambda l, v: _int(l, v, 0, 65535),
    "data_dir": _path,
    "records_url": _records_url,
    "media_url": _media_url,
    "public_url": _public_url,
    "session_ttl_s": lambda l, v: _float(l, v, 0.0, 86400.0),
    "media_ttl_s": lambda l, v: _float(l, v, 0.0, 30 * 86400.0),
    "records_ttl_s": lambda l, v: _float(l, v, 0.0, 100 * 366 * 86400.0),
    "prices": _prices,
    "max_sessions": lambda l, v: _int(l, v, 1, 10000),
    "analysis_threads": lambda l, v: _int(l, v, 1, 256),
    "malloc_arenas": lambda l, v: _int(l, v, 0, 1024),
    "demo": _bool,
    "ice_loopback_only": _bool,
    "decode_only": _bool,
    "ice_servers": _ice_servers,
    "min_age": lambda l, v: _int(l, v, 1, 120),
    "match_threshold": lambda l, v: _float(l, v, 0.0, 100.0),
    "operator": lambda l, v: _str(l, v, max_len=200),
    "region": _region,
    "log_level": _log_level,
    "max_body_bytes": lambda l, v: _int(l, v, 1024, 1 << 30),
    "web_dir": _path,
    "master_key": _master_key,
    "s3_endpoint": _s3_endpoint,
    "s3_region": _region,
    "s3_access_key_id": lambda l, v: _str(l, v, max_len=256),
    "s3_secret_access_key": lambda l, v: _str(l, v, max_len=256),
    "retention_interval_s": lambda l, v: _float(l, v, 0.0, 86400.0),
    "webhook_interval_s": lambda l, v: _float(l, v, 0.05, 3600.0),
    "webhook_timeout_s": lambda l, v: _float(l, v, 0.5, 120.0),
    "webhook_allow_private": _bool,
}


def _derived_public_url(host: str, port: int) -> str:
    h = host
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is not None and addr.is_unspecified:
        # listening on every interface: the loopback address is the one a local browser
        # can use (and a secure context for the camera); set STREAM_EKYC_PUBLIC_URL otherwise
        h = "127.0.0.1" if addr.version == 4 else "[::1]"
    elif addr is not None and addr.version == 6:
        h = f"[{host}]"
    return f"http://{h}:{port}"


def log_level_number(settings: Settings) -> int:
    return getattr(logging, settings.log_level)
