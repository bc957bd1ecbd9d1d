"""The media and records backends the store tests run over, each real: a local directory or
SeaweedFS over S3 for media; SQLite or PostgreSQL for records. Test modules import the fixtures ``backend`` and ``records_url`` from here, and
``postgres_url`` from tests/postgres_db.py. ``Backend`` also reaches the stored bytes directly (as a backup or an attacker would)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from stream_ekyc.stores.media import LocalMediaStore, MediaStore
from stream_ekyc.stores.records import RecordsStore, records_from_url
from stream_ekyc.stores.s3 import S3MediaStore

MEDIA_BACKENDS = ("local", "s3")


class Clock:
    """Unix seconds that only move when told to."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend:
    """Makes media stores of one kind over one place, and reads/writes its raw bytes."""

    def __init__(self, kind: str, tmp_path: Path, seaweedfs: Any = None):
        self.kind = kind
        self.root = tmp_path / "media"
        self.seaweedfs = seaweedfs
        self.prefix = f"t{secrets.token_hex(4)}/"   # each test its own corner of the bucket
        self._moved: Path | None = None

    def store(self, records: RecordsStore | None, clock: Callable[[], float] = time.time,
              **kw: Any) -> MediaStore:
        if self.kind == "local":
            return LocalMediaStore(self.root, records, clock, master_key=kw.get("master_key"))
        s = self.seaweedfs
        kw.setdefault("attempts", 2)
        kw.setdefault("backoff_s", 0.05)
        kw.setdefault("connect_timeout_s", 2.0)
        kw.setdefault("read_timeout_s", 10.0)
        return S3MediaStore(s.bucket, self.prefix, records, clock, endpoint_url=s.endpoint,
                            access_key_id=s.access_key, secret_access_key=s.secret_key, **kw)

    # -- the stored bytes, bypassing the store --------------------------------------------------
    async def raw_read(self, key: str) -> bytes | None:
        if self.kind == "local":
            p = self.root / key
            return await asyncio.to_thread(lambda: p.read_bytes() if p.is_file() else None)

        def get() -> bytes | None:
            c = self.seaweedfs.boto3_client()
            try:
                return c.get_object(Bucket=self.seaweedfs.bucket, Key=self.prefix + key)["Body"].read()
            except c.exceptions.NoSuchKey:
                return None
        return await asyncio.to_thread(get)

    async def raw_write(self, key: str, data: bytes) -> None:
        if self.kind == "local":
            p = self.root / key

            def write() -> None:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            await asyncio.to_thread(write)
            return
        await asyncio.to_thread(lambda: self.seaweedfs.boto3_client().put_object(
            Bucket=self.seaweedfs.bucket, Key=self.prefix + key, Body=data))

    async def raw_keys(self) -> list[str]:
        if self.kind == "local":
            return await asyncio.to_thread(lambda: sorted(
                str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()))

        def ls() -> list[str]:
            c = self.seaweedfs.boto3_client()
            out: list[str] = []
            for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.seaweedfs.bucket,
                                                                    Prefix=self.prefix):
                out += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
            return sorted(out)
        return await asyncio.to_thread(ls)

    # -- outages ----------------------------------------------------------------------------------
    async def go_down(self) -> None:
        if self.kind == "local":   # the volume is unmounted
            self._moved = self.root.with_name("media-away")
            self.root.rename(self._moved)
        else:
            await asyncio.to_thread(self.seaweedfs.stop)

    async def come_back(self) -> None:
        if self.kind == "local":
            assert self._moved is not None
            self._moved.rename(self.root)
        else:
            await asyncio.to_thread(self.seaweedfs.start)


def records_urls(tmp_path: Path) -> dict[str, str]:
    return {"sqlite": f"sqlite:///{tmp_path / 'records.sqlite3'}"}


async def open_records(url: str) -> RecordsStore:
    r = records_from_url(url)
    await r.start()
    return r


@contextlib.asynccontextmanager
async def opened(backend: Backend, records_url: str, clock: Callable[[], float],
                 **kw: Any) -> AsyncIterator[tuple[RecordsStore, MediaStore]]:
    """A started records store and a media store over ``backend`` on it; both closed after."""
    records = await open_records(records_url)
    media = backend.store(records, clock, **kw)
    try:
        await media.start()
        yield records, media
    finally:
        await media.close()
        await records.close()


# fixtures (imported by the test modules): every media backend, every records backend

@pytest.fixture(params=MEDIA_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    seaweedfs = request.getfixturevalue("seaweedfs") if request.param == "s3" else None
    return Backend(request.param, tmp_path, seaweedfs)


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")   # tests/postgres_db.py: a fresh database
    return records_urls(tmp_path)[request.param]
