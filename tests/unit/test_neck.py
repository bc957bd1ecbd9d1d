"""The depth step under the chin (``gain_neck``): measured along the face's midline,
missing when the frame cuts the neck off, and counted as attack-like when missing."""

import math

import numpy as np

from stream_ekyc.liveness import decision as D
from stream_ekyc.liveness.signals import MID_BINS, MID_V, FaceGeometry, FrameRecord, SignalExtractor
from stream_ekyc.vision.planes import YuvFrame

from .synthetic_records import features


def test_a_shaded_neck_drops_and_a_flat_sheet_does_not():
    live = features(seed=3, neck_shade=0.35)["gain_neck"]
    sheet = features(seed=3, neck_shade=1.0)["gain_neck"]
    assert live > 0.4
    assert abs(sheet) < 0.1
    assert abs(features(seed=4, flat=True)["gain_neck"]) < 0.1


def test_no_neck_in_view_is_not_measured_and_counts_as_attack_like():
    v = features(seed=5, neck_visible_to=2.0)
    assert math.isnan(v["gain_neck"])
    phi = D.transform(v)
    assert phi is not None and phi["gain_neck"] == D.MISSING_AS["gain_neck"]


def test_midline_survives_the_record_round_trip_with_bins_outside_the_frame():
    mid = np.full((MID_BINS, 3), 0.25)
    mid[MID_V > 2.4] = np.nan
    face = FaceGeometry((250.0, 150.0, 140.0, 180.0), np.array([[280.0, 200.0], [360.0, 200.0], [320.0, 250.0],
                                                               [290.0, 300.0], [350.0, 300.0]]), 0.9)
    rec = FrameRecord(t=1.0, width=640, height=480, n_faces=1, face=face, patches=np.zeros((30, 3)),
                      quartiles=np.zeros((4, 3)), skin=np.zeros(3), midline=mid)
    d = rec.to_dict()
    assert all(b is None for row, v in zip(d["midline"], MID_V) if v > 2.4 for b in row)
    back = FrameRecord.from_dict(d)
    assert np.array_equal(np.isnan(back.midline), np.isnan(mid))
    assert np.allclose(back.midline[~np.isnan(mid)], 0.25)


def _frame_with_rows(height=480, width=640):
    """A grey frame whose rows get brighter downwards (to see which rows a bin reads)."""
    rows = np.linspace(40, 220, height).astype(np.uint8)
    img = np.repeat(rows[:, None], width, axis=1)
    return np.repeat(img[:, :, None], 3, axis=2)


def test_midline_bins_follow_the_face_and_stop_at_the_frame_edge():
    bgr = _frame_with_rows()
    iod = 80.0
    lm = np.array([[280.0, 200.0], [360.0, 200.0], [320.0, 250.0], [290.0, 300.0], [350.0, 300.0]])
    face = FaceGeometry((240.0, 140.0, 160.0, 220.0), lm, 0.9)
    ex = SignalExtractor()
    for frame in (bgr, YuvFrame.from_bgr(bgr)):
        rec = ex.extract(0.0, frame, [face])
        mid = rec.midline
        assert mid.shape == (MID_BINS, 3)
        # bin centres at 200 + v * iod pixels; the half-size frame ends at row 239 (full 478)
        inside = 200 + MID_V * iod <= 478
        assert np.isfinite(mid[inside]).all() and np.isnan(mid[~inside]).all()
        lum = mid[inside, 1]
        assert np.all(np.diff(lum) > 0)          # brighter downwards, as the rows are
    # the planes path (as frames are decoded) reads the same bins as the BGR path
    a = ex.extract(0.0, YuvFrame.from_bgr(bgr), [face]).midline
    b = ex.extract(0.0, bgr, [face]).midline
    ok = np.isfinite(b)
    assert np.array_equal(ok, np.isfinite(a))
    assert np.allclose(a[ok], b[ok], rtol=0.05, atol=0.003)


def test_the_grid_rows_of_the_taller_face_strip_are_the_canonical_face_crop():
    from stream_ekyc.liveness.signals import CANON_H, EXT_TOP, _face_strip

    from .test_planes import _canonical_face

    bgr = _frame_with_rows()
    bgr[:, :, 0] = np.arange(640)[None, :] % 200        # structure across as well
    lm = np.array([[281.3, 203.7], [357.9, 196.2], [322.0, 250.0], [290.0, 300.0], [352.0, 302.0]])
    face = FaceGeometry((240.0, 140.0, 160.0, 220.0), lm, 0.9)
    for frame in (bgr, YuvFrame.from_bgr(bgr)):
        from stream_ekyc.vision.planes import as_frame
        f = as_frame(frame)
        assert np.array_equal(_face_strip(f, face)[EXT_TOP:EXT_TOP + CANON_H], _canonical_face(f, face))


def test_a_frame_that_cuts_off_the_chin_is_retried_never_live():
    from .synthetic_records import make_records, score

    ch, recs = make_records(seed=6, neck_visible_to=1.7)
    verdict = score(ch, recs)
    assert math.isnan(verdict.features["gain_jaw"])
    assert verdict.verdict == "retry" and verdict.reasons == ["unmeasurable"]
