"""Integration fixtures: the real application on a real socket (127.0.0.1, random port), a real
SQLite file and media directory in tmp_path, an injectable clock.

``async def`` tests in this directory run on a fresh event loop each (no plugin needed);
a test marked ``asyncio`` is left to whichever plugin handles that marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from stream_ekyc.api.app import RECORDS, create_app
from stream_ekyc.api.auth import create_api_app
from stream_ekyc.config import Settings


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj) or pyfuncitem.get_closest_marker("asyncio"):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=120))
    return True


class Clock:
    """Unix seconds that only move when told to."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Busy(Exception):
    def __init__(self, retry_after_s: float):
        super().__init__(f"busy, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class StubLive:
    """Stands in for the live pipeline (another module's job) behind its protocol."""

    ANSWER = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"

    def __init__(self) -> None:
        self.mode = "ok"          # ok | busy | bad_sdp | crash
        self.active = 0
        self.started: list[dict[str, Any]] = []
        self.shut_down = False

    async def start(self, session: dict[str, Any], offer_sdp: str, offer_type: str) -> tuple[str, str]:
        if self.mode == "busy":
            raise Busy(2.5)
        if self.mode == "bad_sdp":
            raise ValueError("cannot parse SDP")
        if self.mode == "crash":
            raise RuntimeError("internal detail that must not leak: secret-sauce-42")
        self.started.append(session)
        return self.ANSWER, "answer"

    def active_count(self) -> int:
        return self.active

    async def shutdown(self) -> None:
        self.shut_down = True


OFFER_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n")


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    d = tmp_path / "web"
    d.mkdir()
    (d / "index.html").write_text("<!doctype html><title>t</title><script src=\"app.js\"></script>")
    (d / "app.js").write_text("console.log('page');\n")
    return d


@pytest.fixture
def make_settings(tmp_path: Path, web_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        overrides.setdefault("web_dir", web_dir)
        overrides.setdefault("public_url", "http://127.0.0.1:9")
        return Settings.from_env({}, **overrides)
    return make


class Harness:
    def __init__(self, client: TestClient, settings: Settings, clock: Clock, live: StubLive | None):
        self.client = client
        self.settings = settings
        self.clock = clock
        self.live = live

    @property
    def app(self):  # the aiohttp application
        return self.client.server.app

    @property
    def records(self):
        return self.app[RECORDS]

    async def new_app(self, name: str = "relying party") -> tuple[str, str]:
        return await create_api_app(self.records, name, self.clock())

    async def create_session(self, key: str, **options: Any) -> dict[str, Any]:
        r = await self.client.post("/v1/sessions", json=options, headers=auth(key))
        assert r.status == 201, await r.text()
        return await r.json()

    async def offer(self, session_id: str, token: str | None, body: Any = None, **kw: Any):
        if body is None:
            body = {"sdp": OFFER_SDP, "type": "offer", "consent": {"privacy": True, "min_age": True}}
        headers = auth(token) if token else {}
        return await self.client.post(f"/v1/sessions/{session_id}/offer", json=body, headers=headers, **kw)


def auth(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@contextlib.asynccontextmanager
async def serve(settings: Settings, *, live: StubLive | None = None, clock: Clock | None = None,
                live_factory: Callable[[Any], Any] | None = None) -> AsyncIterator[Harness]:
    clock = clock or Clock()
    if live is None and live_factory is None:
        live = StubLive()
    app = create_app(settings, live=live, clock=clock, live_factory=live_factory)
    server = TestServer(app, host="127.0.0.1", port=0)
    client = TestClient(server)
    await client.start_server()
    try:
        yield Harness(client, settings, clock, live)
    finally:
        await client.close()
