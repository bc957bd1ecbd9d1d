"""Typicality: how unlike the tuning set's live faces a session is on all its cues at once
(``decision.Typicality``), as the calibration fits it (``benchmarks/calibrate.py``) and as
the decision reads it back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_ekyc.liveness import decision as D
from stream_ekyc.liveness.decision import TYPICALITY, Calibration, Head, Typicality

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import calibrate  # noqa: E402

NAMES = ("bg_ratio", "gain_outer", "mult_slope")


def _bona_fide(n: int = 120, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.2], [0.0, 0.2, 0.5]])
    return rng.multivariate_normal([0.1, 0.8, -0.2], cov * 0.04, size=n)


def _typ(xb: np.ndarray) -> Typicality:
    mean, prec = calibrate.typicality_stats(xb)
    return Typicality(NAMES, tuple(mean), tuple(tuple(r) for r in prec))


def test_the_decision_measures_it_as_the_calibration_does() -> None:
    xb = _bona_fide()
    typ = _typ(xb)
    rows = np.vstack([xb[:5], [[0.9, 0.1, -1.0]]])
    fitted = calibrate.typicality(rows, *calibrate.typicality_stats(xb))
    read = [typ.of(dict(zip(NAMES, r))) for r in rows]
    assert np.allclose(fitted, read)
    # a session off the live faces' joint spread is less typical, even where each cue alone
    # is within two standard deviations: here the two correlated cues disagree
    sd = xb.std(axis=0)
    odd = {"bg_ratio": 0.1 + 1.8 * sd[0], "gain_outer": 0.8 - 1.8 * sd[1], "mult_slope": -0.2}
    assert typ.of(odd) > np.percentile(fitted[:5], 100) + 1.0
    assert typ.of(dict(zip(NAMES, xb.mean(axis=0)))) == pytest.approx(0.0, abs=1e-9)


def test_bona_fide_rows_are_measured_without_themselves() -> None:
    xb = _bona_fide(40)
    attacks = xb[:6] + 0.5
    x = np.vstack([xb, attacks])
    sp = np.array(["bona_fide"] * len(xb) + ["print"] * len(attacks))
    x_in, mean, prec = calibrate.with_typicality(x, sp)
    t = x_in[:, -1]
    for i in (0, 17):
        others = np.delete(xb, i, axis=0)
        assert t[i] == pytest.approx(calibrate.typicality(xb[i:i + 1], *calibrate.typicality_stats(others))[0])
    assert np.allclose(t[len(xb):], calibrate.typicality(attacks, *calibrate.typicality_stats(xb)))
    assert np.allclose(t[len(xb):], calibrate.typicality(attacks, mean, prec))


def _calibration(xb: np.ndarray) -> Calibration:
    # one head that only looks at typicality: the further from the live faces, the less live
    return Calibration(NAMES + (TYPICALITY,), (0.0, 0.0, 0.0, 1.0), (1.0, 1.0, 1.0, 1.0),
                       (Head("all", (0.0, 0.0, 0.0, -3.0), 3.0),), 0.5, {"max_typicality": 3.0}, _typ(xb))


def test_an_atypical_session_is_less_live_and_says_so(tmp_path: Path) -> None:
    xb = _bona_fide()
    cal = _calibration(xb)
    typical = dict(zip(NAMES, xb.mean(axis=0)))
    odd = {"bg_ratio": 0.9, "gain_outer": 0.1, "mult_slope": -1.0}
    assert cal.probability(typical) > 0.9 > 0.1 > cal.probability(odd)
    reasons = D.explain({"fit": 0.9}, {**odd, "gain_relief": 0.5, "gain_neck": 0.3}, cal)
    assert "unlike_live_faces" in reasons
    # the file round trip keeps it
    p = tmp_path / "calibration.json"
    t = cal.typicality
    p.write_text(json.dumps({"names": list(cal.names), "mean": list(cal.mean), "scale": list(cal.scale),
                             "heads": [{"against": h.against, "weights": list(h.weights), "bias": h.bias}
                                       for h in cal.heads], "threshold": 0.5, "explain": cal.explain,
                             "typicality": {"names": list(t.names), "mean": list(t.mean),
                                            "precision": [list(r) for r in t.precision]}}))
    back = Calibration.load(p)
    assert back.probability(odd) == pytest.approx(cal.probability(odd))
    # a calibration that takes typicality as an input must say how to measure it
    d = json.loads(p.read_text())
    del d["typicality"]
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="typicality"):
        Calibration.load(p)


def test_the_shipped_calibration_measures_typicality_over_its_cues_and_each_group() -> None:
    cal = D.calibration()
    cues = tuple(D.TRANSFORMS)
    assert cal.names == cues + (TYPICALITY,) + tuple(D.TYPICALITY_GROUPS)
    assert cal.typicality is not None and cal.typicality.names == cues
    assert {g.input: g.names for g in cal.groups} == D.TYPICALITY_GROUPS
    assert "max_typicality" in cal.explain
    phi = {n: 0.0 for n in cues}
    got = cal.inputs(phi)
    assert set(got) == set(cal.names)
    for g in cal.groups:
        assert got[g.input] == pytest.approx(g.of(phi)) and got[g.input] >= 0.0


def test_each_cue_group_is_measured_on_its_own_cues_as_the_decision_reads_it(tmp_path: Path) -> None:
    # three cues: two shape cues (one group) and one response cue (a group needs two cues)
    names = ["gain_outer", "gain_relief", "bg_ratio"]
    xb = _bona_fide(60)
    attacks = xb[:5] + np.array([0.0, 1.0, 0.0])     # relief 5 standard deviations off
    x = np.vstack([xb, attacks])
    sp = np.array(["bona_fide"] * len(xb) + ["cutout"] * len(attacks))
    cols, measures = calibrate.typicality_inputs(x, sp, names)
    assert [m[0] for m in measures] == [TYPICALITY, "typicality_shape"]
    assert np.allclose(cols[:, 0], calibrate.with_typicality(x, sp)[0][:, -1])
    assert np.allclose(cols[:, 1], calibrate.with_typicality(x[:, :2], sp)[0][:, -1])
    # the shape group sees the attacks' odd relief without the third cue diluting it
    assert cols[len(xb):, 1].min() > np.percentile(cols[:len(xb), 1], 95)
    assert np.allclose(calibrate.apply_typicality(attacks, measures), cols[len(xb):])
    inp, c, mean, prec = measures[1]
    group = Typicality(tuple(names[i] for i in c), tuple(mean), tuple(tuple(r) for r in prec), inp)
    cal = Calibration(tuple(names) + ("typicality_shape",), (0.0,) * 4, (1.0,) * 4,
                      (Head("all", (0.0, 0.0, 0.0, -2.0), 4.0),), 0.5, {}, None, (group,))
    row = dict(zip(names, attacks[0]))
    assert cal.inputs(row)["typicality_shape"] == pytest.approx(cols[len(xb), 1])
    # the file round trip keeps it; a group input with no measure is refused
    p = tmp_path / "calibration.json"
    d = {"names": list(cal.names), "mean": list(cal.mean), "scale": list(cal.scale),
         "heads": [{"against": "all", "weights": [0.0, 0.0, 0.0, -2.0], "bias": 4.0}], "threshold": 0.5,
         "typicality_groups": [{"input": inp, "names": list(group.names), "mean": list(group.mean),
                                "precision": [list(r) for r in group.precision]}]}
    p.write_text(json.dumps(d))
    assert Calibration.load(p).probability(row) == pytest.approx(cal.probability(row))
    del d["typicality_groups"]
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="typicality_shape"):
        Calibration.load(p)


def _loss(x: np.ndarray, y: np.ndarray, beta: np.ndarray, bias: float, l2: float) -> float:
    z = x @ beta + bias
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * beta @ beta)


def test_the_fit_holds_typicality_weights_at_or_below_zero() -> None:
    rng = np.random.default_rng(3)
    n = 400
    y = (rng.random(n) < 0.5).astype(float)
    cue = rng.normal(size=n) + 1.2 * y                  # a cue for live
    against = rng.normal(size=n) - 0.8 * y              # a distance that counts against live
    odd = rng.normal(size=n) + 0.9 * y                  # a distance that would count *for* live
    x = np.column_stack([cue, against, odd])
    w = np.ones(n)
    free, _ = calibrate.fit_logistic(x, y, w, l2=1.0)
    assert free[0] > 0 and free[1] < 0 and free[2] > 0
    nonpos = np.array([False, True, True])
    beta, bias = calibrate.fit_logistic(x, y, w, l2=1.0, nonpos=nonpos)
    assert beta[2] == 0.0 and beta[1] < 0 and beta[0] > 0
    # the constrained optimum: no feasible nudge lowers the loss
    base = _loss(x, y, beta, bias, 1.0)
    for j, d in [(0, 1e-3), (0, -1e-3), (1, 1e-3), (1, -1e-3), (2, -1e-3)]:
        b = beta.copy()
        b[j] += d
        assert _loss(x, y, b, bias, 1.0) >= base - 1e-9
    # with no constraint active, it is the free fit
    same, _ = calibrate.fit_logistic(x[:, :2], y, w, l2=1.0, nonpos=np.array([False, True]))
    assert np.allclose(same, calibrate.fit_logistic(x[:, :2], y, w, l2=1.0)[0], atol=1e-8)


def test_a_calibration_that_counts_a_distance_for_live_is_refused(tmp_path: Path) -> None:
    xb = _bona_fide()
    t = _typ(xb)
    d = {"names": list(NAMES) + [TYPICALITY], "mean": [0.0] * 4, "scale": [1.0] * 4,
         "heads": [{"against": "print", "weights": [0.0, 0.0, 0.0, -1.0], "bias": 1.0},
                   {"against": "cutout", "weights": [0.0, 0.0, 0.0, 0.25], "bias": 1.0}],
         "threshold": 0.5,
         "typicality": {"names": list(t.names), "mean": list(t.mean), "precision": [list(r) for r in t.precision]}}
    p = tmp_path / "calibration.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="cutout head weighs 'typicality'"):
        Calibration.load(p)
    d["heads"][1]["weights"][3] = 0.0
    p.write_text(json.dumps(d))
    assert Calibration.load(p).heads[1].weights[3] == 0.0


def test_no_shipped_head_counts_a_distance_from_live_faces_for_live() -> None:
    cal = D.calibration()
    for h in cal.heads:
        for name, w in zip(cal.names, h.weights):
            if name == TYPICALITY or name in D.TYPICALITY_GROUPS:
                assert w <= 0, (h.against, name, w)
