"""Five-point alignment: the Umeyama fit, YuNet's landmark order, and the alignment of a real
photo against landmarks placed by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream_ekyc import compare
from stream_ekyc.vision import align

skdata = pytest.importorskip("skimage.data")

# The astronaut portrait (skimage.data.astronaut, NASA, public domain), 512x512, pixel-centre
# coordinates. Placed by hand on 8-16x enlargements with a pixel grid, not by a detector:
# eye = centre of the iris disc; nose = centre of the nose-tip highlight; mouth corners =
# where the lips meet at the end of the dark mouth opening.
HAND = np.array([
    (202.5, 100.5),   # subject's right eye (image left)
    (246.5, 102.5),   # subject's left eye
    (222.0, 126.5),   # nose tip
    (201.5, 142.0),   # subject's right mouth corner (image left)
    (242.5, 142.5),   # subject's left mouth corner
])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))


def test_umeyama_recovers_a_similarity_exactly():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 300, (5, 2))
    ang, s, t = np.radians(17.0), 0.37, np.array([12.0, -40.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ (s * r).T + t
    m = align.umeyama(src, dst)
    assert np.allclose(m[:, :2], s * r, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-7)


def test_umeyama_never_reflects():
    src = align.TEMPLATE.copy()
    mirrored = src * [-1, 1]            # a mirror image is not reachable by a similarity
    m = align.umeyama(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_landmarks_are_refused():
    with pytest.raises(ValueError):
        align.umeyama(np.ones((5, 2)), align.TEMPLATE)


def test_template_points_map_onto_themselves():
    assert np.allclose(align.alignment_error(align.TEMPLATE), 0, atol=1e-9)
    crop = align.align(np.zeros((200, 200, 3), np.uint8), align.TEMPLATE)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8


def test_yunet_order_is_the_template_order(astronaut):
    """YuNet's first landmark is the eye on the image's left, like the template's first row."""
    t = compare.extract(astronaut)
    lm = t.landmarks
    assert align.YUNET_TO_TEMPLATE == (0, 1, 2, 3, 4)
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]          # image-left first
    assert lm[0, 1] < lm[2, 1] < min(lm[3, 1], lm[4, 1])        # eyes, then nose, then mouth
    assert align.TEMPLATE[0, 0] < align.TEMPLATE[1, 0] and align.TEMPLATE[3, 0] < align.TEMPLATE[4, 0]
    # the hand-placed points are in the same order and within a few pixels
    assert np.linalg.norm(lm - HAND, axis=1).max() < 5.0


@pytest.mark.parametrize("scale", [0.75, 1.0, 1.5, 2.0])
def test_alignment_within_2px_of_the_hand_alignment(astronaut, scale):
    """The crop from the detector's landmarks against the crop from the hand-placed ones:
    where the hand-placed points land in the two 112x112 crops differs by <= 2 px on
    average (<= 3 px at worst), at several sizes of the same photo."""
    if scale == 1.0:
        img = astronaut
    else:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        img = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=interp)
    hand = (HAND + 0.5) * scale - 0.5
    t = compare.extract(img)
    detected = align.transform_points(align.alignment_matrix(t.landmarks), hand)
    ideal = align.transform_points(align.alignment_matrix(hand), hand)
    err = np.linalg.norm(detected - ideal, axis=1)
    assert err.mean() <= 2.0 and err.max() <= 3.0, err


def test_aligned_crop_puts_the_eyes_on_the_template(astronaut):
    """In the aligned crop the irises (the darkest blobs near the template's eye points) sit
    within 3 px of where the template puts the eyes."""
    t = compare.extract(astronaut)
    crop = cv2.cvtColor(align.align(astronaut, t.landmarks), cv2.COLOR_BGR2GRAY).astype(float)
    for (tx, ty) in align.TEMPLATE[:2]:
        x0, y0 = int(tx) - 7, int(ty) - 7
        win = crop[y0:y0 + 15, x0:x0 + 15]
        ys, xs = np.nonzero(win <= np.percentile(win, 12))
        cx, cy = x0 + xs.mean(), y0 + ys.mean()
        assert np.hypot(cx - tx, cy - ty) <= 3.0, (cx, cy, tx, ty)
