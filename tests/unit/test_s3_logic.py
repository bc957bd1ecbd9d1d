"""Pure logic of the S3 media backend: URL parsing, which errors are retried, the backoff loop,
and a store that refuses lifecycle rules (a stand-in client: the real server is exercised by
tests/integration/test_media_stores.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from stream_ekyc.config import ConfigError, Settings
from stream_ekyc.stores.media import MediaUnavailable, media_from_url
from stream_ekyc.stores.s3 import S3MediaStore, _is_transient, parse_s3_url


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "secret-ish detail s3://b/ses_x/k"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_parse_s3_url():
    assert parse_s3_url("s3://media") == ("media", "")
    assert parse_s3_url("s3://media-bucket.eu/ekyc/prod/") == ("media-bucket.eu", "ekyc/prod/")
    for bad in ("s3://", "s3://UPPER", "s3://a", "s3://b_ucket/x", "s3://bucket/../x", "s3://bucket/a//b",
                "s3://bucket/x?y=1", "file:///x"):
        with pytest.raises(ConfigError):
            parse_s3_url(bad)


def test_s3_settings():
    env = {"STREAM_EKYC_MEDIA_URL": "s3://media/p", "STREAM_EKYC_S3_ENDPOINT": "http://127.0.0.1:8333/",
           "STREAM_EKYC_S3_REGION": "eu-west-1", "STREAM_EKYC_S3_ACCESS_KEY_ID": "id",
           "STREAM_EKYC_S3_SECRET_ACCESS_KEY": "secret", "STREAM_EKYC_MEDIA_TTL_S": str(3 * 86400)}
    s = Settings.from_env(env)
    store = media_from_url(s.media_url, settings=s)
    assert isinstance(store, S3MediaStore)
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == ("media", "p/", "http://127.0.0.1:8333", "eu-west-1")
    assert store.lifecycle_days == 4           # the backstop never fires before the deadline (+1 h)
    assert S3MediaStore.from_url("s3://media", settings=Settings.from_env({})).lifecycle_days == 1
    with pytest.raises(ConfigError, match="go together"):
        media_from_url(s.media_url, settings=Settings.from_env({k: v for k, v in env.items() if "SECRET" not in k}))
    with pytest.raises(ConfigError):
        Settings.from_env({"STREAM_EKYC_S3_ENDPOINT": "ftp://x"})


def test_transient_errors():
    assert _is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert _is_transient(ConnectionResetError())
    assert _is_transient(client_error("SlowDown", 503)) and _is_transient(client_error("Weird", 500))
    assert not _is_transient(client_error("AccessDenied", 403)) and not _is_transient(client_error("NoSuchKey", 404))
    assert not _is_transient(ValueError("x")) and not _is_transient(client_error("NotImplemented", 501))


class StubClient:
    """Fails ``fail`` times with ``error``, then answers."""

    def __init__(self, fail: int, error: Exception):
        self.fail, self.error, self.calls = fail, error, 0

    async def head_bucket(self, **kw):
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error
        return {}

    async def get_bucket_lifecycle_configuration(self, **kw):
        raise client_error("NotImplemented", 501)          # a refusal, not an outage

    async def put_bucket_lifecycle_configuration(self, **kw):
        raise AssertionError("not reached")


def test_retries_with_backoff_then_gives_up_in_one_line():
    async def go() -> None:
        store = S3MediaStore("media", "", attempts=3, backoff_s=0.0)
        store._client = StubClient(2, EndpointConnectionError(endpoint_url="http://127.0.0.1:1/media/ses_x"))
        await store.ping()
        assert store._client.calls == 3
        store._client = StubClient(5, EndpointConnectionError(endpoint_url="http://127.0.0.1:1/media/ses_x"))
        with pytest.raises(MediaUnavailable) as e:
            await store.ping()
        assert store._client.calls == 3 and "127.0.0.1" not in str(e.value) and "ses_x" not in str(e.value)
        store._client = StubClient(5, client_error("AccessDenied", 403))      # not retried
        with pytest.raises(MediaUnavailable, match="AccessDenied"):
            await store.ping()
        assert store._client.calls == 1
    asyncio.run(go())


def test_a_store_that_refuses_lifecycle_rules_is_logged_once(caplog):
    async def go() -> None:
        store = S3MediaStore("media", "p/")
        store._client = StubClient(0, RuntimeError())
        with caplog.at_level(logging.WARNING, logger="stream_ekyc.media"):
            await store._ensure_lifecycle_rule()
        assert store.lifecycle_status == "unsupported"
    asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "lifecycle" in lines[0] and "NotImplemented" in lines[0]
    assert "secret-ish" not in lines[0] and "ses_x" not in lines[0]
