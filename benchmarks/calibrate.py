"""Fit the decision's logistic model and threshold on the *tuning* seeds only.

    python benchmarks/accuracy.py --set tune     # render + score the tuning set
    python benchmarks/calibrate.py               # writes stream_ekyc/liveness/calibration.json

The model is a plain L2-regularised logistic regression over the physical features named
in ``decision.TRANSFORMS`` (a few numbers with physical meaning, not a black box), trained
with every attack species weighted as much as all bona fide sessions together. The
threshold is the lowest one at which no attack species is accepted more often than
``--max-apcer`` on the tuning set (default 0.02, what is shipped: the targets are not met,
and the operating point errs towards rejecting genuine applicants rather than accepting
attacks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from stream_ekyc.liveness import decision as D  # noqa: E402
from stream_ekyc.liveness.scorer import Features  # noqa: E402

ATTACKS = ("print", "cutout", "replay", "injected_static", "injected_other", "late")


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0, iters: int = 200):
    """Newton's method (IRLS) for weighted logistic regression with an L2 penalty."""
    n, k = x.shape
    xa = np.column_stack([x, np.ones(n)])
    beta = np.zeros(k + 1)
    pen = np.full(k + 1, l2)
    pen[-1] = 0.0
    for _ in range(iters):
        z = np.clip(xa @ beta, -30, 30)
        p = 1 / (1 + np.exp(-z))
        g = xa.T @ (w * (p - y)) + pen * beta
        h = (xa * (w * p * (1 - p))[:, None]).T @ xa + np.diag(pen) + 1e-9 * np.eye(k + 1)
        step = np.linalg.solve(h, g)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1], float(beta[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scores", default=str(HERE / "data" / "tune_scores.jsonl"))
    ap.add_argument("--max-apcer", type=float, default=0.02)
    ap.add_argument("--l2", type=float, default=2.0)
    ap.add_argument("--exclude", default="", help="comma-separated feature names to leave out")
    ap.add_argument("--out", default=str(D.CALIBRATION_PATH),
                    help="where to write the calibration (default: the shipped one)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in Path(args.scores).read_text().splitlines()]
    names = [n for n in D.TRANSFORMS if n not in set(filter(None, args.exclude.split(",")))]

    # the model only sees sessions that pass the quality gates and the timing check
    base = D.Calibration(tuple(names), (0.0,) * len(names), (1.0,) * len(names), (0.0,) * len(names),
                         50.0, 0.5, {})
    usable, phis = [], []
    for r in rows:
        v = D.decide(Features(dict(r["features"]), dict(r["quality"])), cal=base)
        if v.verdict == "retry" or "late_response" in v.reasons:
            continue
        phi = D.transform(r["features"])
        if phi is None:
            continue
        usable.append(r)
        phis.append([phi[n] for n in names])
    x = np.array(phis)
    y = np.array([1.0 if r["species"] == "bona_fide" else 0.0 for r in usable])
    sp = np.array([r["species"] for r in usable])
    n_b = (sp == "bona_fide").sum()
    w = np.ones(len(usable))
    for a in ATTACKS:
        m = sp == a
        if m.any():
            w[m] = n_b / m.sum()
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    coef, bias = fit_logistic((x - mean) / scale, y, w, l2=args.l2)
    cal = D.Calibration(tuple(names), tuple(mean.round(6)), tuple(scale.round(6)), tuple(coef.round(6)),
                        round(bias, 6), 0.5, {})

    # threshold: the lowest at which every species' tuning APCER <= max_apcer
    scored = []
    for r in rows:
        v = D.decide(Features(dict(r["features"]), dict(r["quality"])), cal=D.Calibration(
            cal.names, cal.mean, cal.scale, cal.weights, cal.bias, 0.0, {}))
        gated = v.verdict == "retry" or (v.verdict == "spoof" and v.score == 0.0)
        weak = v.verdict != "live" and not gated
        scored.append((r["species"], -1.0 if gated or weak else v.score))
    bona = [p for spc, p in scored if spc == "bona_fide"]

    def operating_point(max_apcer: float) -> tuple[float, float]:
        """The lowest threshold at which no species' tuning APCER exceeds max_apcer, and
        the tuning BPCER there."""
        threshold = 0.995
        for th in np.linspace(0.05, 0.995, 190):
            if all(sum(p >= th for p in s) / len(s) <= max_apcer
                   for s in ([p for spc, p in scored if spc == a] for a in ATTACKS) if s):
                threshold = float(th)
                break
        return threshold, 1 - sum(p >= threshold for p in bona) / max(1, len(bona))

    threshold, bpcer = operating_point(args.max_apcer)
    curve = {f"{a:g}": round(operating_point(a)[1], 4) for a in (0.01, 0.02, 0.05)}

    # explanation thresholds: where 99 % of usable bona fide sessions lie
    bf = x[y == 1]
    col = {n: i for i, n in enumerate(names)}

    def pct(n, q):
        return float(np.percentile(bf[:, col[n]], q)) if n in col else None

    explain = {
        "min_fit": pct("fit", 1) or 0.5,
        "max_bg_ratio": pct("bg_ratio", 99) or 0.5,
        "min_mult_slope": pct("mult_slope", 1) or -0.5,
        "min_dome": float(np.percentile(bf[:, col["dome_u"]] + bf[:, col["dome_v"]], 1)) if "dome_u" in col else 0.05,
        "min_nose": pct("nose", 1) or 0.0,
    }
    if "neck_drop" in col:   # from the sessions where it was measured (not the stand-in value)
        measured = [r["features"].get("neck_drop") for r in usable if r["species"] == "bona_fide"]
        measured = [m for m in measured if m is not None and np.isfinite(m)]
        if measured:
            explain["max_neck_drop"] = float(np.percentile(measured, 99))
    specs = [n for n in names if n.startswith("spec_")]
    if specs:
        sm = {n: float(np.median(bf[:, col[n]])) for n in specs}
        d = np.sqrt(sum((bf[:, col[n]] - sm[n]) ** 2 for n in specs))
        explain["spec_mean"] = sm
        explain["max_spec_dist"] = float(np.percentile(d, 99))
    out = {"names": list(cal.names), "mean": list(cal.mean), "scale": list(cal.scale),
           "weights": list(cal.weights), "bias": cal.bias, "threshold": round(threshold, 4),
           "explain": explain,
           "fitted_on": {"scores": Path(args.scores).name, "sessions": len(rows), "usable": len(usable),
                         "tuning_bpcer_at_threshold": round(bpcer, 4), "max_apcer": args.max_apcer,
                         "l2": args.l2}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"threshold": threshold, "tuning_bpcer": bpcer, "tuning_bpcer_at_apcer": curve,
                      "weights": dict(zip(names, np.round(coef, 3).tolist())), "bias": round(bias, 3)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
