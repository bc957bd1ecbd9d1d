"""The S3 media backend (aioboto3): AWS, MinIO, SeaweedFS, Tencent COS or any S3-compatible store.

``STREAM_EKYC_MEDIA_URL=s3://bucket/prefix`` selects it. Objects live at
``<prefix>/<session_id>/<kind>/<name>`` and hold only ciphertext (``crypto.py``). Settings:

==================================  ==========================================================
``STREAM_EKYC_S3_ENDPOINT``         ``http(s)://host:port`` of a non-AWS store (path-style
                                    addressing is used then); empty: AWS
``STREAM_EKYC_S3_REGION``           the region (default ``us-east-1``)
``STREAM_EKYC_S3_ACCESS_KEY_ID``    credentials; when empty, the usual AWS chain applies
``STREAM_EKYC_S3_SECRET_ACCESS_KEY``  (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profile, role)
==================================  ==========================================================

One client per store, opened in ``start()`` and closed in ``close()``. Transient failures
(connection refused or reset, timeouts, 5xx, throttling) are retried with exponential backoff
and jitter; what still fails raises ``MediaUnavailable`` (one line, no key or URL in it), so
the caller (the retention sweeper) can try again later. ``start()`` also sets a bucket
lifecycle rule that expires everything under the prefix after ``lifecycle_days`` — a backstop
behind the sweeper — merged into the bucket's existing rules; a store that refuses lifecycle
configuration is logged once and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import re
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from ..config import ConfigError
from .media import _KIND_RE, _NAME_RE, MediaStore, MediaUnavailable, check_session_id, split_key
from .records import RecordsStore

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("stream_ekyc.media")

T = TypeVar("T")

LIFECYCLE_RULE_ID = "stream-ekyc-media-backstop"


def lifecycle_rule_id(prefix: str) -> str:
    """Our backstop rule's ID for ``prefix``: one rule per prefix, so deployments sharing a
    bucket under different prefixes do not replace each other's rule."""
    if not prefix:
        return LIFECYCLE_RULE_ID
    return f"{LIFECYCLE_RULE_ID}-{hashlib.sha256(prefix.encode()).hexdigest()[:12]}"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-/]{0,512}$")
