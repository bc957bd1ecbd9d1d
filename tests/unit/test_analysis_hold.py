"""FrameAnalyzer: a still, single face is detected on one frame in ``detect_every`` and held
in between; motion, a second face or a lost face bring detection back on every frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream_ekyc.analysis import FrameAnalyzer
from stream_ekyc.challenge import Challenge, Step
from stream_ekyc.liveness.signals import FaceGeometry
from stream_ekyc.liveness.scorer import ScorerConfig, compute_features
from stream_ekyc.vision.planes import YuvFrame

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's portrait on a 640×480 grey canvas (even sides, YUV-convertible)."""
    img = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:300, 80:380]
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[90:390, 170:470] = img
    return canvas


def _shift(img: np.ndarray, dx: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def test_still_face_is_detected_one_frame_in_three(face: np.ndarray) -> None:
    an = FrameAnalyzer(detect_every=3)
    frame = YuvFrame.from_bgr(face)
    recs = [an.analyze(i / 30, frame) for i in range(12)]
    assert all(r.face is not None and r.patches is not None for r in recs)
    detected = [r.detected for r in recs]
    # the first two detections establish stillness; from then on two of three are held
    assert detected[:2] == [True, True]
    assert detected[2:] == [False, False, True] * 3 + [False]
    held = [r for r in recs if not r.detected]
    assert all(r.sharpness == 0.0 for r in held)            # not measured on held frames
    assert all(r.sharpness > 0.0 for r in recs if r.detected)
    # the held geometry is the last detection's
    for prev, r in zip(recs, recs[1:]):
        if not r.detected:
            assert np.array_equal(r.face.landmarks, prev.face.landmarks)


def test_frames_far_apart_are_always_detected(face: np.ndarray) -> None:
    """At a slow rate (face fitting, the countdown) nothing is held; at the scoring
    window's 15 fps holding resumes, and the first frame after a gap is a fresh detection."""
    an = FrameAnalyzer(detect_every=3)
    frame = YuvFrame.from_bgr(face)
    slow = [an.analyze(i * 0.25, frame) for i in range(6)]          # 4 fps
    assert all(r.detected for r in slow)
    fast = [an.analyze(1.5 + 0.25 + i / 15, frame) for i in range(6)]   # then 15 fps
    assert fast[0].detected
    assert [r.detected for r in fast] == [True, False, False, True, False, False]


def test_every_frame_is_detected_when_asked(face: np.ndarray) -> None:
    an = FrameAnalyzer(detect_every=1)
    frame = YuvFrame.from_bgr(face)
    assert all(an.analyze(i / 30, frame).detected for i in range(6))


def test_a_moving_face_is_detected_on_every_frame(face: np.ndarray) -> None:
    an = FrameAnalyzer(detect_every=3)
    # 12 px a frame: far more than a tenth of the inter-ocular distance
    recs = [an.analyze(i / 30, YuvFrame.from_bgr(_shift(face, 12 * (i % 2) - 6))) for i in range(8)]
    assert all(r.detected for r in recs)


def test_a_lost_face_is_noticed_within_the_hold(face: np.ndarray) -> None:
    an = FrameAnalyzer(detect_every=3)
    still = YuvFrame.from_bgr(face)
    blank = YuvFrame.from_bgr(np.full_like(face, 90))
    recs = [an.analyze(i / 30, still) for i in range(4)]
    recs += [an.analyze((4 + i) / 30, blank) for i in range(4)]
    # a held frame may still carry the face; within detect_every frames it is gone, and
    # no face means detection on every frame until one is found again
    assert any(r.face is None for r in recs[4:7])
    assert recs[-1].face is None and recs[-1].detected and recs[-2].detected


def test_motion_gate_uses_detected_frames_only(face: np.ndarray) -> None:
    """Held frames repeat the last position: they must not dilute the motion measured."""
    an = FrameAnalyzer(detect_every=3)
    frame = YuvFrame.from_bgr(face)
    recs = [an.analyze(i / 30, frame) for i in range(30)]
    ch = Challenge((Step(0.2, 0.3, (255, 0, 0)), Step(0.5, 0.3, (0, 255, 0))))
    q = compute_features(recs, ch, ScorerConfig()).quality
    assert q["motion"] == pytest.approx(0.0, abs=1e-6)
    # the same records with the held frames' faces moved by half an IOD: a held frame is
    # not a measurement, so the motion must not change
    moved = []
    for r in recs:
        if not r.detected:
            f = r.face
            r.face = FaceGeometry(f.box, f.landmarks + np.array([0.5 * f.iod, 0.0]), f.score)
        moved.append(r)
    q2 = compute_features(moved, ch, ScorerConfig()).quality
    assert q2["motion"] == pytest.approx(0.0, abs=1e-6)


def _widths_looked_at(monkeypatch, an: FrameAnalyzer) -> list[int]:
    """The detector input widths ``an`` asks for, in order, from now on."""
    seen: list[int] = []
    real = an.detector.detect

    def spy(image, input_width=160):
        seen.append(input_width)
        return real(image, input_width)

    monkeypatch.setattr(an.detector, "detect", spy)
    return seen


@pytest.mark.parametrize("wide_first, widths", [
    (True, [320, 160, 160, 160, 320, 160]),     # offline (the calibration's): wide, then every fourth
    (False, [160, 320, 160, 160, 160, 320]),    # live: a narrow look first, wide on the second
])
def test_where_the_analyzer_looks_before_a_face_is_found(monkeypatch, wide_first, widths) -> None:
    an = FrameAnalyzer(wide_first=wide_first)
    seen = _widths_looked_at(monkeypatch, an)
    blank = YuvFrame.from_bgr(np.full((480, 640, 3), 90, np.uint8))
    recs = [an.analyze(i * 0.2, blank) for i in range(6)]
    assert all(r.face is None for r in recs)
    assert seen == widths


def test_a_large_face_is_found_on_the_first_narrow_look(monkeypatch, face: np.ndarray) -> None:
    an = FrameAnalyzer(wide_first=False)
    seen = _widths_looked_at(monkeypatch, an)
    rec = an.analyze(0.0, YuvFrame.from_bgr(face))
    assert rec.face is not None and seen == [160]
