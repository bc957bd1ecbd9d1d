"""The live face-fit gate against the scorer, on the simulated sessions.

A live session shows its colours only once the fit guidance (``session.guidance``) has said
``ok`` for ``PipelineConfig.fit_stable_s``; ``stream-ekyc score`` (and so the accuracy
benchmark) scores a recording with no such gate. This replays the fit phase on each
session's frames before its first colour — under the rest colour, as the live page shows it
while fitting — at the live rate (``fit_fps``, the live analyzer), and crosses what the gate
would have said with the offline verdict (the shipped calibration's, from the features
``accuracy.py`` stored). A genuine applicant the gate stops never reaches
the scorer: in a live deployment that is a retry too, so the gate should stop only sessions
the scorer would not accept anyway.

    python benchmarks/fit_gate.py --set tune       # after accuracy.py --set tune (its renders and scores)
    python benchmarks/fit_gate.py --set report

Each set is measured under the shipped ``FitRules`` and under the rule of the previous
release (``max_clipped`` 0.08) for comparison. Writes benchmarks/results/fit_gate.json
(one entry per set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from stream_ekyc.session import FitRules  # noqa: E402

DATA = HERE / "data"
RESULTS = HERE / "results"
RULES = {"shipped": FitRules(), "previous": replace(FitRules(), max_clipped=0.08)}
PASSED = ("fitted", "fitted_later")     # what reaches the colours and the scorer


def fit_phase(video: Path, first_colour_t: float, rules: dict[str, FitRules]) -> dict[str, str]:
    """Per rule set: ``fitted`` if the guidance said ok for ``fit_stable_s`` before the first
    colour; ``fitted_later`` if it said ok at the last frame before it but not yet for that
    long (the recording's rest period, 0.8-1.5 s, ended first: live, the page keeps fitting
    and would have shown the colours a moment later); else the last guidance code (what
    the page would be showing: the applicant is stopped there)."""
    from stream_ekyc.analysis import Cadence, FrameAnalyzer
    from stream_ekyc.offline import iter_frames
    from stream_ekyc.pipeline import PipelineConfig
    from stream_ekyc.session import FitGate

    cfg = PipelineConfig()
    an = FrameAnalyzer(wide_first=False)            # as the live pipeline analyses
    cadence = Cadence.at(cfg.fit_fps)
    gates = {k: FitGate(cfg.fit_stable_s, r) for k, r in rules.items()}
    out: dict[str, str] = {}
    for t, frame in iter_frames(video):
        if t >= first_colour_t or len(out) == len(gates):
            break
        if not cadence.take(t):
            continue
        rec = an.analyze(t, frame)
        for name, gate in gates.items():
            if name not in out:
                gate.offer(rec, t)
                if gate.fitted(t):
                    out[name] = "fitted"
    return {k: out.get(k) or ("fitted_later" if g.last == "ok" else g.last or "no_face") for k, g in gates.items()}


def _job(args: tuple[str, int]) -> tuple[str, int, dict[str, str]]:
    species, seed = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sessions = DATA / "sessions"
    stem = f"{species}-{seed}"
    video = next(p for p in (sessions / f"{stem}.webm", sessions / f"{stem}.mp4") if p.exists())
    steps = json.loads((sessions / f"{stem}.challenge.json").read_text())["steps"]
    return species, seed, fit_phase(video, float(steps[0]["t"]), RULES)


def measure(set_name: str, jobs: int) -> dict[str, Any]:
    store = DATA / f"{set_name}_scores.jsonl"
    if not store.exists():
        raise SystemExit(f"fit_gate: {store} is missing: run benchmarks/accuracy.py --set {set_name} first")
    # the verdicts of the shipped calibration: the decision re-run on the stored features
    # (what a fresh ``score_video`` run would say; the stored verdicts may be an older model's)
    from accuracy import rescore

    rows = rescore([json.loads(line) for line in store.read_text().splitlines()])
    verdict = {(r["species"], r["seed"]): r["verdict"] for r in rows}
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        gates = list(ex.map(_job, list(verdict), chunksize=4))
    out: dict[str, Any] = {"sessions": len(gates), "rules": {}}
    for name, rules in RULES.items():
        table: dict[str, dict[str, dict[str, int]]] = {}
        for species, seed, g in gates:
            cell = table.setdefault(species, {}).setdefault(g[name], {})
            v = verdict[(species, seed)]
            cell[v] = cell.get(v, 0) + 1
        bona = table.get("bona_fide", {})
        n_bona = sum(sum(c.values()) for c in bona.values())
        stopped = {code: c for code, c in bona.items() if code not in PASSED}
        reached_live = sum(c.get("live", 0) for code, c in bona.items() if code in PASSED)
        out["rules"][name] = {
            "max_clipped": rules.max_clipped,
            # species -> what the fit gate said -> offline verdict -> sessions
            "gate_by_species": table,
            "bona_fide_stopped_by_gate": sum(sum(c.values()) for c in stopped.values()),
            "bona_fide_stopped_that_scored_live": sum(c.get("live", 0) for c in stopped.values()),
            # share of genuine sessions a live deployment would not accept: stopped at the
            # gate, or fitted and then not live
            "bpcer_live_flow": round(1 - reached_live / max(1, n_bona), 4),
            "bpcer_offline": round(1 - sum(c.get("live", 0) for c in bona.values()) / max(1, n_bona), 4),
            "attacks_accepted_after_gate": {sp: sum(c.get("live", 0) for code, c in t.items() if code in PASSED)
                                            for sp, t in table.items() if sp != "bona_fide"},
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("report", "tune"), default="report")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    res = measure(args.set, args.jobs)
    path = RESULTS / "fit_gate.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[args.set] = res
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    for name, r in res["rules"].items():
        print(f"{args.set} {name} (max_clipped {r['max_clipped']}): genuine stopped at the gate "
              f"{r['bona_fide_stopped_by_gate']} (of which scored live {r['bona_fide_stopped_that_scored_live']}); "
              f"BPCER offline {r['bpcer_offline']:.3f}, live flow {r['bpcer_live_flow']:.3f}; "
              f"attacks live after the gate {r['attacks_accepted_after_gate']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
