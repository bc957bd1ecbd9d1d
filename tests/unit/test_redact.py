"""Desensitization: planted secrets and personal data never survive ``redact`` or the
logging filter, wherever they are put (nested dicts, lists, free strings, log records)."""

from __future__ import annotations

import base64
import json
import logging

import numpy as np
import pytest

from stream_ekyc.api.auth import new_api_key, new_client_token
from stream_ekyc.stores.redact import RedactingFilter, hash_ip, install_log_redaction, redact, scrub

API_KEY = new_api_key()
CLIENT_TOKEN = new_client_token()
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
NAME = "Marguerite Quellenberg"
FIRST, LAST = "Marguerite", "Quellenberg"
DOB = "1987-04-23"
ID_NUMBER = "110105198704231234"
SSN = "536-22-8899"
PASSPORT = "X12345678"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8:85a3::8a2e:370:7334"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
B64 = base64.b64encode(JPEG).decode()
EMAIL = "marguerite.q@example.org"

PLANTED = [API_KEY, CLIENT_TOKEN, JWT, NAME, FIRST, LAST, DOB, ID_NUMBER, SSN, PASSPORT, IPV4, IPV6,
           B64[:40], EMAIL]


def text_of(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def assert_clean(text: str) -> None:
    for value in PLANTED:
        assert value not in text, f"{value[:20]!r} survived in {text[:300]!r}"


def planted_document() -> dict:
    return {
        "name": NAME,
        "applicant": {"first_name": FIRST, "lastName": LAST, "date_of_birth": DOB,
                      "documents": [{"document_number": ID_NUMBER, "photo": JPEG},
                                    {"id_number": int(ID_NUMBER[:15]), "image": B64}]},
        "headers": {"Authorization": f"Bearer {API_KEY}", "X-Forwarded-For": f"{IPV4}, 10.0.0.1"},
        "client_token": CLIENT_TOKEN,
        "page_url": f"https://kyc.example/s/#sid=ses_abc&token={CLIENT_TOKEN}",
        "remote": IPV6,
        "embedding": np.linspace(0, 1, 128, dtype=np.float32),
        "features": [0.1] * 64,
        "note": f"applicant {SSN} passport {PASSPORT} from {IPV4} mail {EMAIL} jwt {JWT}",
        "id_photo": f"data:image/jpeg;base64,{B64}",
        "sdp": f"v=0\r\no=- 1 1 IN IP4 {IPV4}\r\na=ice-pwd:abcdef\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "list": [[{"dob": DOB}], f"token={CLIENT_TOKEN}", b"\x00\x01"],
    }


def test_planted_values_never_survive_redact():
    out = redact(planted_document())
    assert_clean(text_of(out))
    json.dumps(out)  # JSON-safe


def test_shapes_are_kept():
    out = redact({"challenge_steps": 8, "locale": "en", "consent": {"privacy": True, "min_age": True},
                  "verdict": "live", "confidence": 0.93, "reasons": ["too_dark"], "photo": JPEG,
                  "embedding": [0.5] * 128, "sdp": "v=0\r\nm=video 9\r\n"})
    assert out["challenge_steps"] == 8 and out["locale"] == "en" and out["confidence"] == 0.93
    assert out["consent"] == {"privacy": True, "min_age": True}
    assert out["reasons"] == ["too_dark"] and out["verdict"] == "live"
    assert out["photo"] == f"<bytes n={len(JPEG)}>"
    assert out["embedding"] == "<vector n=128>"
    assert out["sdp"].startswith("<sdp n=")


def test_base64_blob_reports_decoded_size():
    assert redact({"x": B64})["x"] == f"<bytes n={len(JPEG)}>"
    assert redact([f"data:image/png;base64,{B64}"])[0] == f"<bytes n={len(JPEG)}>"


def test_secrets_in_free_strings():
    s = scrub(f"auth Bearer {API_KEY}; then {CLIENT_TOKEN} and {JWT} api_key={API_KEY}")
    assert API_KEY not in s and CLIENT_TOKEN not in s and JWT not in s
    assert "<secret>" in s


def test_ip_addresses_are_hashed_consistently():
    a = redact({"ip": IPV4})["ip"]
    b = scrub(f"peer {IPV4} connected")
    assert a.startswith("ip:") and a in b and IPV4 not in b
    assert hash_ip("::1") == scrub("::1")
    # ordinary times and versions with colons are not addresses
    assert scrub("at 12:30:45") == "at 12:30:45"


def test_id_numbers_in_strings_and_ints():
    for v in (ID_NUMBER, SSN, "1234 5678 9012", "AB123456C", "0123456789"):
        assert v not in scrub(f"value {v} end"), v
    assert redact({"count": 12, "ref": 1234567890123}) == {"count": 12, "ref": "<id>"}
    assert redact({"content_length": 12582912, "bytes": 10485761}) == {"content_length": 12582912,
                                                                       "bytes": 10485761}


def test_ordinary_text_is_untouched():
    s = "session ses_abc moved to fitting after 1.25 s (frames 42)"
    assert scrub(s) == s


def test_log_filter_with_caplog(caplog):
    log = logging.getLogger("stream_ekyc.test_redact")
    flt = RedactingFilter()
    caplog.handler.addFilter(flt)
    try:
        with caplog.at_level(logging.DEBUG, logger="stream_ekyc.test_redact"):
            log.info("request %s", planted_document())
            log.info("name=%s dob=%s key %s", NAME, DOB, API_KEY)
            log.warning("applicant %(who)s from %(ip)s", {"who": {"full_name": NAME}, "ip": IPV4})
            log.info("extra fields", extra={"client_token": CLIENT_TOKEN, "payload": {"birth_date": DOB}})
            try:
                raise ValueError(f"bad id {ID_NUMBER} for {EMAIL} with {CLIENT_TOKEN}")
            except ValueError:
                log.exception("failed for %s", IPV4)
            log.debug("%d frames, %.2f s", 120, 3.5)
    finally:
        caplog.handler.removeFilter(flt)
    text = caplog.text
    assert_clean(text)
    for rec in caplog.records:
        assert_clean(str(vars(rec)))
    assert "120 frames, 3.50 s" in text
    assert "Traceback" in text  # the exception is still logged, scrubbed


def test_install_log_redaction_is_idempotent():
    logger = logging.getLogger("stream_ekyc.test_install")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        f1 = install_log_redaction(logger)
        f2 = install_log_redaction(logger)
        assert f1 is f2 and handler.filters.count(f1) == 1
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("key", ["password", "refresh_token", "x-api-key", "Cookie", "webhookSecret"])
def test_secret_keys(key):
    assert redact({key: "anything at all"})[key] == "<secret>"
