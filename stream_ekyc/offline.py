"""Offline driver: a recorded video + its challenge → the same verdict the live pipeline gives.

It decodes with PyAV, feeds the frames through the same ``FrameAnalyzer`` and
``StreamingScorer`` the live session uses, at the rate the live session analyses its scoring
window (``analysis.ANALYSIS_FPS``), and decides with the same ``decide``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .challenge import Challenge
from .liveness.decision import Verdict, decide
from .liveness.scorer import StreamingScorer
from .liveness.signals import FrameRecord, records_to_dicts
from .vision.planes import YuvFrame, as_frame
from .vision.quality import frame_quality

MAX_SIDE = 4096
MAX_DURATION_S = 120.0
ANALYSIS_WIDTH = 640     # larger frames are scaled down while decoding


class VideoError(ValueError):
    """The video cannot be read or is outside what the scorer accepts."""


@dataclass
class BestFrame:
    t: float
    quality: float
    components: dict[str, Any]


class BestFrameKeeper:
    """Keeps the best-quality frame seen so far, preferring frames under neutral light."""

    def __init__(self, challenge: Challenge, keep_image: bool = False):
        self.challenge = challenge
        self.keep_image = keep_image
        self.best: BestFrame | None = None
        self.best_neutral = False
        self.image: Any = None                  # BGR ndarray, or the decoded frame itself
        self._prev: FrameRecord | None = None   # the previous analysed frame (motion)

    def neutral(self, t: float) -> bool:
        return t < self.challenge.start or t > self.challenge.end + 0.6

    def offer(self, rec: FrameRecord, image: np.ndarray | None = None) -> None:
        if not rec.detected:     # only frames whose face was detected on them (and sharpness measured)
            return
        q, comp = frame_quality(rec, self._prev)
        self._prev = rec
        if q <= 0:
            return
        neutral = self.neutral(rec.t)
        better = (self.best is None or (neutral and not self.best_neutral)
                  or (neutral == self.best_neutral and q > self.best.quality))
        if better:
            self.best = BestFrame(rec.t, q, comp)
            self.best_neutral = neutral
            if self.keep_image and image is not None:
                # a decoded frame is kept as it is (converted once, at the end: ``best_bgr``)
                self.image = image.copy() if isinstance(image, np.ndarray) else image

    def best_bgr(self) -> np.ndarray | None:
        """The best frame's BGR pixels (None before any usable frame, or without keep_image)."""
        if self.image is None or isinstance(self.image, np.ndarray):
            return self.image
        return as_frame(self.image).bgr()

    def to_dict(self) -> dict[str, Any] | None:
        if self.best is None:
            return None
        return {"t": round(self.best.t, 3), "quality": round(self.best.quality, 3),
                "neutral_light": self.best_neutral, "components": self.best.components}


def iter_frames(path: str | Path):
    """Yield (t, ``YuvFrame``) with t in seconds from the first frame's timestamp (the
    decoded planes, as the live session analyses them; ``.bgr()`` converts the whole frame)."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot read video: {_short(e)}") from None
    with container:
        if not container.streams.video:
            raise VideoError("cannot read video: it has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"     # offline: frame threading is fine (not for live decoding)
        if stream.codec_context.width > MAX_SIDE or stream.codec_context.height > MAX_SIDE:
            raise VideoError(f"video is larger than {MAX_SIDE} px a side")
        t0 = None
        last_t = -1.0
        try:
            for frame in container.decode(stream):
                if frame.pts is None and frame.time is None:
                    continue
                t = float(frame.time) if frame.time is not None else float(frame.pts * stream.time_base)
                if t0 is None:
                    t0 = t
                t -= t0
                if t <= last_t:        # duplicated or reordered timestamps: keep time monotonic
                    continue
                if t > MAX_DURATION_S:
                    raise VideoError(f"video is longer than {MAX_DURATION_S:.0f} s")
                last_t = t
                w, h = frame.width, frame.height
                if w > ANALYSIS_WIDTH:
                    nh = int(round(h * ANALYSIS_WIDTH / w / 2)) * 2
                    frame = frame.reformat(format="yuv420p", width=ANALYSIS_WIDTH, height=nh,
                                           interpolation="AREA")
                yield t, YuvFrame.from_av(frame)
        except av.error.FFmpegError as e:
            if t0 is None:
                raise VideoError(f"cannot decode video: {_short(e)}") from None
            # a truncated tail: score what was decoded
        if t0 is None:
            raise VideoError("cannot read video: no decodable frames")


def _short(e: Exception) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:200]


def score_video(path: str | Path, challenge: Challenge, keep_records: bool = False,
                id_embedding: np.ndarray | None = None, match_threshold: float | None = None) -> dict[str, Any]:
    """Score one recorded session. Raises VideoError for unusable input.

    With ``id_embedding`` (the ID photo's, from ``idphoto.check``) the result also has
    ``match``: the best frame compared with the ID photo after a ``live`` verdict, and
    ``None`` for any other verdict (a spoof never carries a match)."""
    from .analysis import ANALYSIS_FPS, Cadence, FrameAnalyzer

    started = time.perf_counter()
    analyzer = FrameAnalyzer()
    scorer = StreamingScorer(challenge)
    best = BestFrameKeeper(challenge, keep_image=id_embedding is not None)
    cadence = Cadence.at(ANALYSIS_FPS)   # the live window's rate
    frames = analysed = with_face = 0
    records: list[FrameRecord] = []
    for t, img in iter_frames(path):
        frames += 1
        if not cadence.take(t):
            continue
        analysed += 1
        rec = analyzer.analyze(t, img)
        with_face += rec.face is not None
        scorer.add(rec)
        best.offer(rec, img)
        if keep_records:
            records.append(rec)
    verdict: Verdict = decide(scorer.features())
    out = verdict.to_dict()
    out.update(frames=frames, frames_analysed=analysed, frames_with_face=with_face, best_frame=best.to_dict(),
               features=verdict.measured_features(5),
               quality={k: (round(v, 4) if isinstance(v, float) else v) for k, v in verdict.quality.items()},
               elapsed_ms=round((time.perf_counter() - started) * 1000.0, 1))
    if id_embedding is not None:
        from . import compare
        out["match"] = compare.match_image(best.best_bgr(), id_embedding, match_threshold) \
            if verdict.verdict == "live" else None
        out["elapsed_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
    if keep_records:
        out["records"] = records_to_dicts(records)
    return out

