"""End-to-end fixtures: the real server (``stream-ekyc serve --demo``) as a subprocess on
127.0.0.1 with loopback-only ICE, and Debian's Chromium driven by Playwright (never a
downloaded browser). Results the server stored are read from its SQLite file and, through the
media store (which decrypts), its media directory (the demo app's API key is never shown, by
design).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.instances import free_port, serve_command, wait_answering

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results" / "e2e"

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]


@dataclass
class Server:
    base_url: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen

    @property
    def page_url(self) -> str:
        return f"{self.base_url}/s/?testhook=1"

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data_dir / 'records.sqlite3'}?mode=ro", uri=True, timeout=5)

    def session(self, sid: str, final_within_s: float = 15.0) -> dict[str, Any]:
        """The session's record once it has reached a final state (its outcome message goes
        out just before the record is written)."""
        deadline = time.monotonic() + final_within_s
        while True:
            with self._db() as db:
                row = db.execute("SELECT state, result FROM sessions WHERE session_id = ?", (sid,)).fetchone()
                events = [r[0] for r in db.execute(
                    "SELECT state FROM session_events WHERE session_id = ? ORDER BY id", (sid,))]
            if row and row[0] in ("done", "failed", "expired"):
                return {"state": row[0], "result": json.loads(row[1]) if row[1] else None, "events": events}
            if time.monotonic() > deadline:
                raise AssertionError(f"session {sid} did not reach a final state: {row and row[0]}")
            time.sleep(0.1)

    def packet(self, sid: str) -> dict[str, Any] | None:
        """The algorithm packet (challenge, records, features, verdict), read and decrypted
        through the media store the server wrote it with."""
        from stream_ekyc.stores import media_from_url, records_from_url
        from stream_ekyc.stores.media import media_key

        async def read() -> bytes | None:
            records = records_from_url(f"sqlite:///{self.data_dir / 'records.sqlite3'}")
            await records.start()
            media = media_from_url(f"file://{self.data_dir / 'media'}", records)
            try:
                await media.start()
                return await media.get(media_key(sid, "packet", "packet.json"))
            finally:
                await media.close()
                await records.close()

        # a thread of its own: Playwright's sync API keeps an event loop running in this one
        with ThreadPoolExecutor(1) as pool:
            raw = pool.submit(asyncio.run, read()).result()
        return json.loads(raw) if raw is not None else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("server-data")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_EKYC_")}
    env.update({"STREAM_EKYC_ICE_LOOPBACK_ONLY": "1", "STREAM_EKYC_DATA_DIR": str(data_dir),
                "STREAM_EKYC_LOG_LEVEL": "INFO"})
    log = open(log_path, "wb")
    proc = subprocess.Popen([*serve_command(), "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    srv = Server(base, data_dir, log_path, proc)
    try:
        wait_answering(proc, f"{base}/healthz", time.monotonic() + 30, lambda: log_path.read_text()[-2000:])
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                log.close()
                raise AssertionError("the server did not stop within 20 s of SIGTERM")
        log.close()
    text = log_path.read_text(errors="replace")
    assert proc.returncode == 0, f"the server exited with {proc.returncode} on SIGTERM: {text[-2000:]}"
    assert "Traceback" not in text, f"the server logged an exception: {text[-4000:]}"


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright   # the 'test' extra

    with sync_playwright() as p:
        yield p


def launch_chromium(driver: Any, *extra_args: str) -> Any:
    """A fresh headless Debian Chromium (Playwright gives it its own temporary profile)."""
    return driver.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])


@pytest.fixture
def launch(playwright_driver: Any) -> Iterator[Any]:
    """``launch(*extra_args)`` → a fresh headless Chromium, closed after the test."""
    browsers: list[Any] = []

    def _launch(*extra: str) -> Any:
        b = launch_chromium(playwright_driver, *extra)
        browsers.append(b)
        return b

    yield _launch
    for b in browsers:
        b.close()
