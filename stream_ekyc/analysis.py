"""One analysed frame: detect (YuNet) or hold the tracked face, measure the signals.

``FrameAnalyzer.analyze`` is the CPU work of the pipeline: it runs off the event loop
(in a bounded executor for live sessions, in the caller's thread offline). It keeps a
little per-session tracking state (the last face, for choosing the detector's input size
and smoothing landmark jitter), so use one analyzer per session; the ONNX model behind it
is shared by the whole process.

Detection is the largest part of a frame's cost, and the applicant is asked to hold still
while the colours play, so a face that was found alone and still is *held* for up to
``detect_every - 1`` frames: those frames are measured with the last detected geometry and
marked ``detected=False``. Any detection that finds no face, several faces or motion
(more than ``still_iod`` of the inter-ocular distance since the previous detection) turns
holding off until the face is still again, so a moving or leaving face is re-detected on
every frame. A frame more than ``max_hold_gap_s`` after the previous analysed one is always
detected: held geometry is never older than a few frames of a stream analysed at 10 fps or
more (the scoring window, offline scoring), and a slower rate (face fitting, the countdown)
detects every frame it takes. The quality gates measure motion on detected frames only.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from .liveness.signals import FaceGeometry, FrameRecord, SignalExtractor
from .vision.detector import get_detector
from .vision.planes import as_frame

# cv2 must not start its own thread pool next to ours
cv2.setNumThreads(1)

#: Frames a second the liveness analysis takes from a stream, live (in the scoring window)
#: and offline alike, so that the calibration fitted on offline scores holds for live ones.
#: A 30 fps stream gives every other frame (slower streams: every frame). Measured on the
#: 1040 tuning sessions with the shape cues of the time (before the gain map), out of fold:
#: BPCER at APCER <= 1 / 2 / 5 % per species 49.5 / 42 / 32 % at 15 fps against 51 / 45 /
#: 31 % analysing every frame; what limited the shape cues was not the number of frames.
#: Fewer does cost accuracy: on the 650 tuning sessions with the gain map, each rate
#: calibrated on its own features, 38.75 / 31.7 / 15.2 % at 15 fps against 47.75 / 38 / 17 %
#: at 10 fps. Each analysed frame costs the live server several times its analysis's own
#: CPU time, so this rate sets a stream's cost (docs/capacity.md).
ANALYSIS_FPS = 15.0


class Cadence:
    """Which frames, by their session time, a consumer takes: at most one per ``period``
    seconds (``period`` 0: every frame). A frame up to ``slack`` early for its turn counts as
    on time, so a jittery 30 fps stream still gives 10 frames a second at period 0.1."""

    def __init__(self, period: float, slack: float = 0.01) -> None:
        self.period = period
        self.slack = slack
        self._due = -math.inf
        self.skipped = 0

    @staticmethod
    def period_for(fps: float) -> float:
        """The period of at most ``fps`` frames a second (``fps`` 0 or less: 0, every frame)."""
        return 1.0 / fps if fps > 0 else 0.0

    @classmethod
    def at(cls, fps: float) -> "Cadence":
        """At most ``fps`` frames a second (``fps`` 0 or less: every frame)."""
        return cls(cls.period_for(fps))

    def take(self, t: float) -> bool:
        if self.period <= 0:
            return True
        if t < self._due - self.slack:
            self.skipped += 1
            return False
        # keep the rate when on time; restart the count after a gap
        self._due = self._due + self.period if t - self._due < self.period else t + self.period
        return True


class FrameAnalyzer:
    small_width = 160      # detector input width for a close face
    large_width = 320      # used while the face is small or lost
    smooth = 0.5           # landmark smoothing weight of the previous frame (when still)
    still_iod = 0.1        # eye-centre motion between detections that counts as still
    max_hold_gap_s = 0.15  # a frame further than this after the previous one is detected

    def __init__(self, detect_every: int = 3, wide_first: bool = True) -> None:
        """``wide_first``: with no face found yet, the first look is at ``large_width`` (then
        every fourth); False looks at ``small_width`` first and wide on the second frame, the
        live pipeline's choice: an applicant framing a face for the camera is close, and a
        wide look costs about four narrow ones. Offline scoring keeps the default, on which
        the calibration was fitted."""
        self.detector = get_detector()
        self.signals = SignalExtractor()
        self.detect_every = max(1, int(detect_every))
        self._wide_turn = 0 if wide_first else 1
        self._last: FaceGeometry | None = None
        self._misses = 0
        self._held = 0           # frames measured with the last geometry since it was detected
        self._holdable = False   # the last detection found one face, still
        self._prev_t = -math.inf  # the previous analysed frame's time

    def _input_width(self, frame_w: int) -> int:
        if self._last is None:
            # look harder every few frames while nothing is found
            return self.large_width if self._misses % 4 == self._wide_turn else self.small_width
        iod_at_small = self._last.iod * self.small_width / frame_w
        return self.small_width if iod_at_small >= 14 else self.large_width

    def analyze(self, t: float, frame: Any) -> FrameRecord:
        """One record for ``frame``: a BGR ndarray, a ``vision.planes`` frame or a PyAV frame."""
        frame = as_frame(frame)
        gap, self._prev_t = t - self._prev_t, t
        if self._holdable and self._last is not None and self._held < self.detect_every - 1 \
                and gap <= self.max_hold_gap_s:
            self._held += 1
            return self.signals.extract(t, frame, [self._last], detected=False)
        self._held = 0
        w = frame.width
        width = self._input_width(w)
        src = frame.detector_source(width)
        faces = self.detector.detect(src, input_width=width)
        scale = w / src.shape[1]
        geoms = [FaceGeometry(tuple(float(v) * scale for v in f.box),
                              np.asarray(f.landmarks, dtype=np.float64) * scale, float(f.score))
                 for f in faces]
        self._holdable = False
        if geoms:
            g = geoms[0]
            if self._last is not None:
                move = np.linalg.norm(g.eye_centre - self._last.eye_centre) / max(g.iod, 1.0)
                self._holdable = len(geoms) == 1 and move < self.still_iod
                if move < self.still_iod:   # still: average out detector jitter
                    a = self.smooth
                    g = FaceGeometry(tuple(a * np.array(self._last.box) + (1 - a) * np.array(g.box)),
                                     a * self._last.landmarks + (1 - a) * g.landmarks, g.score)
                    geoms[0] = g
            self._last = g
            self._misses = 0
        else:
            self._last = None
            self._misses += 1
        return self.signals.extract(t, frame, geoms)
