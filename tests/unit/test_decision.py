"""Retry conditions and fail-closed behaviour of the scorer + decision (pure logic)."""

import pytest

from stream_ekyc.liveness.decision import Calibration, DecisionConfig, Head, decide
from stream_ekyc.liveness.scorer import Features, StreamingScorer

from .synthetic_records import make_records, score


def test_a_clean_responsive_face_is_judged_on_its_evidence():
    ch, recs = make_records()
    v = score(ch, recs)
    assert v.verdict != "retry", v.reasons
    assert 60 <= v.lag_ms <= 180
    assert v.features["fit"] > 0.9


@pytest.mark.parametrize("kwargs, reason", [
    (dict(face=False), "no_face"),
    (dict(n_faces=2), "multiple_faces"),
    (dict(drop_after=2.0), "face_lost"),
    (dict(motion=0.8), "moving_too_much"),
    (dict(luma=20.0, crushed=0.5), "too_dark"),
    (dict(clipped=0.6), "too_bright"),
    (dict(fps=3.0), "too_few_frames"),
    (dict(response=0.035, bg_response=0.0003), "weak_response"),
])
def test_each_retry_condition(kwargs, reason):
    ch, recs = make_records(**kwargs)
    v = score(ch, recs)
    assert v.verdict == "retry"
    assert reason in v.reasons
    assert v.confidence == 0


def test_a_response_below_the_capture_artefact_level_is_no_response():
    # a still video through a browser correlates with the colours at about ±2 %: no evidence
    ch, recs = make_records(response=0.02, bg_response=0.0003)
    v = score(ch, recs)
    assert v.verdict == "spoof" and v.reasons == ["no_response_to_colours"]


def test_face_out_of_frame_is_retry():
    ch, recs = make_records()
    for r in recs[len(recs) // 3:]:
        x, y, w, h = r.face.box
        r.face.box = (r.width - w * 0.4, y, w, h)
    v = score(ch, recs)
    assert v.verdict == "retry" and "face_out_of_frame" in v.reasons


def test_late_response_is_spoof():
    ch, recs = make_records(lag=0.7)
    v = score(ch, recs)
    assert v.verdict == "spoof" and "late_response" in v.reasons


def test_no_frames_at_all_never_live():
    ch, _ = make_records()
    v = decide(StreamingScorer(ch).features())
    assert v.verdict == "retry"


def test_a_permissive_model_cannot_turn_missing_evidence_into_live():
    # even a calibration that says "live" for everything cannot pass a weak response
    always = Calibration(("fit",), (0.0,), (1.0,), (Head("all", (0.0,), 50.0),), 0.5, {})
    ch, recs = make_records(response=0.005)
    sc = StreamingScorer(ch)
    for r in recs:
        sc.add(r)
    assert decide(sc.features(), cal=always).verdict != "live"
    f = Features(values={}, quality={"frames_in_challenge": 80, "challenge_s": 2.0, "face_share": 1.0})
    assert decide(f, cal=always).verdict == "retry"


def test_scorer_memory_is_bounded():
    ch, recs = make_records(duration=5.0)
    sc = StreamingScorer(ch)
    for _ in range(40):
        for r in recs:
            sc.add(r)
    assert len(sc.records) <= sc.config.max_records


def test_retry_thresholds_are_configurable():
    ch, recs = make_records(luma=50.0)
    sc = StreamingScorer(ch)
    for r in recs:
        sc.add(r)
    assert "too_dark" not in decide(sc.features()).reasons
    assert "too_dark" in decide(sc.features(), cfg=DecisionConfig(min_luma=60.0)).reasons


def test_a_well_exposed_face_that_ignores_the_screen_is_spoof():
    ch, recs = make_records(response=0.0, bg_response=0.0)
    v = score(ch, recs)
    assert v.verdict == "spoof" and v.reasons == ["no_response_to_colours"]


def _heads_calibration(threshold: float = 0.5) -> Calibration:
    # two features; the "print" head wants a quiet background, the "cutout" head relief
    return Calibration(("bg_ratio", "gain_outer"), (0.0, 0.0), (1.0, 1.0),
                       (Head("print", (-4.0, 0.0), 1.0), Head("cutout", (0.0, 4.0), -1.0)), threshold, {})


def test_heads_a_face_is_only_as_live_as_its_least_live_looking_head():
    cal = _heads_calibration()
    live_like = cal.probability({"bg_ratio": 0.0, "gain_outer": 1.0})
    print_like = cal.probability({"bg_ratio": 1.0, "gain_outer": 1.0})     # passes the cut-out head
    cutout_like = cal.probability({"bg_ratio": 0.0, "gain_outer": 0.0})    # passes the print head
    assert live_like > 0.7
    assert print_like < 0.1 and cutout_like < 0.3
    z = cal.logits({"bg_ratio": 1.0, "gain_outer": 1.0})
    assert set(z) == {"print", "cutout"} and z["print"] < 0 < z["cutout"]


def test_heads_round_trip_through_the_calibration_file(tmp_path):
    import json
    cal = _heads_calibration(0.7)
    p = tmp_path / "calibration.json"
    p.write_text(json.dumps({"names": list(cal.names), "mean": list(cal.mean), "scale": list(cal.scale),
                             "heads": [{"against": h.against, "weights": list(h.weights), "bias": h.bias}
                                       for h in cal.heads],
                             "threshold": cal.threshold}))
    back = Calibration.load(p)
    assert back.heads == cal.heads and back.threshold == 0.7
    phi = {"bg_ratio": 0.3, "gain_outer": 0.4}
    assert back.probability(phi) == cal.probability(phi)


def test_a_spoof_names_the_attack_it_resembles():
    from stream_ekyc.liveness.decision import explain
    cal = _heads_calibration()
    phi = {"bg_ratio": 1.0, "gain_outer": 1.0}
    reasons = explain({"fit": 0.9}, {**phi, "mult_slope": 0.0, "gain_relief": 0.5}, cal)
    assert "resembles_print" in reasons and "resembles_cutout" not in reasons


def test_the_shipped_model_has_a_head_per_attack_species_that_reaches_it():
    from stream_ekyc.liveness.decision import calibration
    assert {h.against for h in calibration().heads} >= {"print", "cutout", "replay", "injected_other"}
