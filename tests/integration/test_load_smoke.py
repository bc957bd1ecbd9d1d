"""The load benchmark's harness end to end, tiny: the real server as its own process, one
bona fide applicant and one attack (late responder) as aiortc clients in a client process,
over WebRTC on 127.0.0.1; then one stream against the decode-only server. Checks outcomes
and that every figure is measured; never wall-clock times."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
load = pytest.importorskip("load")

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, pool, n: int, argv: list[str], *, decode_only_s: float | None = None) -> dict:
    args = load.parse_args(argv + ["--quiet"])
    server = load.Server(tmp_path, decode_only=decode_only_s is not None, max_sessions=8, threads=None)
    sampler = load.RssSampler(server)
    sampler.start()
    try:
        return load.run_level(server, sampler, n, args, pool, tmp_path, load.Progress(quiet=True),
                              decode_only_s=decode_only_s)
    finally:
        sampler.stop()
        server.stop()


def test_a_bona_fide_applicant_passes_and_a_late_responder_does_not(tmp_path):
    pool = load.prepare_pool(1, (640, 480), 30.0, log=lambda *_: None, asset_dir=tmp_path / "assets")
    row = _run(tmp_path, pool, 2, ["--rounds", "1", "--attack-share", "0.5", "--attack-kinds", "late"])
    assert row["sessions"] == 2 and row["attacks"] == 1
    assert row["outcomes"]["bona_fide"] == {"passed": 1}
    late = row["outcomes"]["late"]
    assert sum(late.values()) == 1 and set(late) <= {"failed", "retry"}
    assert row["bona_fide_passed"] == [1, 1] and row["attacks_rejected"] == [1, 1]
    assert row["wrong_verdicts"] == []
    # every figure was measured
    assert row["frames_received"] >= row["frames_analysed"] > 20
    assert row["server_cpu_s"] > 0 and row["cpu_s_per_stream_s"] > 0
    assert row["rss_peak_mb"] > 0 and row["verdict_latency_p95_ms"] is not None
    assert row["analysis_latency_p95_ms"] is not None and row["loop_lag_p95_ms"] is not None
    assert "held" in row

    base = _run(tmp_path, pool, 1, ["--rounds", "1", "--attack-share", "0"], decode_only_s=3.0)
    assert base["outcomes"] == {"bona_fide": {"streamed": 1}}
    assert base["frames_received"] > 20 and base["frames_analysed"] == 0
    assert base["server_cpu_s"] > 0 and base["missed"] == []
