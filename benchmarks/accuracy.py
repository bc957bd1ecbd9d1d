"""Accuracy benchmark (ISO/IEC 30107-3 style): APCER per attack species, BPCER, retry share,
DET curve — on simulated sessions whose seeds are disjoint from the tuning seeds.

    python benchmarks/accuracy.py                 # report set: 200 bona fide + 100 per species
    python benchmarks/accuracy.py --set tune      # the tuning set (used by calibrate.py): 200 bona
                                                  # fide, 110 per physical attack, 40 per other

Sessions are rendered by ``simulate.py`` (cached under benchmarks/data/) and scored with
``stream_ekyc.offline.score_video`` — the function behind ``stream-ekyc score``.
Writes benchmarks/results/accuracy.json and accuracy_det.png (report set), or
benchmarks/data/tune_scores.jsonl (tuning set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

ATTACKS = ("print", "cutout", "replay", "injected_static", "injected_other", "late")
# the physical attacks (prints, cut-outs, replays) are told apart from a live face by the
# shape, background and glare cues the calibration weighs, and the threshold sits in the tail
# of their scores: more tuning sessions each (110) than the others (40), so that a few
# attacks do not decide it alone; the injected and late attacks stop at the response and
# timing gates. (Until the gain-map features the tuning set held 200 and 80: the set was cut
# so that a re-calibration and a fresh report fit one working stop on this machine.)
PHYSICAL = ("print", "cutout", "replay")
SEEDS = {
    # tuning and report seeds never overlap
    "tune": {"bona_fide": range(0, 200),
             "attack": {sp: range(0, 110) if sp in PHYSICAL else range(0, 40) for sp in ATTACKS}},
    "report": {"bona_fide": range(100_000, 100_200), "attack": {sp: range(100_000, 100_100) for sp in ATTACKS}},
}
DATA = HERE / "data"
RESULTS = HERE / "results"


def _job(args: tuple[str, int, str]) -> dict:
    species, seed, set_name = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import simulate  # noqa: E402  (benchmarks/simulate.py)

    from stream_ekyc import challenge as C
    from stream_ekyc.offline import score_video

    out_dir = DATA / "sessions"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{species}-{seed}"
    video = next((p for p in (out_dir / f"{stem}.webm", out_dir / f"{stem}.mp4") if p.exists()), None)
    meta_path = out_dir / f"{stem}.meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if video is not None and meta.get("sim_version") != simulate.SIM_VERSION:
        video.unlink()      # rendered by another version of the simulator
        video = None
    t0 = time.perf_counter()
    if video is None:
        r = simulate.render_session(species, seed, out_dir)
        video, chal = Path(r.video), Path(r.challenge)
        meta = json.loads(meta_path.read_text())
    else:
        chal = out_dir / f"{stem}.challenge.json"
    render_s = time.perf_counter() - t0
    res = score_video(video, C.load(str(chal)))
    return {"species": species, "seed": seed, "set": set_name, "verdict": res["verdict"],
            "score": res["score"], "reasons": res["reasons"], "lag_ms": res["lag_ms"],
            "features": res["features"], "quality": res["quality"], "render_s": round(render_s, 2),
            "elapsed_ms": res["elapsed_ms"], "frames": res["frames"],
            "meta": {k: meta[k] for k in ("lag_s", "ambient_ratio", "fps", "codec", "resolution", "photo",
                                           "ae_mode", "exposure_control", "exposure_steps")
                     if k in meta}}


def run_set(set_name: str, jobs: int, n_bona: int | None, n_attack: int | None) -> list[dict]:
    seeds = SEEDS[set_name]
    bona = list(seeds["bona_fide"])[:n_bona] if n_bona else list(seeds["bona_fide"])
    att = {sp: list(r)[:n_attack] if n_attack else list(r) for sp, r in seeds["attack"].items()}
    work = [("bona_fide", s, set_name) for s in bona] + [(sp, s, set_name) for sp in ATTACKS for s in att[sp]]
    rows: list[dict] = []
    start = time.time()
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        for i, row in enumerate(ex.map(_job, work, chunksize=2), 1):
            rows.append(row)
            if i % 20 == 0 or i == len(work):
                done = int(30 * i / len(work))
                print(f"\r[{'#' * done}{'.' * (30 - done)}] {i}/{len(work)} {time.time() - start:.0f}s",
                      end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def rescore(rows: list[dict]) -> list[dict]:
    """Re-run the decision on stored features (for calibration work only; the report
    numbers always come from a fresh ``score_video`` run)."""
    from stream_ekyc.liveness.decision import decide
    from stream_ekyc.liveness.scorer import Features

    out = []
    for r in rows:
        v = decide(Features(values=dict(r["features"]), quality=dict(r["quality"])))
        out.append({**r, "verdict": v.verdict, "score": v.score, "reasons": v.reasons})
    return out


def summarise(rows: list[dict], threshold: float) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        c = counts.setdefault(r["species"], {"n": 0, "live": 0, "spoof": 0, "retry": 0})
        c["n"] += 1
        c[r["verdict"]] += 1
    bona = counts.get("bona_fide", {"n": 0, "live": 0, "retry": 0})
    apcer = {sp: counts[sp]["live"] / counts[sp]["n"] for sp in ATTACKS if sp in counts}
    reasons: dict[str, dict[str, int]] = {}
    for r in rows:
        for code in r["reasons"]:
            d = reasons.setdefault(r["species"], {})
            d[code] = d.get(code, 0) + 1
    # by whether the page could set the camera's exposure (simulate.py: exposure_control)
    by_control: dict[str, dict] = {}
    for control in (True, False):
        sub = [r for r in rows if r.get("meta", {}).get("exposure_control") is control]
        b = [r for r in sub if r["species"] == "bona_fide"]
        if not sub:
            continue
        by_control[str(control).lower()] = {
            "bona_fide": len(b),
            "bpcer": sum(r["verdict"] != "live" for r in b) / max(1, len(b)),
            "retry_share": sum(r["verdict"] == "retry" for r in b) / max(1, len(b)),
            "apcer": {sp: sum(r["verdict"] == "live" for r in sub if r["species"] == sp)
                      / max(1, sum(r["species"] == sp for r in sub)) for sp in ATTACKS},
            "attacks": {sp: sum(r["species"] == sp for r in sub) for sp in ATTACKS},
        }
    return {
        "apcer": apcer,
        "apcer_worst": max(apcer.values()) if apcer else None,
        "bpcer": (bona["n"] - bona["live"]) / max(1, bona["n"]),
        "retry_share": bona["retry"] / max(1, bona["n"]),
        "counts": counts,
        "threshold": threshold,
        "reasons": reasons,
        "by_exposure_control": by_control,
    }


def det_curve(rows: list[dict]) -> dict:
    """APCER per species and BPCER as the threshold on the calibrated score sweeps 0..1
    (gated sessions — retry or hard spoof — are never accepted at any threshold)."""
    ths = np.linspace(0, 1, 201)

    def accepted(r, th):
        gated = r["verdict"] == "retry" or (r["verdict"] == "spoof" and r["score"] == 0.0)
        return (not gated) and r["score"] >= th

    out = {"thresholds": ths.tolist(), "bpcer": [], "apcer": {sp: [] for sp in ATTACKS}}
    bona = [r for r in rows if r["species"] == "bona_fide"]
    for th in ths:
        out["bpcer"].append(1 - sum(accepted(r, th) for r in bona) / max(1, len(bona)))
        for sp in ATTACKS:
            rs = [r for r in rows if r["species"] == sp]
            out["apcer"][sp].append(sum(accepted(r, th) for r in rs) / max(1, len(rs)))
    return out


def plot_det(det: dict, summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    def probit(x):
        return norm.ppf(np.clip(np.asarray(x, dtype=float), 1e-3, 1 - 1e-3))

    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for sp, ap in det["apcer"].items():
        ax.plot(probit(ap), probit(det["bpcer"]), label=sp)
    worst = np.max(np.array(list(det["apcer"].values())), axis=0)
    ax.plot(probit(worst), probit(det["bpcer"]), "k--", lw=2, label="worst species")
    ax.plot(probit(summary["apcer_worst"]), probit(summary["bpcer"]), "ro", label="shipped threshold")
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
    ax.set_xticks(probit(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(probit(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlabel("APCER")
    ax.set_ylabel("BPCER (retry counted)")
    ax.set_title("DET, report seeds (simulated sessions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("report", "tune"), default="report")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--bona-fide", type=int, default=None, help="limit bona fide sessions (smoke runs)")
    ap.add_argument("--attacks", type=int, default=None, help="limit sessions per attack species")
    ap.add_argument("--rescore", action="store_true", help="reuse stored features, re-run the decision")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    DATA.mkdir(parents=True, exist_ok=True)
    store = DATA / f"{args.set}_scores.jsonl"
    if args.rescore:
        rows = rescore([json.loads(line) for line in store.read_text().splitlines()])
    else:
        rows = run_set(args.set, args.jobs, args.bona_fide, args.attacks)
        store.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from stream_ekyc.liveness.decision import calibration

    summary = summarise(rows, calibration().threshold)
    summary["seeds"] = {"bona_fide": [min(r["seed"] for r in rows if r["species"] == "bona_fide"),
                                      max(r["seed"] for r in rows if r["species"] == "bona_fide")],
                        "attacks": [min(r["seed"] for r in rows if r["species"] != "bona_fide"),
                                    max(r["seed"] for r in rows if r["species"] != "bona_fide")],
                        "tuning": {"bona_fide": [SEEDS["tune"]["bona_fide"].start, SEEDS["tune"]["bona_fide"].stop - 1],
                                   "attacks": {sp: [r.start, r.stop - 1] for sp, r in SEEDS["tune"]["attack"].items()}},
                        "set": args.set}
    summary["scored_with"] = "stream_ekyc.offline.score_video (the stream-ekyc score command)" + (
        " [rescored from stored features]" if args.rescore else "")
    summary["elapsed_ms_mean"] = float(np.mean([r["elapsed_ms"] for r in rows]))
    if args.set == "report":
        det = det_curve(rows)
        summary["det"] = det
        (RESULTS / "accuracy.json").write_text(json.dumps(summary, indent=1))
        plot_det(det, summary, RESULTS / "accuracy_det.png")
    print(json.dumps({k: summary[k] for k in ("apcer", "apcer_worst", "bpcer", "retry_share", "threshold")},
                     indent=1))
    for key, d in summary["by_exposure_control"].items():
        print(f"exposure control {key:5s}: bona fide {d['bona_fide']}, BPCER {d['bpcer']:.3f} "
              f"(retry {d['retry_share']:.3f}), APCER " + " ".join(f"{sp} {v:.2f}" for sp, v in d["apcer"].items()))
    for sp, c in summary["counts"].items():
        print(f"{sp:16s} n={c['n']:4d} live={c['live']:4d} spoof={c['spoof']:4d} retry={c['retry']:4d}  "
              f"{summary['reasons'].get(sp, {})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
