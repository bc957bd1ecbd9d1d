"""Analysis cost per frame (decode excluded) and the wall time of ``stream-ekyc score``.

    python benchmarks/analysis_cost.py

Renders a few 5 s 640×480 30 fps bona fide sessions with the simulator, decodes them
once, then measures the CPU time (``time.thread_time``, one thread) that
``FrameAnalyzer.analyze`` takes per frame it analyses (``analysis.ANALYSIS_FPS``: every
other frame of these 30 fps clips, as the live window and ``stream-ekyc score`` do), also
spread over every decoded frame, with detection apart, plus the scorer's ``finish``
(features + decision). Then times the real command end to end
(process start, model load, decode, analysis, decision). Writes
benchmarks/results/analysis_cost.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SEEDS = (500_001, 500_002, 500_003, 500_004, 500_005)


def main() -> int:
    import simulate

    from stream_ekyc import challenge as C
    from stream_ekyc.analysis import ANALYSIS_FPS, Cadence, FrameAnalyzer
    from stream_ekyc.liveness.decision import decide
    from stream_ekyc.liveness.scorer import StreamingScorer
    from stream_ekyc.offline import iter_frames

    out_dir = HERE / "data" / "cost"
    out_dir.mkdir(parents=True, exist_ok=True)
    per_frame, detect_ms, finish_ms, walls, frames_n, analysed_n = [], [], [], [], [], []
    for seed in SEEDS:
        r = simulate.render_session("bona_fide", seed, out_dir, size=(640, 480), fps=30.0, duration=5.0,
                                    codec="vp8")
        ch = C.load(str(r.challenge))
        decoded = list(iter_frames(r.video))
        cadence = Cadence.at(ANALYSIS_FPS)   # what the scorer analyses
        frames = [(t, img) for t, img in decoded if cadence.take(t)]
        frames_n.append(len(decoded))
        analysed_n.append(len(frames))
        analyzer = FrameAnalyzer()
        analyzer.analyze(*frames[0])          # warm-up (first call allocates)
        analyzer = FrameAnalyzer()
        scorer = StreamingScorer(ch)
        det = analyzer.detector
        orig = det.detect
        spent = [0.0]

        def timed(*a, **k):
            s = time.thread_time()
            try:
                return orig(*a, **k)
            finally:
                spent[0] += time.thread_time() - s

        det.detect = timed  # instance attribute shadows the method for this measurement only
        for t, img in frames:
            s = time.thread_time()
            rec = analyzer.analyze(t, img)
            per_frame.append((time.thread_time() - s) * 1000)
            scorer.add(rec)
        del det.detect
        detect_ms.append(spent[0] * 1000 / len(frames))
        s = time.thread_time()
        decide(scorer.features())
        finish_ms.append((time.thread_time() - s) * 1000)
        s = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "stream_ekyc.cli", "score", str(r.video),
                            "--challenge", str(r.challenge)], capture_output=True, text=True)
        walls.append(time.perf_counter() - s)
        assert p.returncode == 0, p.stderr
    pf = np.array(per_frame)
    res = {
        "frame_size": [640, 480], "fps": 30, "clip_s": 5.0, "sessions": len(SEEDS), "frames": int(sum(frames_n)),
        "frames_analysed": int(sum(analysed_n)), "analysis_fps": ANALYSIS_FPS,
        # per analysed frame; and spread over every decoded frame of the sessions
        "analysis_cpu_ms_per_frame": {"mean": round(float(pf.mean()), 3), "p50": round(float(np.median(pf)), 3),
                                      "p95": round(float(np.percentile(pf, 95)), 3)},
        "analysis_cpu_ms_per_decoded_frame": round(float(pf.sum() / sum(frames_n)), 3),
        "of_which_detection_ms_per_frame": round(float(np.mean(detect_ms)), 3),
        "scorer_finish_cpu_ms": {"mean": round(float(np.mean(finish_ms)), 2), "max": round(float(np.max(finish_ms)), 2)},
        "score_command_wall_s": {"mean": round(float(np.mean(walls)), 3), "max": round(float(np.max(walls)), 3)},
        "target": {"analysis_cpu_ms_per_frame": 4.0, "score_command_wall_s": 3.0},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "analysis_cost.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
