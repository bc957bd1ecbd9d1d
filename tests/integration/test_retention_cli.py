"""``stream-ekyc retention sweep`` and ``retention status``: JSON on stdout and exit 0; one line on
stderr and exit 2 for bad arguments or an unreachable store."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from stream_ekyc.cli import main
from stream_ekyc.config import Settings
from stream_ekyc.stores.media import media_from_url
from stream_ekyc.stores.records import records_from_url
from tests.s3_server import free_ports


@pytest.fixture
def env(tmp_path, monkeypatch):
    for var in ("STREAM_EKYC_RECORDS_URL", "STREAM_EKYC_MEDIA_URL", "STREAM_EKYC_MASTER_KEY",
                "STREAM_EKYC_S3_ENDPOINT", "STREAM_EKYC_S3_ACCESS_KEY_ID", "STREAM_EKYC_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STREAM_EKYC_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def _seed(due: int, live: int) -> None:
    """Objects written by 'the service': ``due`` of them already past their deadline."""
    async def go() -> None:
        settings = Settings.from_env()
        records = records_from_url(settings.records_url)
        await records.start()
        media = media_from_url(settings.media_url, records, settings=settings)
        await media.start()
        now = time.time()
        for i in range(due):
            await media.put(f"ses_due{i}", "packet", "packet.json", b"{}", "application/json", now - 10)
        for i in range(live):
            await media.put(f"ses_live{i}", "packet", "packet.json", b"{}", "application/json", now + 7200)
        await media.close()
        await records.close()
    asyncio.run(go())


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_then_sweep_then_status(env, capsys):
    _seed(due=3, live=2)
    code, out, err = _run(capsys, "retention", "status")
    assert code == 0 and err == ""
    status = json.loads(out)
    assert status["objects_past_deadline"] == 3 and status["live_objects"] == 5
    assert status["oldest_media_age_s"] >= 0 and status["sweep_interval_s"] == 60.0 and "next_sweep_at" in status

    code, out, err = _run(capsys, "retention", "sweep", "--owner", "cron-1")
    assert code == 0 and err == "" and out.count("\n") == 1
    report = json.loads(out)
    assert report["owner"] == "cron-1"
    assert report["media"] == {"due": 3, "deleted": 3, "already_gone": 0, "postponed": 0, "backend": "ok"}
    assert report["keys_shredded"] == 3 and isinstance(report["records_purged"], dict)

    code, out, _ = _run(capsys, "retention", "status")
    assert code == 0 and json.loads(out)["objects_past_deadline"] == 0 and json.loads(out)["live_objects"] == 2


def test_sweep_over_s3(env, capsys, seaweedfs):
    env.setenv("STREAM_EKYC_MEDIA_URL", f"s3://{seaweedfs.bucket}/cli-test")
    env.setenv("STREAM_EKYC_S3_ENDPOINT", seaweedfs.endpoint)
    env.setenv("STREAM_EKYC_S3_ACCESS_KEY_ID", seaweedfs.access_key)
    env.setenv("STREAM_EKYC_S3_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    _seed(due=2, live=1)
    code, out, err = _run(capsys, "retention", "sweep")
    assert code == 0, err
    assert json.loads(out)["media"]["deleted"] == 2
    left = seaweedfs.boto3_client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix="cli-test/")
    assert [o["Key"] for o in left.get("Contents", [])] == ["cli-test/ses_live0/packet/packet.json"]


@pytest.mark.parametrize("argv", [("retention",), ("retention", "purge"), ("retention", "status", "--owner", "x"),
                                  ("retention", "sweep", "--owner", ""), ("retention", "sweep", "--owner", "a\tb")])
def test_bad_arguments(env, capsys, argv):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("stream-ekyc: error:")


def test_unreachable_media_store(env, capsys):
    env.setenv("STREAM_EKYC_MEDIA_URL", "s3://media/prefix")
    env.setenv("STREAM_EKYC_S3_ENDPOINT", f"http://127.0.0.1:{free_ports(1)[0]}")
    env.setenv("STREAM_EKYC_S3_ACCESS_KEY_ID", "k")
    env.setenv("STREAM_EKYC_S3_SECRET_ACCESS_KEY", "s3cr3t")
    code, out, err = _run(capsys, "retention", "sweep")
    assert code == 2 and out == "" and err.count("\n") == 1 and "S3" in err and "s3cr3t" not in err


def test_unusable_records_store_and_bad_settings(env, capsys, tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()                  # a directory where the database should be
    env.setenv("STREAM_EKYC_RECORDS_URL", f"sqlite:///{tmp_path / 'dir.sqlite3'}")
    code, out, err = _run(capsys, "retention", "status")
    assert code == 2 and out == "" and err.count("\n") == 1
    env.delenv("STREAM_EKYC_RECORDS_URL")
    env.setenv("STREAM_EKYC_MEDIA_URL", "s3://Bad_Bucket!")
    code, out, err = _run(capsys, "retention", "sweep")
    assert code == 2 and err.count("\n") == 1 and "bad bucket name" in err
