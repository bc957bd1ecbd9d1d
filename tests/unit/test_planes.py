"""The analysis on a decoded frame's YUV planes against the old full-frame BGR path."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from stream_ekyc.analysis import FrameAnalyzer
from stream_ekyc.liveness.signals import FaceGeometry, _warp_half, canonical_transform, CANON_H, CANON_W
from stream_ekyc.vision.planes import BgrFrame, YuvFrame, _area, as_frame, gaussian_kernel, low_pass_warp


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


def test_the_low_pass_keeps_a_smooth_image_where_it_was():
    """On a smooth image the low-passed crop is the sampled crop: the block averaging and
    the blur move nothing (a half-pixel slip of the reduced grid would show on the ramps),
    inside the frame and where the crop runs off its edges, from planes and from BGR."""
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float64)
    smooth = np.stack([20 + 0.35 * xx, 30 + 0.25 * yy + 0.1 * xx, 200 - 0.2 * xx - 0.1 * yy
                       + 20 * np.sin(xx / 90.0)], axis=2)
    bgr = np.clip(np.round(smooth), 0, 255).astype(np.uint8)
    lm = np.array([[260.0, 200.0], [380.0, 204.0], [322.0, 260.0], [280.0, 320.0], [360.0, 322.0]])
    for shift in (0.0, -240.0, 230.0):          # inside, and running off the left / right edge
        face = FaceGeometry((200 + shift, 120, 240, 300), lm + [shift, 0.0], 0.9)
        m = canonical_transform(face, scale=0.5)
        for frame in (BgrFrame(bgr), YuvFrame.from_bgr(bgr)):
            sampled = _warp_half(frame, m, (CANON_W, CANON_H)).astype(int)
            for sigma in (0.8, 2.5, 3.7):
                low = _warp_half(frame, m, (CANON_W, CANON_H), sigma).astype(int)
                # rounding only (the YUV conversion scales the planes' by up to 2); where the
                # frame's edge is near, the replicated border blurs a little differently
                if shift == 0:
                    assert np.abs(low - sampled).max() <= 4, sigma
                assert np.abs((low - sampled).mean(axis=(0, 1))).max() < (0.45 if shift == 0 else 0.8), (shift, sigma)


def test_the_low_pass_filters_only_a_box_but_equals_filtering_the_whole_plane():
    rng = np.random.default_rng(5)
    plane = rng.integers(0, 256, (240, 320), dtype=np.uint8)
    lm = np.array([[130.0, 100.0], [190.0, 102.0], [161.0, 130.0], [140.0, 160.0], [180.0, 161.0]])
    face = FaceGeometry((100, 60, 120, 150), lm, 0.9)
    m = canonical_transform(face, scale=1.0)
    for sigma in (1.7, 3.2):
        f = int(sigma)
        k = gaussian_kernel(round(np.sqrt(sigma ** 2 - (f * f - 1) / 12.0) / f, 2))
        whole = cv2.resize(plane[:240 - 240 % f, :320 - 320 % f], (320 // f, 240 // f), interpolation=cv2.INTER_AREA)
        whole = cv2.sepFilter2D(whole, -1, k, k, borderType=cv2.BORDER_REPLICATE)
        mm = m.copy()
        mm[:, :2] /= f
        mm[:, 2] = (mm[:, 2] + 0.5) / f - 0.5
        ref = cv2.warpAffine(whole, mm, (CANON_W, CANON_H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        d = low_pass_warp([plane], m, (CANON_W, CANON_H), sigma)[0].astype(int) - ref
        # equal but for a rounding here and there (the filter's vector and scalar paths)
        assert np.abs(d).max() <= 1 and (d != 0).mean() < 0.005, sigma


def test_the_face_grid_averages_every_pixel_of_its_cells(monkeypatch):
    """The grid's cell means come from the strip, low-passed before it is sampled: on a flat
    grey frame with pixel noise, they scatter far less than when the strip's bilinear taps
    read one pixel in several, and their mean does not move."""
    from stream_ekyc.liveness import signals as S

    lm = np.array([[260.0, 200.0], [380.0, 200.0], [320.0, 260.0], [280.0, 320.0], [360.0, 320.0]])
    face = FaceGeometry((200.0, 120.0, 240.0, 300.0), lm, 0.9)      # IOD 120 px: steps of 3.75
    rng = np.random.default_rng(3)
    frames = [np.clip(128 + rng.normal(0, 12, (480, 640, 3)), 0, 255).astype(np.uint8) for _ in range(24)]

    def cells(prefilter_steps: float) -> np.ndarray:
        monkeypatch.setattr(S, "STRIP_PREFILTER", prefilter_steps)
        ex = S.SignalExtractor()
        return np.array([ex.extract(0.0, YuvFrame.from_bgr(f), [face]).patches for f in frames])

    low_passed, sampled = cells(1.0), cells(0.0)
    assert low_passed.std(axis=0).mean() < 0.6 * sampled.std(axis=0).mean()
    assert abs(low_passed.mean() - sampled.mean()) < 0.01 * sampled.mean()


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
