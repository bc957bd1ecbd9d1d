"""Five-point face alignment to the standard ArcFace 112x112 template.

The template is the one SFace was trained with (and ``cv::FaceRecognizerSF::alignCrop``
uses): in *image* order, the eye on the image's left, the eye on the image's right, the
nose tip, the mouth corner on the image's left, the mouth corner on the image's right.

YuNet gives its landmarks as (right eye, left eye, nose tip, right mouth corner, left
mouth corner) of the *subject*. For a face looking at the camera the subject's right eye
is on the image's left, so YuNet's order already is the template's order, point for point
(``YUNET_TO_TEMPLATE`` is the identity and is kept explicit so the mapping is checked, not
assumed).

The transform is the least-squares similarity (rotation, uniform scale, translation; no
reflection) of Umeyama (1991), "Least-squares estimation of transformation parameters
between two point patterns", IEEE TPAMI 13(4).
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 112

#: ArcFace reference points in a 112x112 crop (x, y), image order (see module docstring).
TEMPLATE = np.array([
    [38.2946, 51.6963],   # eye on the image's left  (subject's right eye)
    [73.5318, 51.5014],   # eye on the image's right (subject's left eye)
    [56.0252, 71.7366],   # nose tip
    [41.5493, 92.3655],   # mouth corner on the image's left  (subject's right)
    [70.7299, 92.2041],   # mouth corner on the image's right (subject's left)
], dtype=np.float64)

#: template row i takes YuNet landmark YUNET_TO_TEMPLATE[i]
YUNET_TO_TEMPLATE = (0, 1, 2, 3, 4)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity matrix M minimising sum |M @ [src, 1] - dst|^2 (no reflection)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N, 2) point sets, got {src.shape} and {dst.shape}")
    n = len(src)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = float((s_c ** 2).sum() / n)
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks (all points coincide)")
    cov = d_c.T @ s_c / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    m = np.empty((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def template_order(landmarks: np.ndarray) -> np.ndarray:
    """YuNet's (5, 2) landmarks reordered to the template's rows."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    return lm[list(YUNET_TO_TEMPLATE)]


def alignment_matrix(landmarks: np.ndarray) -> np.ndarray:
    """2x3 matrix taking image pixels to the 112x112 aligned crop."""
    return umeyama(template_order(landmarks), TEMPLATE)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def alignment_error(landmarks: np.ndarray) -> np.ndarray:
    """Per-point distance (crop pixels) between the mapped landmarks and the template."""
    m = alignment_matrix(landmarks)
    return np.linalg.norm(transform_points(m, template_order(landmarks)) - TEMPLATE, axis=1)


def align(image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 BGR face crop aligned to the template (bilinear, black outside)."""
    img = np.asarray(image_bgr)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    m = alignment_matrix(landmarks)
    return cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
