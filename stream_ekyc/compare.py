"""Face comparison: the live session's best frame against the ID photo.

One face per image is used, the *dominant* one: the largest, with every other face under
``SECOND_FACE_AREA`` of its box area (a background face or the small ghost portrait of an
ID card). Its five landmarks are refined by detecting again on a crop where the face box
is ``REFINE_FACE_PX`` wide, and on the mirror image of that crop, and averaging (the first
pass's landmarks jitter by a few pixels with the size the face happens to have). The face
is aligned to the ArcFace template (``vision.align``) and embedded with SFace
(``vision.embedder``). Two embeddings are compared by cosine similarity, reported on a
0–100 ``similarity`` scale, piecewise linear in the cosine between calibrated anchors:

==========  ======  ==============================================================
similarity  cosine  meaning (share of impostor pairs at or above)
==========  ======  ==============================================================
0           -1.0
50          0.204   FAR 10 %
60          0.308   FAR 1 %
70          0.391   FAR 0.1 %  (the default threshold)
80          0.473   FAR 0.01 % (extrapolated: too few impostor pairs to measure)
100         1.0
==========  ======  ==============================================================

The cosines come from ``benchmarks/face_match.py``; ``docs/face-match.md`` says how they
were derived and how many impostor pairs back each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .vision.detector import Face, get_detector
from .vision.embedder import cosine, get_embedder

#: (cosine, similarity) anchors, increasing; see the module docstring and docs/face-match.md
ANCHORS: tuple[tuple[float, float], ...] = (
    (-1.0, 0.0),
    (0.204, 50.0),   # FAR 1e-1   (empirical)
    (0.308, 60.0),   # FAR 1e-2   (empirical)
    (0.391, 70.0),   # FAR 1e-3   (empirical)
    (0.473, 80.0),   # FAR 1e-4   (extrapolated: exponential tail from 1e-2 to 1e-3)
    (1.0, 100.0),
)
DEFAULT_THRESHOLD = 70.0

DETECT_WIDTH = 640           # first pass: the whole image scaled to this width (never up)
FALLBACK_WIDTH = 320         # when nothing is found: faces filling a large image
SECOND_FACE_AREA = 0.40      # another face smaller than this share of the largest box is background
MIN_IOD_PX = 24.0            # inter-ocular distance needed to compare (in the image as given)
REFINE_FACE_PX = (80.0,)      # face box sizes for the landmark pass (averaged)
REFINE_FLIP = True           # also detect on the mirrored crop and average
REFINE_CONTEXT = 2.0         # crop side = this x the face box


class FaceError(ValueError):
    """The image has no face usable for comparison; ``code`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FaceTemplate:
    """One face ready for comparison."""

    embedding: np.ndarray      # (128,) float32, unit norm
    landmarks: np.ndarray      # (5, 2) refined, image pixels, YuNet order
    box: tuple[float, float, float, float]
    iod: float
    score: float
    n_faces: int               # faces detected in the image (background ones included)

    def to_dict(self) -> dict[str, Any]:
        return {"iod_px": round(self.iod, 1), "detector_score": round(self.score, 3),
                "faces_detected": self.n_faces}


# --------------------------------------------------------------------------------------
# finding the face
# --------------------------------------------------------------------------------------

def _as_bgr(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 8 or img.shape[1] < 8:
        raise ValueError(f"expected a BGR image, got shape {img.shape}")
    return img


def find_faces(image_bgr: np.ndarray) -> list[Face]:
    """Every face YuNet finds, largest first, in the image's pixels."""
    img = _as_bgr(image_bgr)
    det = get_detector()
    w = img.shape[1]
    faces = det.detect(img, input_width=min(w, DETECT_WIDTH))
    if not faces and w > FALLBACK_WIDTH:
        faces = det.detect(img, input_width=FALLBACK_WIDTH)
    return sorted(faces, key=lambda f: -(f.box[2] * f.box[3]))


def iod(landmarks: np.ndarray) -> float:
    lm = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(lm[1] - lm[0]))


def dominant_face(faces: list[Face], min_iod: float = MIN_IOD_PX) -> Face:
    """The one face to compare; FaceError(no_face | multiple_faces | face_too_small)."""
    if not faces:
        raise FaceError("no_face", "no face found")
    faces = sorted(faces, key=lambda f: -(f.box[2] * f.box[3]))
    main = faces[0]
    area = main.box[2] * main.box[3]
    if len(faces) > 1 and faces[1].box[2] * faces[1].box[3] >= SECOND_FACE_AREA * area:
        raise FaceError("multiple_faces", "more than one face of comparable size")
    if iod(main.landmarks) < min_iod:
        raise FaceError("face_too_small",
                        f"the face is too small to compare (eyes {iod(main.landmarks):.0f} px apart, "
                        f"at least {min_iod:.0f} needed)")
    return main


def crop_scaled(image_bgr: np.ndarray, cx: float, cy: float, scale: float,
                side: int) -> tuple[np.ndarray, np.ndarray]:
    """A side x side crop centred on (cx, cy) at ``scale``; returns (crop, M), crop = M @ image.

    Large reductions average areas first (warpAffine alone would alias): the region is
    shrunk with INTER_AREA to 1.5x the target scale, then warped the rest of the way.
    """
    m = np.array([[scale, 0.0, side / 2.0 - scale * cx], [0.0, scale, side / 2.0 - scale * cy]])
    if scale >= 0.5:
        return cv2.warpAffine(image_bgr, m, (side, side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE), m
    h, w = image_bgr.shape[:2]
    half = side / (2.0 * scale) + 2.0 / scale
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((side, side, 3), image_bgr.dtype), m
    f = 1.5 * scale
    small = cv2.resize(image_bgr[y0:y1, x0:x1], (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))),
                       interpolation=cv2.INTER_AREA)
    fx, fy = small.shape[1] / (x1 - x0), small.shape[0] / (y1 - y0)
    # small pixel u comes from image x = (u + 0.5) / fx - 0.5 + x0 (pixel centres)
    a = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5 + x0], [0.0, 1.0 / fy, 0.5 / fy - 0.5 + y0]])
    m_small = np.hstack([m[:, :2] @ a[:, :2], (m[:, :2] @ a[:, 2] + m[:, 2])[:, None]])
    return cv2.warpAffine(small, m_small, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE), m


def refine_landmarks(image_bgr: np.ndarray, face: Face) -> tuple[np.ndarray, float]:
    """(landmarks, score) averaged over second detections on crops where the face box is
    ``REFINE_FACE_PX`` wide (each also mirrored when ``REFINE_FLIP``); the first pass's
    landmarks when no second detection finds the face."""
    img = _as_bgr(image_bgr)
    det = get_detector()
    x, y, bw, bh = face.box
    cx, cy = x + bw / 2.0, y + bh / 2.0
    found: list[np.ndarray] = []
    scores: list[float] = []
    for px in REFINE_FACE_PX:
        side = int(np.ceil(REFINE_CONTEXT * px / 32.0)) * 32
        crop, m = crop_scaled(img, cx, cy, px / max(bw, bh, 1.0), side)
        inv = cv2.invertAffineTransform(m)
        for flip in ((False, True) if REFINE_FLIP else (False,)):
            faces = det.detect(crop[:, ::-1] if flip else crop, input_width=side)
            if not faces:
                continue
            c = side / 2.0
            best = min(faces, key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - c, f.box[1] + f.box[3] / 2 - c))
            lm = np.asarray(best.landmarks, np.float64).copy()
            if flip:   # mirror back; the subject's right and left swap
                lm[:, 0] = side - 1 - lm[:, 0]
                lm = lm[[1, 0, 2, 4, 3]]
            found.append(lm @ inv[:, :2].T + inv[:, 2])
            scores.append(float(best.score))
    if not found:
        return np.asarray(face.landmarks, np.float64), float(face.score)
    return np.mean(found, axis=0), float(np.mean(scores))


def extract(image_bgr: np.ndarray, face: Face | None = None, min_iod: float = MIN_IOD_PX,
            n_faces: int | None = None) -> FaceTemplate:
    """The comparison template of an image's dominant face (or of ``face`` when given)."""
    img = _as_bgr(image_bgr)
    if face is None:
        faces = find_faces(img)
        face = dominant_face(faces, min_iod=min_iod)
        n_faces = len(faces)
    lm, score = refine_landmarks(img, face)
    emb = get_embedder().embed(img, lm)
    return FaceTemplate(embedding=emb, landmarks=lm, box=tuple(float(v) for v in face.box),
                        iod=iod(lm), score=score, n_faces=1 if n_faces is None else n_faces)


# --------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------

def cosine_to_similarity(cos: float, anchors: tuple[tuple[float, float], ...] = ANCHORS) -> float:
    """Cosine → 0..100, piecewise linear between the anchors."""
    xs = [a[0] for a in anchors]
    ys = [a[1] for a in anchors]
    return float(np.interp(float(np.clip(cos, -1.0, 1.0)), xs, ys))


def similarity_to_cosine(sim: float, anchors: tuple[tuple[float, float], ...] = ANCHORS) -> float:
    """The inverse mapping (the cosine a similarity threshold stands for)."""
    xs = [a[0] for a in anchors]
    ys = [a[1] for a in anchors]
    return float(np.interp(float(np.clip(sim, 0.0, 100.0)), ys, xs))


def check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not np.isfinite(threshold) or not 0.0 <= float(threshold) <= 100.0:
        raise ValueError("the match threshold must be a number from 0 to 100")
    return float(threshold)


def match_result(a: np.ndarray, b: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """``{similarity, is_match, threshold}`` for two embeddings."""
    threshold = check_threshold(threshold)
    sim = round(cosine_to_similarity(cosine(a, b)), 1)
    return {"similarity": sim, "is_match": bool(sim >= threshold), "threshold": threshold}


def compare_images(image_a: np.ndarray, image_b: np.ndarray,
                   threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Compare the dominant faces of two images; FaceError when either has none usable."""
    return match_result(extract(image_a).embedding, extract(image_b).embedding, threshold)


def match_image(image: np.ndarray | None, id_embedding: np.ndarray,
                threshold: float | None = None) -> dict[str, Any]:
    """The live side: ``{similarity, is_match, threshold}`` of an image's dominant face against
    the ID photo's embedding; ``similarity`` None with an ``error`` code when the image has no
    usable face (no match is claimed then)."""
    thr = DEFAULT_THRESHOLD if threshold is None else check_threshold(threshold)
    if image is None:
        return {"similarity": None, "is_match": False, "threshold": thr, "error": "no_best_frame"}
    try:
        live = extract(image)
    except FaceError as e:
        return {"similarity": None, "is_match": False, "threshold": thr, "error": e.code}
    return match_result(id_embedding, live.embedding, thr)
