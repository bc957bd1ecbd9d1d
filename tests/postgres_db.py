"""A fresh PostgreSQL database per test: ``postgres_url`` (fixture) and ``fresh_database``.

The server is the one on this machine (and in CI): ``STREAM_EKYC_TEST_POSTGRES`` names an
admin URL, default ``postgresql://postgres@127.0.0.1:5432/test`` (trust auth). Each test
gets ``CREATE DATABASE ekyc_test_<random>``, dropped afterwards, so runs never interfere.
When the server cannot be reached the test is skipped, except under CI (``CI=true``),
where that is a failure.

Use it from a test module with ``from tests.postgres_db import postgres_url  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from typing import Iterator
from urllib.parse import urlsplit

import pytest

ADMIN_URL = os.environ.get("STREAM_EKYC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit."""
    name = f"ekyc_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(f"CREATE DATABASE {name}"))
    except (OSError, ImportError) as e:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"PostgreSQL not reachable for the tests: {type(e).__name__}: {e}")
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url
