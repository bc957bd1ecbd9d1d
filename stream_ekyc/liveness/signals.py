"""Per-frame signals: a camera frame and its face become one small record.

Everything the scorer needs is measured here, once per analysed frame, in *linear* light
(the sRGB curve undone), so that reflected screen light adds up physically:

- ``patches``: a 6×5 grid of mean linear RGB over the face in a face-aligned frame
  (origin between the eyes, x along the eye line, unit = inter-ocular distance). The grid
  is what reveals the 3D shading pattern of the response (centre vs sides, nose, chin).
- ``quartiles``: mean linear RGB of the darkest … brightest quarter of the inner face
  pixels (eyes, brows and nostrils vs skin). A reflected response *multiplies* reflectance
  (same relative change in each quarter); glare on a replay screen *adds* (larger relative
  change in the dark quarters).
- ``skin``: mean linear RGB of the central cheeks/nose/forehead patches.
- ``background``: mean linear RGB of the frame away from the head (far wall vs a print
  or a replay device that fills the view).
- ``midline``: mean linear RGB in 20 bins of a strip down the face's midline, from the
  forehead past the chin to the neck (NaN where a bin's centre leaves the frame). A live chin
  stands several centimetres in front of the neck and shades it from the screen below
  the camera, so the response drops under the chin; a print cut out along the person's
  outline carries its neck on the same sheet as its face.
- exposure shares and a sharpness figure for quality gates and the best frame.

Records carry no image data: only these means, the face geometry and the timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..vision.planes import BgrFrame, YuvFrame, as_frame

# canonical face frame: u in [-1.25, 1.25] IOD (across), v in [-1.0, 2.0] IOD (down from the eyes)
GRID_COLS, GRID_ROWS = 5, 6
CELL = 8
CANON_W, CANON_H = GRID_COLS * CELL, GRID_ROWS * CELL
U0, U1, V0, V1 = -1.25, 1.25, -1.0, 2.0

# patch centres in face units, row-major (row = v, col = u)
PATCH_U = np.tile(np.linspace(U0, U1, GRID_COLS, endpoint=False) + (U1 - U0) / GRID_COLS / 2, GRID_ROWS)
PATCH_V = np.repeat(np.linspace(V0, V1, GRID_ROWS, endpoint=False) + (V1 - V0) / GRID_ROWS / 2, GRID_COLS)

# one face-aligned warp serves the grid and the midline: the canonical columns, taller
# (v in [EXT_V0, EXT_V1]) at the same 16 pixels per IOD, so the grid's pixels are rows
# [EXT_TOP, EXT_TOP + CANON_H) of it, sampled exactly as a warp of the grid alone
EXT_V0, EXT_V1 = -1.5, 3.5
PX_PER_IOD = CANON_H / (V1 - V0)
EXT_H = int(round((EXT_V1 - EXT_V0) * PX_PER_IOD))
EXT_TOP = int(round((V0 - EXT_V0) * PX_PER_IOD))
# midline strip: the middle 12 columns (u in ±0.375 IOD), MID_BINS bins of 0.25 IOD down
MID_BINS = 20
MID_COLS = slice(CANON_W // 2 - 6, CANON_W // 2 + 6)
MID_V = EXT_V0 + (np.arange(MID_BINS) + 0.5) * (EXT_V1 - EXT_V0) / MID_BINS   # bin centres
CHIN_BINS = (MID_V >= 1.0) & (MID_V <= 2.0)      # mouth to chin
MOUTH_BINS = (MID_V >= 0.5) & (MID_V <= 1.25)   # nose tip to mouth (facing the screen)
JAW_BINS = (MID_V >= 1.5) & (MID_V <= 2.0)      # the chin's front, turning down and away
NECK_BINS = (MID_V >= 2.1) & (MID_V <= 3.25)     # under the chin

# inner face (brows, eyes, nose, mouth, cheeks): an ellipse in face units
_uu, _vv = np.meshgrid((np.arange(CANON_W) + 0.5) / CANON_W * (U1 - U0) + U0,
                       (np.arange(CANON_H) + 0.5) / CANON_H * (V1 - V0) + V0)
INNER_MASK = ((_uu / 1.0) ** 2 + ((_vv - 0.55) / 1.35) ** 2) <= 1.0
# skin patches: cheeks, nose, forehead (rows 1..4, cols 1..3)
SKIN_PATCHES = np.array([r * GRID_COLS + c for r in (1, 2, 3, 4) for c in (1, 2, 3)])

_LUT = np.where(np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92,
                ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linearize(img_u8: np.ndarray) -> np.ndarray:
    """sRGB uint8 → linear float32 in [0, 1] (table lookup; OpenCV's for up to 4 channels,
    several times faster than indexing the table with the image)."""
    if img_u8.dtype == np.uint8 and img_u8.ndim == 3 and img_u8.shape[2] <= 4:
        return cv2.LUT(img_u8, _LUT)
    return _LUT[img_u8]


@dataclass
class FaceGeometry:
    box: tuple[float, float, float, float]   # x, y, w, h in frame pixels
    landmarks: np.ndarray                    # (5, 2) frame pixels, YuNet order
    score: float

    @property
    def eye_centre(self) -> np.ndarray:
        return (self.landmarks[0] + self.landmarks[1]) / 2.0

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


@dataclass
class FrameRecord:
    t: float
    width: int
    height: int
    n_faces: int
    face: FaceGeometry | None = None
    patches: np.ndarray | None = None     # (30, 3) linear RGB
    quartiles: np.ndarray | None = None   # (4, 3) linear RGB, dark → bright
    skin: np.ndarray | None = None        # (3,) linear RGB
    background: np.ndarray | None = None  # (3,) linear RGB, None when too little is visible
    midline: np.ndarray | None = None     # (MID_BINS, 3) linear RGB, NaN outside the frame
    luma: float = 0.0                     # mean face luma, sRGB 0..255
    clipped: float = 0.0                  # share of face pixels with a channel >= 250
    crushed: float = 0.0                  # share of face pixels with luma <= 12
    sharpness: float = 0.0
    detected: bool = True                 # False: measured with the face held from an earlier frame
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # scalars are rounded as Python floats (a numpy scalar's round costs ten times more)
        def arr(a):   # JSON has no NaN: a value not measured (a bin outside the frame) is null
            if a is None:
                return None
            a = np.round(np.asarray(a, dtype=np.float64), 6)
            finite = np.isfinite(a)
            return a.tolist() if finite.all() else np.where(finite, a, None).tolist()
        d: dict[str, Any] = {"t": round(float(self.t), 4), "w": self.width, "h": self.height,
                             "n_faces": self.n_faces}
        if self.face is not None:
            d["face"] = {"box": [round(float(v), 1) for v in self.face.box],
                         "landmarks": np.round(self.face.landmarks, 1).tolist(),
                         "score": round(float(self.face.score), 3)}
            d.update(patches=arr(self.patches), quartiles=arr(self.quartiles), skin=arr(self.skin),
                     luma=round(float(self.luma), 2), clipped=round(float(self.clipped), 4),
                     crushed=round(float(self.crushed), 4), sharpness=round(float(self.sharpness), 2),
                     midline=arr(self.midline))
            if not self.detected:
                d["detected"] = False
        d["background"] = arr(self.background)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrameRecord":
        face = None
        if d.get("face"):
            f = d["face"]
            face = FaceGeometry(tuple(f["box"]), np.asarray(f["landmarks"], dtype=np.float64), f["score"])
        # null → NaN (numpy reads None as NaN in a float array)
        opt = lambda k: None if d.get(k) is None else np.asarray(d[k], dtype=np.float64)  # noqa: E731
        return cls(t=d["t"], width=d["w"], height=d["h"], n_faces=d["n_faces"], face=face,
                   patches=opt("patches"), quartiles=opt("quartiles"), skin=opt("skin"),
                   background=opt("background"), luma=d.get("luma", 0.0), clipped=d.get("clipped", 0.0),
                   crushed=d.get("crushed", 0.0), sharpness=d.get("sharpness", 0.0),
                   detected=bool(d.get("detected", True)), midline=opt("midline"))


_ARRAY_FIELDS = ("patches", "quartiles", "skin", "midline", "background")


def records_to_dicts(records: list[FrameRecord], *, arrays: bool = False) -> list[dict[str, Any]]:
    """``[r.to_dict() for r in records]``, equal to it value for value and key for key, with
    each array field rounded and listed for all records at once (a session's records go
    into the algorithm packet: per record, the numpy calls cost more than the numbers).
    Records whose arrays differ in shape (never the analysis's) take ``to_dict`` one by one.

    ``arrays=True``: the array fields stay rounded numpy rows (NaN where ``to_dict`` has
    null), for orjson to write with ``OPT_SERIALIZE_NUMPY`` — the same JSON text, byte for
    byte (orjson writes NaN as null and the same shortest digits), without first making
    Python lists of some ten thousand floats."""

    def listed(values: list[Any], digits: int) -> list[Any] | None:
        have = [a for a in values if a is not None]
        if not have:
            return values
        if len({np.shape(a) for a in have}) != 1:
            return None
        a = np.round(np.asarray(have, dtype=np.float64), digits)
        if arrays:
            it = iter(a)
        else:
            finite = np.isfinite(a)   # JSON has no NaN: a value not measured is null
            it = iter(a.tolist() if finite.all() else np.where(finite, a, None).tolist())
        return [None if x is None else next(it) for x in values]

    cols = {name: listed([getattr(r, name) for r in records], 6) for name in _ARRAY_FIELDS}
    cols["landmarks"] = listed([None if r.face is None else r.face.landmarks for r in records], 1)
    if any(c is None for c in cols.values()):
        return [r.to_dict() for r in records]
    dicts = []
    for i, r in enumerate(records):
        d: dict[str, Any] = {"t": round(float(r.t), 4), "w": r.width, "h": r.height, "n_faces": r.n_faces}
        if r.face is not None:
            d["face"] = {"box": [round(float(v), 1) for v in r.face.box], "landmarks": cols["landmarks"][i],
                         "score": round(float(r.face.score), 3)}
            d.update(patches=cols["patches"][i], quartiles=cols["quartiles"][i], skin=cols["skin"][i],
                     luma=round(float(r.luma), 2), clipped=round(float(r.clipped), 4), crushed=round(float(r.crushed), 4),
                     sharpness=round(float(r.sharpness), 2), midline=cols["midline"][i])
            if not r.detected:
                d["detected"] = False
        d["background"] = cols["background"][i]
        dicts.append(d)
    return dicts


def canonical_transform(face: FaceGeometry, scale: float = 1.0) -> np.ndarray:
    """2×3 affine map from canonical pixels to image pixels (image scaled by ``scale``)."""
    return aligned_transform(face, scale, U0, V0)


def aligned_transform(face: FaceGeometry, scale: float, u0: float, v0: float) -> np.ndarray:
    """2×3 affine map from the pixels of a face-aligned rectangle whose top-left corner is
    at (u0, v0) IOD, at the canonical 16 pixels per IOD, to image pixels (image scaled by
    ``scale``). Plain float arithmetic: this runs for every analysed frame."""
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    cx, cy = (lx + rx) * 0.5 * scale, (ly + ry) * 0.5 * scale
    ex, ey = (rx - lx) * scale, (ry - ly) * scale     # one IOD along the eye line; down is (-ey, ex)
    su = (U1 - U0) / CANON_W                          # face units per pixel
    sv = (V1 - V0) / CANON_H
    # image = centre + e * u + d * v, with u = u0 + (x + 0.5) * su, v = v0 + (y + 0.5) * sv
    ou, ov = u0 + 0.5 * su, v0 + 0.5 * sv
    return np.array([[ex * su, -ey * sv, cx + ex * ou - ey * ov],
                     [ey * su, ex * sv, cy + ey * ou + ex * ov]])


def _midline_inside(face: FaceGeometry, width: int, height: int) -> np.ndarray:
    """Which midline bins have their centre inside the frame (full-size pixels)."""
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    ex, ey = rx - lx, ry - ly
    x = (lx + rx) * 0.5 - ey * MID_V
    y = (ly + ry) * 0.5 + ex * MID_V
    return (x >= 0) & (x <= width - 2) & (y >= 0) & (y <= height - 2)


def background_mask(shape: tuple[int, int], face: FaceGeometry | None, sx: float, sy: float) -> np.ndarray:
    """Pixels of a (h, w) image that are away from the person (1; 0 elsewhere, uint8 as
    OpenCV takes a mask): outside the head (box widened for hair and ears, raised for hair)
    and outside the shoulders below it."""
    h, w = shape
    mask = np.ones((h, w), dtype=np.uint8)
    if face is not None:
        x, y, bw, bh = face.box
        cx = (x + bw / 2) * sx

        def block(x0: float, x1: float, y0: float, y1: float) -> None:
            mask[max(0, int(y0)):max(0, min(h, math.ceil(y1))),
                 max(0, int(x0)):max(0, min(w, math.ceil(x1)))] = 0

        block(cx - 0.85 * bw * sx, cx + 0.85 * bw * sx, (y - 0.45 * bh) * sy, (y + 1.3 * bh) * sy)
        block(cx - 1.7 * bw * sx, cx + 1.7 * bw * sx, (y + 1.1 * bh) * sy, h)
    return mask


def _face_strip(frame: BgrFrame | YuvFrame, face: FaceGeometry) -> np.ndarray:
    """The face-aligned CANON_W × EXT_H BGR crop (grid and midline), from the half-size frame."""
    m = aligned_transform(face, (frame.width // 2) / frame.width, U0, EXT_V0)
    return _warp_half(frame, m, (CANON_W, EXT_H))


def _warp_half(frame: BgrFrame | YuvFrame, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """BGR of the half-size frame warped by ``m`` (output pixels → half-size pixels) to ``size``.

    From YUV planes, each plane is warped and only the crop converted. From a BGR image,
    only the half-size pixels the warp reads are converted (a box around the output
    rectangle, two pixels wider for the bilinear taps); the result equals warping the whole
    half-size frame, border replication at the frame's edges included."""
    if isinstance(frame, YuvFrame):
        return frame.warp_half(m, size)
    hw, hh = frame.width // 2, frame.height // 2
    cx = np.array([-0.5, size[0] - 0.5, -0.5, size[0] - 0.5])
    cy = np.array([-0.5, -0.5, size[1] - 0.5, size[1] - 0.5])
    xs = m[0, 0] * cx + m[0, 1] * cy + m[0, 2]
    ys = m[1, 0] * cx + m[1, 1] * cy + m[1, 2]
    x0 = min(max(int(np.floor(xs.min())) - 2, 0), hw - 1)
    y0 = min(max(int(np.floor(ys.min())) - 2, 0), hh - 1)
    x1 = max(min(int(np.ceil(xs.max())) + 3, hw), x0 + 1)
    y1 = max(min(int(np.ceil(ys.max())) + 3, hh), y0 + 1)
    roi = frame.half_roi(x0, y0, x1, y1)
    m = m.copy()
    m[0, 2] -= x0
    m[1, 2] -= y0
    return cv2.warpAffine(roi, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


_LUMA_LIN = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)   # on RGB
# the inner face's pixels (flat indices into the canonical crop, row-major)
_INNER_IDX = np.flatnonzero(INNER_MASK)
# the inner face's pixels, darkest to brightest, in four quarters (as np.array_split makes them)
_QUARTER_SIZES = np.array([len(q) for q in np.array_split(np.arange(len(_INNER_IDX)), 4)])
_QUARTER_STARTS = np.concatenate([[0], np.cumsum(_QUARTER_SIZES)[:-1]])
_QUARTER_SIZES = _QUARTER_SIZES[:, None].astype(np.float64)
_LUMA_U8 = np.array([0.114, 0.587, 0.299])                          # on BGR


class SignalExtractor:
    """Turns a frame + detected faces into a FrameRecord. Stateless and thread-safe.

    The frame is a BGR ndarray, a ``vision.planes`` frame (``BgrFrame``, ``YuvFrame``) or a
    PyAV frame; only small views of it are ever converted to BGR."""

    bg_size = (80, 60)

    def extract(self, t: float, frame: Any, faces: list, detected: bool = True) -> FrameRecord:
        """``detected=False``: ``faces`` is a held geometry, not this frame's detection (the
        sharpness, used only to choose the best frame among detected ones, is not measured).

        This runs for every analysed frame, so it keeps the number of numpy and OpenCV calls
        small (on this work their fixed cost exceeds the arithmetic): the face crop stays in
        BGR order and only the small results are turned to RGB."""
        frame = as_frame(frame)
        w, h = frame.width, frame.height
        rec = FrameRecord(t=t, width=w, height=h, n_faces=len(faces), detected=detected)
        face = None
        if faces:
            f0 = faces[0]
            face = f0 if isinstance(f0, FaceGeometry) else FaceGeometry(
                tuple(float(v) for v in f0.box), np.asarray(f0.landmarks, dtype=np.float64), float(f0.score))
            rec.face = face
        small = frame.scaled(self.bg_size)
        mask = background_mask(small.shape[:2], face, self.bg_size[0] / w, self.bg_size[1] / h)
        if cv2.countNonZero(mask) >= 0.04 * mask.size:
            bgr = cv2.mean(cv2.LUT(small, _LUT), mask=mask)
            rec.background = np.array(bgr[2::-1], dtype=np.float64)
        if face is None or face.iod < 8:
            return rec
        strip = _face_strip(frame, face)
        lin_strip = linearize(strip)                          # BGR order: reversed once results are small
        mid = lin_strip[:, MID_COLS].reshape(MID_BINS, -1, 3)
        mid = (np.add.reduce(mid, axis=1, dtype=np.float64) / mid.shape[1])[:, ::-1]
        mid[~_midline_inside(face, w, h)] = np.nan
        rec.midline = mid
        canon = strip[EXT_TOP:EXT_TOP + CANON_H]
        lin = lin_strip[EXT_TOP:EXT_TOP + CANON_H]            # rows of a contiguous array: a view
        # exact CELL × CELL block means (OpenCV's area reduction by an integer factor)
        blocks = cv2.resize(lin, (GRID_COLS, GRID_ROWS), interpolation=cv2.INTER_AREA)
        rec.patches = blocks.reshape(-1, 3)[:, ::-1].astype(np.float64)
        rec.skin = np.add.reduce(rec.patches[SKIN_PATCHES], axis=0) / len(SKIN_PATCHES)
        inner_u8 = canon.reshape(-1, 3)[_INNER_IDX]           # (n, 3) BGR
        rgb = lin.reshape(-1, 3)[_INNER_IDX][:, ::-1]         # the same pixels, linear RGB
        ranked = rgb[np.argsort(rgb @ _LUMA_LIN, kind="stable")]
        rec.quartiles = np.add.reduceat(ranked, _QUARTER_STARTS, axis=0, dtype=np.float64) / _QUARTER_SIZES
        luma_u8 = inner_u8 @ _LUMA_U8
        n = len(luma_u8)
        rec.luma = float(np.add.reduce(luma_u8)) / n
        # largest channel per pixel (three column maxima: far cheaper than a reduction over axis 1)
        top = np.maximum(np.maximum(inner_u8[:, 0], inner_u8[:, 1]), inner_u8[:, 2])
        rec.clipped = np.count_nonzero(top >= 250) / n
        rec.crushed = np.count_nonzero(luma_u8 <= 12) / n
        if not detected:
            return rec
        gray = cv2.cvtColor(canon, cv2.COLOR_BGR2GRAY)
        rec.sharpness = float(cv2.Laplacian(gray, cv2.CV_32F)[2:-2, 2:-2].var())
        return rec