_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "503", "500", "502", "504",
})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _error_code(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", ""))
    return ""


def _http_status(e: Exception) -> int:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def _is_transient(e: BaseException) -> bool:
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError,
                                     HTTPClientError)
    if isinstance(e, (BotoConnectionError, HTTPClientError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(e, ClientError):
        if _error_code(e) == "NotImplemented" or _http_status(e) == 501:
            return False    # a feature the store does not have (lifecycle rules on some)
        return _error_code(e) in _TRANSIENT_CODES or _http_status(e) >= 500
    return False


def _describe(e: BaseException) -> str:
    """A log-safe description: the exception class and the S3 error code, never the message
    (botocore's messages carry the endpoint URL and object keys)."""
    code = _error_code(e) if isinstance(e, Exception) else ""
    return type(e).__name__ + (f" {code}" if code else "")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` → (bucket, prefix ending in '/' or '')."""
    if not url.lower().startswith("s3://"):
        raise ConfigError(f"media URL {url[:80]!r}: expected s3://bucket/prefix")
    rest = url[5:]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(f"media URL {url[:80]!r}: bad bucket name")
    prefix = prefix.strip("/")
    if "?" in prefix or "#" in prefix or not _PREFIX_RE.fullmatch(prefix) or "//" in prefix \
            or any(p in (".", "..") for p in prefix.split("/")):
        raise ConfigError(f"media URL {url[:80]!r}: bad prefix (letters, digits, _ . - /)")
    return bucket, (prefix + "/" if prefix else "")


class S3MediaStore(MediaStore):
    """Objects in one bucket under one prefix, through one aioboto3 client."""

    def __init__(self, bucket: str, prefix: str = "", records: RecordsStore | None = None,
                 clock: Callable[[], float] = time.time, *, endpoint_url: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, master_key: bytes | None = None,
                 lifecycle_days: int | None = 1, attempts: int = 4, backoff_s: float = 0.2,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0):
        super().__init__(records, clock, master_key=master_key)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        self._credentials = (access_key_id or None, secret_access_key or None)
        self.lifecycle_days = lifecycle_days
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._timeouts = (connect_timeout_s, read_timeout_s)
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self.lifecycle_status: str = "not set"

    @classmethod
    def from_url(cls, url: str, records: RecordsStore | None = None, clock: Callable[[], float] = time.time,
                 *, settings: "Settings | None" = None) -> "S3MediaStore":
        bucket, prefix = parse_s3_url(url)
        kw: dict[str, Any] = {}
        if settings is not None:
            kw = {"endpoint_url": settings.s3_endpoint, "region": settings.s3_region,
                  "access_key_id": settings.s3_access_key_id,
                  "secret_access_key": settings.s3_secret_access_key,
                  "master_key": settings.master_key,
                  # the backstop must never fire before the sweeper's deadline
                  "lifecycle_days": max(1, math.ceil((settings.media_ttl_s + 3600.0) / 86400.0))}
        if bool(kw.get("access_key_id")) != bool(kw.get("secret_access_key")):
            raise ConfigError("STREAM_EKYC_S3_ACCESS_KEY_ID and STREAM_EKYC_S3_SECRET_ACCESS_KEY go together")
        return cls(bucket, prefix, records, clock, **kw)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is not None:
            return
        import aioboto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1],
            retries={"total_max_attempts": 1},          # retried here, with our own backoff
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            signature_version="s3v4",
        )
        session = aioboto3.Session(aws_access_key_id=self._credentials[0],
                                   aws_secret_access_key=self._credentials[1], region_name=self.region)
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                session.client("s3", endpoint_url=self.endpoint_url, config=config))
            self._stack = stack
            await self.ping()
        except BaseException:
            self._client = None
            self._stack = None
            await stack.aclose()
            raise
        if self.lifecycle_days:
            await self._ensure_lifecycle_rule()

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def ping(self) -> None:
        from botocore.exceptions import ClientError

        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except ClientError as e:
            raise MediaUnavailable(f"S3 bucket {self.bucket!r} is not usable ({_describe(e)})") from None

    async def _ensure_lifecycle_rule(self) -> None:
        """Merge our expiry rule into the bucket's lifecycle configuration (idempotent)."""
        from botocore.exceptions import ClientError

        rule_id = lifecycle_rule_id(self.prefix)
        rule = {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": self.prefix},
                "Expiration": {"Days": int(self.lifecycle_days or 1)}}
        try:
            try:
                current = await self._call("get_bucket_lifecycle_configuration", Bucket=self.bucket)
                rules = [r for r in current.get("Rules", []) if r.get("ID") != rule_id]
                if any(r.get("ID") == rule_id and r.get("Expiration") == rule["Expiration"]
                       and r.get("Filter") == rule["Filter"] and r.get("Status") == "Enabled"
                       for r in current.get("Rules", [])):
                    self.lifecycle_status = "set"
                    return
            except ClientError as e:
                if _error_code(e) not in ("NoSuchLifecycleConfiguration", "NoSuchLifecycle", "404"):
                    raise
                rules = []
            await self._call("put_bucket_lifecycle_configuration", Bucket=self.bucket,
                             LifecycleConfiguration={"Rules": rules + [rule]})
            self.lifecycle_status = "set"
        except MediaUnavailable:
            raise
        except Exception as e:
            self.lifecycle_status = "unsupported"
            log.warning("media bucket lifecycle rule not set (%s): the retention sweeper alone deletes media",
                        _describe(e))

    # -- retries ----------------------------------------------------------------------------
    async def _call(self, op: str, **kwargs: Any) -> Any:
        if self._client is None:
            raise MediaUnavailable("S3 media store is not started")
        fn: Callable[..., Awaitable[Any]] = getattr(self._client, op)
        return await self._retry(lambda: fn(**kwargs), op)

    async def _retry(self, attempt: Callable[[], Awaitable[T]], op: str) -> T:
        for n in range(self.attempts):
            try:
                return await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not _is_transient(e):
                    raise
                if n + 1 >= self.attempts:
                    raise MediaUnavailable(f"S3 {op} failed after {self.attempts} attempts ({_describe(e)})") from None
                delay = self.backoff_s * (2 ** n)
                await asyncio.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # -- backend operations -----------------------------------------------------------------
    def _object_key(self, key: str) -> str:
        split_key(key)
        return self.prefix + key

    async def _write(self, key: str, data: bytes, content_type: str) -> None:
        # the stored bytes are ciphertext whatever the media type
        await self._call("put_object", Bucket=self.bucket, Key=self._object_key(key), Body=data,
                         ContentType="application/octet-stream")

    async def _read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        async def get() -> bytes | None:
            try:
                resp = await self._client.get_object(Bucket=self.bucket, Key=self._object_key(key))
            except ClientError as e:
                if _error_code(e) in _MISSING_CODES:
                    return None
                raise
            async with resp["Body"] as body:
                return bytes(await body.read())
        if self._client is None:
            raise MediaUnavailable("S3 media store is not started")
        return await self._retry(get, "get_object")

    async def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self._call("head_object", Bucket=self.bucket, Key=self._object_key(key))
            return True
        except ClientError as e:
            if _error_code(e) in _MISSING_CODES or _http_status(e) == 404:
                return False
            raise

    async def _delete(self, key: str) -> bool:
        existed = await self._exists(key)
        # S3 deletes are idempotent: delete even if the HEAD missed it (a racing write)
        await self._call("delete_object", Bucket=self.bucket, Key=self._object_key(key))
        return existed

    async def _list(self, session_id: str) -> list[str]:
        base = self.prefix + check_session_id(session_id) + "/"
        out: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base, "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            resp = await self._call("list_objects_v2", **kw)
            for obj in resp.get("Contents", []) or []:
                rel = obj["Key"][len(self.prefix):]
                parts = rel.split("/")
                if len(parts) == 3 and _KIND_RE.fullmatch(parts[1]) and _NAME_RE.fullmatch(parts[2]):
                    out.append(rel)
            if not resp.get("IsTruncated"):
                return out
            token = resp.get("NextContinuationToken")
