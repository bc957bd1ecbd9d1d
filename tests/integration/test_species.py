"""Seeded simulated sessions of every species through the same path as ``stream-ekyc score``.

The seeds (700000–700002) are outside both the tuning and the report ranges of the
accuracy benchmark. What the engine guarantees today is asserted (the cut-out marker went
when these three seeds stopped passing; the genuine one when all three were accepted, once
the simulator framed its applicants as the page's fit guidance asks). A handful of seeds
guards against regressions; the rates are in benchmarks/results/accuracy.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stream_ekyc import challenge as C
from stream_ekyc.offline import score_video

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import simulate  # noqa: E402

SEEDS = (700000, 700001, 700002)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[tuple[str, int], dict]:
    out = tmp_path_factory.mktemp("species")
    res = {}
    for species in simulate.SPECIES:
        for seed in SEEDS:
            r = simulate.render_session(species, seed, out, size=(640, 480))
            res[(species, seed)] = score_video(r.video, C.load(str(r.challenge)))
    return res


@pytest.mark.parametrize("species", ["print", "replay", "injected_static", "injected_other", "late"])
def test_attacks_are_never_live(verdicts, species):
    for seed in SEEDS:
        v = verdicts[(species, seed)]
        assert v["verdict"] != "live", (species, seed, v["score"], v["features"])


def test_timing_and_response_gates_catch_what_they_should(verdicts):
    for seed in SEEDS:
        assert verdicts[("late", seed)]["verdict"] == "spoof"
        for species in ("injected_static", "injected_other"):
            assert verdicts[(species, seed)]["verdict"] != "live"
    # a live face never trips the timing or the no-response gates
    for seed in SEEDS:
        reasons = verdicts[("bona_fide", seed)]["reasons"]
        assert "late_response" not in reasons and "no_response_to_colours" not in reasons


def test_every_result_has_the_documented_shape(verdicts):
    for (species, seed), v in verdicts.items():
        assert v["verdict"] in ("live", "spoof", "retry")
        assert 0.0 <= v["score"] <= 1.0 and 0 <= v["confidence"] <= 100
        assert v["frames"] >= v["frames_with_face"] > 0


def test_genuine_sessions_are_live(verdicts):
    for seed in SEEDS:
        assert verdicts[("bona_fide", seed)]["verdict"] == "live"


def test_cutouts_are_never_live(verdicts):
    # These three are refused; across the report seeds about 2 % of cut-outs still pass
    # (benchmarks/results/accuracy.json), so this guards against regressions, not a rate.
    for seed in SEEDS:
        assert verdicts[("cutout", seed)]["verdict"] != "live"
