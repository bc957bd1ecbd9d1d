"""The analysis on a decoded frame's YUV planes against the old full-frame BGR path."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from stream_ekyc.analysis import FrameAnalyzer
from stream_ekyc.liveness.signals import FaceGeometry, _warp_half, canonical_transform, CANON_H, CANON_W
from stream_ekyc.vision.planes import BgrFrame, YuvFrame, _area, as_frame


def _scene(seed: int = 0) -> np.ndarray:
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[10:250, 105:345]
    img = np.full((480, 640, 3), (90, 120, 150), np.uint8)
    img[60:420, 140:500] = cv2.resize(face, (360, 360))
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)


def _decoded(bgr: np.ndarray) -> av.VideoFrame:
    """What a decoder hands over: 4:2:0, no colour metadata."""
    return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")


def test_small_views_match_swscale_then_area_average():
    frame = _decoded(_scene())
    old = BgrFrame(frame.to_ndarray(format="bgr24"))       # the previous path: swscale, full frame
    new = YuvFrame.from_av(frame)
    for a, b in ((new.half(), old.half()), (new.scaled((80, 60)), old.scaled((80, 60))),
                 (new.scaled((160, 120)), old.scaled((160, 120)))):
        d = a.astype(int) - b
        assert a.shape == b.shape
        # rounding, and clipping where a pixel converts beyond 255 (swscale clips each pixel
        # before averaging; averaging first clips only the mean)
        assert (np.abs(d) <= 2).mean() > 0.995 and np.abs(d).max() <= 6
        assert np.abs(d.mean(axis=(0, 1))).max() < 1.0


def test_half_roi_converts_only_the_crop_but_equals_the_whole():
    new = YuvFrame.from_av(_decoded(_scene()))
    whole = YuvFrame.from_av(_decoded(_scene())).half()
    assert np.array_equal(new.half_roi(40, 30, 200, 170), whole[30:170, 40:200])


def test_halvings_average_like_one_area_reduction():
    y = np.random.default_rng(1).integers(0, 256, (480, 640), dtype=np.uint8)
    for size in ((160, 120), (80, 60)):
        direct = cv2.resize(y, size, interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(_area(y, size).astype(int) - direct).max() <= 1


def test_the_face_crop_from_a_box_around_the_face_equals_warping_the_whole_half_frame():
    frame = BgrFrame(_scene())
    lm = np.array([[280.0, 200.0], [360.0, 204.0], [322.0, 250.0], [290.0, 300.0], [352.0, 302.0]])
    for shift in (0.0, -260.0, 250.0):          # inside, and running off the left / right edge
        face = FaceGeometry((240 + shift, 120, 160, 220), lm + [shift, 0.0], 0.9)
        m = canonical_transform(face, scale=0.5)
        full = cv2.warpAffine(frame.half(), m, (CANON_W, CANON_H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        assert np.array_equal(_canonical_face(frame, face), full)


def test_records_from_the_planes_match_records_from_the_bgr_frame():
    """The liveness signals, in linear RGB, agree with the old path to well under the
    response the scorer looks for (a few % of the level)."""
    frames = [_decoded(_scene(seed)) for seed in range(4)]
    old_an, new_an = FrameAnalyzer(), FrameAnalyzer()
    for i, f in enumerate(frames):
        old = old_an.analyze(i / 30, f.to_ndarray(format="bgr24"))
        new = new_an.analyze(i / 30, f)                   # a PyAV frame: analysed on its planes
        assert old.face is not None and new.face is not None
        assert np.abs(old.face.landmarks - new.face.landmarks).max() < 2.0
        for key in ("patches", "quartiles", "skin", "background"):
            a, b = getattr(old, key), getattr(new, key)
            assert np.allclose(a, b, rtol=0.03, atol=0.002), key
        assert abs(old.luma - new.luma) < 1.0
        assert abs(old.sharpness - new.sharpness) <= 0.1 * old.sharpness + 1.0


def _canonical_face(frame, face):
    """The face grid's crop warped on its own from the half-size frame."""
    return _warp_half(frame, canonical_transform(face, scale=(frame.width // 2) / frame.width), (CANON_W, CANON_H))


def test_as_frame_takes_every_kind_of_frame():
    bgr = _scene()
    assert isinstance(as_frame(bgr), BgrFrame)
    yf = as_frame(_decoded(bgr))
    assert isinstance(yf, YuvFrame) and (yf.width, yf.height) == (640, 480)
    assert as_frame(yf) is yf
    assert yf.bgr().shape == (480, 640, 3)
    odd = YuvFrame.from_bgr(bgr)                         # no decoded frame behind it
    assert np.abs(odd.bgr().astype(int) - bgr).mean() < 3.0


@pytest.mark.parametrize("fmt", ["rgb24", "yuvj420p"])
def test_frames_in_other_formats_are_converted_first(fmt):
    f = av.VideoFrame.from_ndarray(_scene(), format="bgr24").reformat(format=fmt)
    yf = YuvFrame.from_av(f)
    assert yf.y.shape == (480, 640) and yf.u.shape == (240, 320)


def test_the_face_crop_warped_plane_by_plane_equals_converting_first():
    """From YUV planes each plane is warped and only the crop converted: the same crop as
    warping the converted half-size frame, up to rounding."""
    lm = np.array([[280.0, 200.0], [360.0, 204.0], [322.0, 250.0], [290.0, 300.0], [352.0, 302.0]])
    face = FaceGeometry((240.0, 150.0, 160.0, 200.0), lm, 0.9)
    decoded = _decoded(_scene())
    planes = YuvFrame.from_av(decoded)
    converted = YuvFrame.from_av(decoded)
    converted.half()                      # the whole half-size frame converted first
    a = _canonical_face(planes, face).astype(int)
    b = _canonical_face(converted, face).astype(int)
    assert a.shape == (CANON_H, CANON_W, 3)
    assert np.abs(a - b).max() <= 3 and (np.abs(a - b) <= 1).mean() > 0.97
    assert np.abs((a - b).mean(axis=(0, 1))).max() < 0.5
