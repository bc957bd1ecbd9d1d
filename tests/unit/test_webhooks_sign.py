"""Webhook signatures, secrets, event bodies and the retry schedule (pure logic)."""

from __future__ import annotations

import pytest

from stream_ekyc import webhooks as W

SECRET = bytes(range(32))
BODY = b'{"event":"session.completed","session_id":"ses_1"}'


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    header = W.sign(SECRET, BODY, 1_800_000_000)
    assert header.startswith("t=1800000000,v1=") and len(header.split("v1=")[1]) == 64
    assert W.verify(SECRET, header, BODY, now=1_800_000_000 + 299)
    assert not W.verify(SECRET, header, BODY, now=1_800_000_000 + 301)        # too old: a replay
    assert not W.verify(SECRET, header, BODY, now=1_800_000_000 - 301)
    assert not W.verify(SECRET, header, BODY + b" ", now=1_800_000_000)
    assert not W.verify(bytes(32), header, BODY, now=1_800_000_000)
    forged_time = header.replace("t=1800000000", "t=1800000100")
    assert not W.verify(SECRET, forged_time, BODY, now=1_800_000_100)


@pytest.mark.parametrize("header", ["", "t=1", "v1=ab", "t=x,v1=ab", "garbage", "t=1,v1"])
def test_malformed_signature_headers_are_rejected(header: str) -> None:
    assert not W.verify(SECRET, header, BODY, now=1.0)


def test_secrets_round_trip_and_bad_ones_are_refused() -> None:
    s = W.new_secret()
    assert len(s) == 32 and W.new_secret() != s
    assert W.parse_secret(W.secret_text(s)) == s
    for bad in ("", "whsec_", "whsec_zz", "whsec_" + "00" * 31, "sk_" + "00" * 32, None):
        with pytest.raises(ValueError):
            W.parse_secret(bad)   # type: ignore[arg-type]


def test_the_event_carries_decisions_and_never_scores_features_or_media() -> None:
    session = {"session_id": "ses_1", "app_id": "app_1", "state": "done", "created_at": 1.0, "updated_at": 9.0,
               "options": {"webhook_url": "https://rp.example/h"},
               "result": {"verdict": "live", "confidence": 91, "score": 0.91, "reasons": [], "outcome": "passed",
                          "features": {"fit": 0.99}, "quality": {}, "best_frame_quality": {"t": 1},
                          "media": {"best_frame": True},
                          "match": {"similarity": 83.2, "is_match": True, "threshold": 70.0}}}
    body = W.payload_for(session)
    assert body == {"event": "session.completed", "session_id": "ses_1", "app_id": "app_1", "state": "done",
                    "verdict": "live", "confidence": 91, "reasons": [], "outcome": "passed",
                    "match": {"similarity": 83.2, "is_match": True, "threshold": 70.0},
                    "created_at": 1.0, "finished_at": 9.0}
    expired = W.payload_for({**session, "state": "expired", "result": None})
    assert expired["verdict"] is None and expired["match"] is None


def test_retries_back_off_then_stop() -> None:
    times = [W.retry_at(n, 0.0) for n in range(1, W.MAX_ATTEMPTS + 1)]
    assert times[:-1] == list(W.BACKOFF_S) and times[-1] is None
    assert all(a < b for a, b in zip(times[:-2], times[1:-1]))


def test_delivery_state_shown_by_the_api_hides_url_and_payload() -> None:
    row = {"session_id": "s", "url": "https://rp.example/h?token=abc", "payload": {"x": 1}, "status": "pending",
           "attempts": 2, "http_status": 500, "last_error": "http_500", "finished_at": None}
    assert W.describe(row) == {"status": "pending", "attempts": 2, "http_status": 500, "last_error": "http_500",
                               "finished_at": None}
    assert W.describe(None) is None
