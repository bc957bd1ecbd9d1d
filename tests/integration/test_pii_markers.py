"""Planted PII never reaches the operation logs or a log line.

Markers made fresh for each run — a name, a date of birth, ID and passport numbers, an e-mail
address, a phone number, the API key, a wrong API key, the client token, a forged one, raw IP
addresses (the client's own, 127.0.0.77, and one in ``X-Forwarded-For``), an ICE password and
recognisable image bytes (a JPEG whose comment segment carries a marker, and a run of its
entropy-coded data) — are sent through the API wherever a caller can put them: the fields the
API accepts (the webhook URL's query, the ID photo as base64, data URL and multipart file),
fields it refuses (under their usual names, nested too), the query string, headers
(``Authorization``, ``X-Forwarded-For``, ``User-Agent``, ``Referer``) and the SDP offer.

The calls go to a real ``stream-ekyc serve`` process (log level DEBUG, log in a file) and to an
in-process instance of the service over the same stores (every logger at DEBUG, lines kept by
tests/pii_guard.py), once over SQLite with local media and once over PostgreSQL with media in
SeaweedFS. Then every row of the operation logs, the monitoring data, the session events and
the deletion log, every line of both logs, and every stored media object are searched for every
marker in raw, base64 (any alignment), hex and URL-encoded form. The PII guard searches all the
log lines of the run once more at the end of the session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import aiohttp
import pytest

from stream_ekyc.config import Settings
from tests import pii_guard
from tests.instances import Cluster, astronaut_jpeg
from tests.integration.conftest import StubLive, serve
from tests.postgres_db import fresh_database

CLIENT_IP = "127.0.0.77"          # the calls come from this loopback address
LOG_TABLES = ("op_logs", "monitoring", "session_events", "deletions", "usage")


def _letters(n: int) -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz") for _ in range(n))


class Markers:
    """Fresh values for one run, each registered with the PII guard."""

    def __init__(self) -> None:
        r = secrets.SystemRandom()
        self.given = f"Zel{_letters(4)}ira"
        self.family = f"Quonk{_letters(5)}"
        self.name = f"{self.given} {self.family}"
        self.dob = f"19{r.randrange(30, 60)}-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}"
        self.id_number = "".join(str(r.randrange(10)) for _ in range(17)) + "X"
        self.passport = "K" + "".join(str(r.randrange(10)) for _ in range(8))
        self.email = f"{self.given.lower()}.{self.family.lower()}@example.org"
        self.phone = f"+44 7700 9{r.randrange(10000, 99999)}"
        self.forwarded_ip = f"203.0.113.{r.randrange(2, 250)}"
        self.ice_pwd = secrets.token_hex(12)
        self.wrong_key = "sk_" + secrets.token_urlsafe(32)
        self.forged_token = "ct_" + secrets.token_urlsafe(32)
        self.image_tag = b"PIIMARK-IMAGE-" + secrets.token_hex(8).encode()
        self.photo = astronaut_jpeg(comment=self.image_tag)
        for label, value in [("given name", self.given), ("family name", self.family), ("name", self.name),
                             ("date of birth", self.dob), ("ID number", self.id_number),
                             ("passport number", self.passport), ("e-mail", self.email),
                             ("phone", self.phone), ("forwarded IP", self.forwarded_ip),
                             ("client IP", CLIENT_IP), ("ICE password", self.ice_pwd),
                             ("wrong API key", self.wrong_key), ("forged client token", self.forged_token),
                             ("image comment", self.image_tag),
                             ("image head", self.photo[:24]),
                             ("image data", self.photo[len(self.photo) // 2:len(self.photo) // 2 + 48])]:
            pii_guard.plant(label, value)

    def secret(self, label: str, value: str) -> str:
        """A credential issued during the run: the value and its body after the prefix."""
        pii_guard.plant(label, value)
        if "_" in value:
            pii_guard.plant(label + " (body)", value.split("_", 1)[1])
        return value

    @property
    def webhook_url(self) -> str:
        # a loopback receiver on a closed port: nothing is ever delivered off this machine
        return "https://127.0.0.1:9/hooks/ekyc?" + urlencode(
            {"full_name": self.name, "dob": self.dob, "email": self.email, "id_number": self.id_number})

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "X-Forwarded-For": self.forwarded_ip,
                "X-Real-IP": self.forwarded_ip,
                "User-Agent": f"rp-backend/2.1 (+mailto:{self.email}; case {self.id_number})",
                "Referer": "https://rp.example/apply?" + urlencode(
                    {"full_name": self.name, "date_of_birth": self.dob, "passport_number": self.passport})}

    def sdp(self) -> str:
        return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
                "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
                f"a=ice-ufrag:{self.ice_pwd[:8]}\r\na=ice-pwd:{self.ice_pwd}\r\n"
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
                "a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n")


async def plant_everywhere(base: str, m: Markers, api_key: str) -> int:
    """Every kind of call a relying party or a page can make, carrying the markers. Returns
    how many API calls were made."""
    b64 = base64.b64encode(m.photo).decode()
    calls = 0
    connector = aiohttp.TCPConnector(local_addr=(CLIENT_IP, 0))
    async with aiohttp.ClientSession(trust_env=False, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def call(method: str, path: str, expect: int, key: str = api_key, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            async with http.request(method, base + path, headers={**m.headers(key), **kw.pop("headers", {})},
                                    **kw) as r:
                body = await r.read()
                assert r.status == expect, (method, path, r.status, body[:300])
                if r.content_type != "application/json":
                    return body
                out = json.loads(body)
                if isinstance(out, dict) and "client_token" in out:
                    m.secret("client token", out["client_token"])
                return out

        # accepted: the photo as base64 and as a data URL, markers in the webhook URL's query
        s1 = await call("POST", "/v1/sessions", 201,
                        json={"id_photo": b64, "webhook_url": m.webhook_url, "locale": "en"})
        await call("POST", "/v1/sessions", 201, json={"id_photo": "data:image/jpeg;base64," + b64})
        # multipart, the photo as a file named after the applicant
        form = aiohttp.FormData()
        form.add_field("locale", "en")
        form.add_field("webhook_url", m.webhook_url)
        form.add_field("id_photo", m.photo, filename=f"{m.name} {m.passport}.jpg", content_type="image/jpeg")
        s3 = await call("POST", "/v1/sessions", 201, data=form)
        # refused: personal data under the names it usually has, nested too, and credentials in the body
        await call("POST", "/v1/sessions", 400, json={
            "full_name": m.name, "date_of_birth": m.dob, "id_number": m.id_number, "email": m.email,
            "phone": m.phone, "applicant": {"given_name": m.given, "family_name": m.family,
                                            "passport_number": m.passport, "birthdate": m.dob},
            "client_token": s1["client_token"], "api_key": api_key, "photo": b64})
        form = aiohttp.FormData()
        form.add_field("full_name", m.name)
        form.add_field("id_photo", m.photo, filename="id.jpg", content_type="image/jpeg")
        await call("POST", "/v1/sessions", 400, data=form)
        # a photo that is refused after decoding (no face): its bytes must not be logged either
        await call("POST", "/v1/sessions", 422, json={"id_photo": base64.b64encode(
            m.photo[:2] + b"\xff\xfe\x00\x20" + m.image_tag.ljust(30, b"-") + b"\x00" * 600).decode()})

        sid = s1["session_id"]
        token = s1["client_token"]
        # reading, with credentials and personal data in the query string
        await call("GET", f"/v1/sessions/{sid}?" + urlencode({"client_token": token, "email": m.email,
                                                              "token": token, "q": m.id_number}), 200)
        await call("GET", f"/v1/sessions/{sid}", 401, key=m.wrong_key)
        await call("GET", f"/v1/sessions/{sid}/best-frame", 404)
        # the page: a forged token, no consent, then the real offer with an ICE password in its SDP
        offer = {"sdp": m.sdp(), "type": "offer", "consent": {"privacy": True, "min_age": True}}
        await call("POST", f"/v1/sessions/{sid}/offer", 401, key=m.forged_token, json=offer)
        await call("POST", f"/v1/sessions/{sid}/offer", 400, key=token, json={**offer, "consent": {}})
        calls += 1
        async with http.post(f"{base}/v1/sessions/{sid}/offer", json=offer, headers=m.headers(token)) as r:
            await r.read()
            assert r.status in (200, 400, 503), r.status     # answered, refused SDP or no pipeline
        # deletion on request (written to the deletion log)
        await call("DELETE", f"/v1/sessions/{s3['session_id']}", 200)
    return calls


def _rows_text(rows: list[tuple[Any, ...]]) -> bytes:
    out = bytearray()
    for row in rows:
        for v in row:
            out += bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else str(v).encode("utf-8")
            out += b"\t"
        out += b"\n"
    return bytes(out)


async def log_tables(records_url: str) -> dict[str, bytes]:
    """Every row of the records store's log tables, as text (read behind the store's back)."""
    out: dict[str, bytes] = {}
    if records_url.startswith("sqlite:"):
        con = sqlite3.connect(records_url.removeprefix("sqlite:///"))
        try:
            for t in LOG_TABLES:
                out[t] = _rows_text(con.execute(f"SELECT * FROM {t}").fetchall())
        finally:
            con.close()
        return out
    import asyncpg

    conn = await asyncpg.connect(records_url)
    try:
        for t in LOG_TABLES:
            out[t] = _rows_text([tuple(r) for r in await conn.fetch(f"SELECT * FROM {t}")])
    finally:
        await conn.close()
    return out


@contextlib.contextmanager
def _debug_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.setLevel(saved)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/records.sqlite3", None
    else:
        with fresh_database() as url:
            yield url, request.getfixturevalue("seaweedfs")


def test_scanner_finds_every_form():
    """The search itself: a marker is found raw, inside base64 at any alignment, as hex and
    URL-encoded, and nothing is found where it is not."""
    tag = b"PIIMARK-" + secrets.token_hex(6).encode()
    markers = {"t": pii_guard.forms(tag), "n": pii_guard.forms("Zelqwira Quonkzz")}
    for pad in range(3):
        blob = base64.b64encode(b"x" * pad + b"\xff\xd8" + tag + b"tail bytes").decode()
        assert pii_guard.find(f"body={blob}", "b64", markers)
        assert pii_guard.find(base64.urlsafe_b64encode(b"?" * pad + tag + b"\xfb\xff").decode(), "url", markers)
    assert pii_guard.find(tag.hex(), "hex", markers) and pii_guard.find(tag.hex().upper(), "HEX", markers)
    assert [h.label for h in pii_guard.find("q=Zelqwira+Quonkzz&x=1", "url", markers)] == ["n"]
    assert [h.label for h in pii_guard.find("to Zelqwira%20Quonkzz", "url", markers)] == ["n"]
    assert pii_guard.find(b"\x00" + tag + b"\x00", "bytes", markers)
    assert not pii_guard.find("nothing here " + base64.b64encode(b"PIIMARK-").decode(), "none", markers)


def test_guard_keeps_every_line_as_the_service_would_log_it(tmp_path):
    """The guard's handler sees a line logged anywhere in this process, rendered through the
    service's redaction, and reads watched files; checked with a marker that is not planted
    (so the end-of-session scan leaves it alone)."""
    marker = f"Unplanted {_letters(8)}"
    key = "sk_" + secrets.token_urlsafe(32)
    logging.getLogger("tests.pii_guard_check").warning("applicant %s, key %s", marker, key)
    lines = [line for line in pii_guard.captured_lines() if "tests.pii_guard_check" in line]
    assert lines and marker in lines[-1] and key not in lines[-1] and "<secret>" in lines[-1]
    log = tmp_path / "server.log"
    log.write_text(f"line with {marker}\n")
    assert [h.label for h in pii_guard.find(log.read_bytes(), str(log), {"m": pii_guard.forms(marker)})] == ["m"]


async def test_no_planted_marker_in_operation_logs_or_log_lines(backend, tmp_path):
    records_url, seaweedfs = backend
    m = Markers()
    cluster = Cluster(tmp_path / "server", records_url, seaweedfs, n=1, log_level="DEBUG",
                      extra_env={"STREAM_EKYC_ICE_LOOPBACK_ONLY": "1"})
    await asyncio.to_thread(cluster.start)
    try:
        created = await asyncio.to_thread(cluster.apps_create, f"pii {m.family}")
        key = m.secret("API key", created["api_key"])
        for name, value in created.items():     # any other credential the command hands out
            if name != "api_key" and "secret" in name and isinstance(value, str):
                m.secret(name, value)
        # the service's own secrets: the master key, and the S3 credentials
        pii_guard.plant("master key", base64.b64encode(cluster.master_key).decode())
        pii_guard.plant("master key (bytes)", cluster.master_key)
        if seaweedfs is not None:
            pii_guard.plant("S3 access key id", seaweedfs.access_key)
            pii_guard.plant("S3 secret key", seaweedfs.secret_key)
        calls = await plant_everywhere(cluster.instances[0].base_url, m, key)

        # the same calls to the service in this process, every logger at DEBUG
        env = {k: v for k, v in cluster.env().items() if k.startswith("STREAM_EKYC_")}
        settings = Settings.from_env(env, data_dir=tmp_path / "inproc", port=0)
        with _debug_logging():
            async with serve(settings, live=StubLive()) as h:
                calls += await plant_everywhere(str(h.client.make_url("")).rstrip("/"), m, key)
    finally:
        codes = await asyncio.to_thread(cluster.stop)
    assert codes == {"A": 0}, cluster.logs()[-3000:]

    tables = await log_tables(records_url)
    # the calls were all recorded: one request row each (none lost), and the scan has material
    async with cluster.records() as records:
        requests = [r for r in await records.op_logs(limit=100_000) if r["step"] == "request"]
        assert len(requests) == calls
    for t in ("op_logs", "monitoring", "session_events", "deletions"):
        assert tables[t], f"no rows in {t}"
    extra = [(f"{records_url.split(':')[0]} table {t}", text) for t, text in tables.items()]
    extra += [(f"stored media object {k}", v) for k, v in (await asyncio.to_thread(cluster.bucket_objects)).items()]
    hits = pii_guard.scan_now(extra)
    assert hits == [], "\n".join(map(str, hits))
    assert "Traceback" not in cluster.logs(), cluster.logs()[-3000:]
