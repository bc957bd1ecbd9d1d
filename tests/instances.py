"""Real ``stream-ekyc serve`` processes over shared stores, for the multi-instance tests and the
two-instance benchmark.

``Cluster`` starts ``n`` service processes on 127.0.0.1 (free ports) that share one records
store (a PostgreSQL database, or a SQLite file for a single instance) and one media store (a
prefix of the SeaweedFS bucket, or a local directory), with one master key, configured only
through the ``STREAM_EKYC_*`` variables the settings read. Each process writes its log to a
file (``Instance.log_path``); the PII guard (tests/pii_guard.py) is told about every one.

``S3Recorder`` (``record_s3=True``) puts a small recording proxy between each instance and
SeaweedFS, one port per instance, so that the tests can count the S3 ``DELETE`` requests per
object key and per instance: an object deleted twice from the bucket shows up there even
though the records store marks it deleted only once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

# no proxy, whatever the environment says: test traffic stays on 127.0.0.1
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_answering(proc: subprocess.Popen, url: str, deadline: float, tail: Any) -> None:
    """Poll ``url`` until it answers 200; fail with ``tail()`` (the server's log) if the
    process exits first or ``deadline`` (time.monotonic) passes."""
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {tail()}")
        try:
            with _LOCAL.open(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not answer {url}: {tail()}")
        time.sleep(0.1)


@contextlib.asynccontextmanager
async def open_records(url: str) -> AsyncIterator[Any]:
    """A started records store on ``url``, closed on exit."""
    from stream_ekyc.stores.records import records_from_url

    store = records_from_url(url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def serve_command() -> list[str]:
    exe = Path(sys.executable).with_name("stream-ekyc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "stream_ekyc.cli"]


def astronaut_jpeg(comment: bytes = b"", quality: int = 90) -> bytes:
    """``skimage.data.astronaut()`` (public domain) as a JPEG, optionally with a COM segment
    carrying ``comment`` right after the SOI marker (recognisable bytes inside a valid photo)."""
    import cv2
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR),
                           [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    assert ok
    jpeg = buf.tobytes()
    if not comment:
        return jpeg
    assert len(comment) < 65000
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return jpeg[:2] + segment + jpeg[2:]


@dataclass
class Instance:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*serve_command(), "serve", "--host", HOST, "--port", str(self.port)],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     stdin=subprocess.DEVNULL)

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        wait_answering(self.proc, f"{self.base_url}/readyz", deadline,
                       lambda: f"instance {self.name}: {self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 3000) -> str:
        return self.log_text()[-n:]


class S3Recorder:
    """A recording reverse proxy in front of an S3 endpoint: one listening port per label,
    every request forwarded unchanged (the Host header included, so SigV4 signatures hold).
    ``deletes`` lists (label, object key) of every ``DELETE`` of an object that the upstream
    answered with a 2xx, in order."""

    HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                     "trailer", "transfer-encoding", "upgrade", "content-length"})

    def __init__(self, upstream: str, bucket: str, labels: Iterable[str]):
        self.upstream = upstream.rstrip("/")
        self.bucket = bucket
        self.ports = {label: free_port() for label in labels}
        self.deletes: list[tuple[str, str]] = []
        self.requests: dict[str, int] = {label: 0 for label in self.ports}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def endpoint(self, label: str) -> str:
        return f"http://{HOST}:{self.ports[label]}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="s3-recorder", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the S3 recorder did not start")
        if self._error is not None:
            raise RuntimeError(f"the S3 recorder did not start: {self._error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        import aiohttp
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = aiohttp.ClientSession(auto_decompress=False, trust_env=False,
                                       timeout=aiohttp.ClientTimeout(total=60))
        runners = []
        try:
            for label, port in self.ports.items():
                app = web.Application(client_max_size=64 << 20)
                app.router.add_route("*", "/{tail:.*}", self._handler(client, label))
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, HOST, port).start()
                runners.append(runner)
            self._ready.set()
            await self._stop.wait()
        finally:
            for r in runners:
                await r.cleanup()
            await client.close()

    def _handler(self, client: Any, label: str) -> Any:
        from aiohttp import web
        from yarl import URL

        prefix = f"/{self.bucket}/"

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP}
            url = URL(self.upstream + request.raw_path, encoded=True)
            async with client.request(request.method, url, headers=headers, data=body or None,
                                      skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                                      allow_redirects=False) as up:
                data = await up.read()
                out_headers = {k: v for k, v in up.headers.items() if k.lower() not in self.HOP}
                status = up.status
            with self._lock:
                self.requests[label] += 1
                path = URL(request.raw_path, encoded=True).path   # decoded
                if request.method == "DELETE" and 200 <= status < 300 and path.startswith(prefix) \
                        and not request.query:
                    self.deletes.append((label, path[len(prefix):]))
            if request.method == "HEAD":
                resp = web.Response(status=status, headers=out_headers)
                if "Content-Length" in up.headers:
                    resp.headers["Content-Length"] = up.headers["Content-Length"]
                return resp
            return web.Response(status=status, headers=out_headers, body=data)
        return handle


@dataclass
class Cluster:
    """``n`` ``serve`` processes over one records store and one media store."""

    work_dir: Path
    records_url: str
    seaweedfs: Any = None                 # tests.s3_server.SeaweedFS, or None for a local directory
    n: int = 2
    media_ttl_s: float | None = None
    retention_interval_s: float | None = None
    log_level: str = "INFO"
    record_s3: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    master_key: bytes = field(default_factory=lambda: os.urandom(32))
    prefix: str = field(default_factory=lambda: f"inst{secrets.token_hex(4)}")
    instances: list[Instance] = field(default_factory=list)
    recorder: S3Recorder | None = None

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        names = [chr(ord("A") + i) for i in range(self.n)]
        self.instances = [Instance(name, free_port(), self.work_dir / f"server-{name}.log") for name in names]

    # -- settings -------------------------------------------------------------------------------
    @property
    def media_url(self) -> str:
        if self.seaweedfs is None:
            return f"file://{self.work_dir / 'media'}"
        return f"s3://{self.seaweedfs.bucket}/{self.prefix}"

    def env(self, instance: Instance | None = None) -> dict[str, str]:
        """The environment of a service process or CLI command: nothing inherited from the
        caller's ``STREAM_EKYC_*`` or AWS settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_EKYC_", "AWS_"))}
        env.update({
            "STREAM_EKYC_RECORDS_URL": self.records_url,
            "STREAM_EKYC_MEDIA_URL": self.media_url,
            "STREAM_EKYC_MASTER_KEY": base64.b64encode(self.master_key).decode(),
            "STREAM_EKYC_LOG_LEVEL": self.log_level,
            "STREAM_EKYC_ANALYSIS_THREADS": "1",
            "STREAM_EKYC_DATA_DIR": str(self.work_dir / f"data-{instance.name if instance else 'cli'}"),
        })
        if self.seaweedfs is not None:
            endpoint = self.seaweedfs.endpoint
            if instance is not None and self.recorder is not None:
                endpoint = self.recorder.endpoint(instance.name)
            env.update({"STREAM_EKYC_S3_ENDPOINT": endpoint, "STREAM_EKYC_S3_REGION": "us-east-1",
                        "STREAM_EKYC_S3_ACCESS_KEY_ID": self.seaweedfs.access_key,
                        "STREAM_EKYC_S3_SECRET_ACCESS_KEY": self.seaweedfs.secret_key})
        if self.media_ttl_s is not None:
            env["STREAM_EKYC_MEDIA_TTL_S"] = repr(float(self.media_ttl_s))
        if self.retention_interval_s is not None:
            env["STREAM_EKYC_RETENTION_INTERVAL_S"] = repr(float(self.retention_interval_s))
        if instance is not None:
            env["STREAM_EKYC_PUBLIC_URL"] = instance.base_url
        env.update(self.extra_env)
        return env

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> "Cluster":
        from tests import pii_guard

        if self.record_s3 and self.seaweedfs is not None and self.recorder is None:
            self.recorder = S3Recorder(self.seaweedfs.endpoint, self.seaweedfs.bucket,
                                       [i.name for i in self.instances])
            self.recorder.start()
        for inst in self.instances:
            pii_guard.watch_file(inst.log_path)
            inst.start(self.env(inst))          # all at once: concurrent migrations are part of the test
        deadline = time.monotonic() + timeout_s
        try:
            for inst in self.instances:
                inst.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, int | None]:
        codes = {inst.name: inst.stop() for inst in self.instances}
        if self.recorder is not None:
            self.recorder.stop()
        return codes

    def logs(self) -> str:
        return "".join(f"--- {i.name} ---\n{i.log_text()}" for i in self.instances)

    # -- operator commands ---------------------------------------------------------------------
    def cli(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*serve_command(), *args], env=self.env(), cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)

    def apps_create(self, name: str = "relying party") -> dict[str, Any]:
        """What ``stream-ekyc apps create`` prints (the app id and its credentials)."""
        out = self.cli("apps", "create", name)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def create_app(self, name: str = "relying party") -> tuple[str, str]:
        body = self.apps_create(name)
        return body["app_id"], body["api_key"]

    def usage(self, app_id: str, month: str) -> dict[str, Any]:
        out = self.cli("usage", "--app", app_id, "--month", month)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    # -- the stores, from the outside ------------------------------------------------------------
    def records(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return open_records(self.records_url)

    @contextlib.asynccontextmanager
    async def media(self, records: Any) -> AsyncIterator[Any]:
        """A media store over the same backend, records and master key (a third instance)."""
        from stream_ekyc.config import Settings
        from stream_ekyc.stores.media import media_from_url

        env = {k: v for k, v in self.env().items() if k.startswith("STREAM_EKYC_")}
        settings = Settings.from_env(env)
        store = media_from_url(settings.media_url, records, settings=settings)
        await store.start()
        try:
            yield store
        finally:
            await store.close()

    def bucket_objects(self) -> dict[str, bytes]:
        """Every raw object under this cluster's prefix (S3) or directory (local), by media key."""
        if self.seaweedfs is None:
            root = self.work_dir / "media"
            return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                    if p.is_file() and not p.name.startswith(".")} if root.is_dir() else {}
        client = self.seaweedfs.boto3_client()
        out: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.seaweedfs.bucket,
                                                                      Prefix=self.prefix + "/"):
            for obj in page.get("Contents", []) or []:
                key = obj["Key"]
                out[key[len(self.prefix) + 1:]] = client.get_object(Bucket=self.seaweedfs.bucket,
                                                                     Key=key)["Body"].read()
        return out

    def bucket_keys(self) -> set[str]:
        if self.seaweedfs is None:
            return set(self.bucket_objects())
        client = self.seaweedfs.boto3_client()
        keys: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.seaweedfs.bucket,
                                                                      Prefix=self.prefix + "/"):
            keys.update(o["Key"][len(self.prefix) + 1:] for o in page.get("Contents", []) or [])
        return keys


def month_of(t: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(t))
