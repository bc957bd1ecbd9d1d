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


def test_the_shipped_calibration_measures_typicality_over_its_cues() -> None:
    cal = D.calibration()
    assert cal.names[-1] == TYPICALITY and cal.typicality is not None
    assert cal.typicality.names == cal.names[:-1]
    assert "max_typicality" in cal.explain
