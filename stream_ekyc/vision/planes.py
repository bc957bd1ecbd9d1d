"""Decoded frames as the analysis sees them: small BGR images made on demand.

The analysis never needs a full-size BGR frame: the detector looks at 160 or 320 px wide
(resized from the half-size frame), the background mean at 80×60, the face grid at half size
and only over the face. A decoded WebRTC (or PyAV) frame is 4:2:0 YUV, so ``YuvFrame``
converts at half size (Y averaged 2×2; U and V are that size already), only a box around
the face when that is all that is needed; smaller views are averaged from the half-size
frame. The conversion is affine, so averaging first gives the same means as converting every
pixel and averaging after (up to rounding, and clipping of pixels that convert outside
0..255). ``BgrFrame`` gives the same views of a BGR image (still images, offline callers and
tests).

The YUV → BGR coefficients are those of FFmpeg's swscale for a frame without colour
metadata (BT.601, limited range, chroma replicated), which is what
``frame.to_ndarray(format="bgr24")`` gave the analysis before: fitted on decoded frames,
every pixel agrees within ±1 level, on average within 0.01 (see tests/unit/test_planes.py).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# B, G, R rows of [Y, U, V, 1] (fitted to swscale's yuv420p → bgr24 on decoded frames)
YUV_TO_BGR = np.array([
    [1.1659, 2.0267, 0.0056, -280.02],
    [1.1641, -0.3925, -0.8161, 134.63],
    [1.1648, 0.0012, 1.5949, -223.93],
], dtype=np.float32)


def _area(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` resized to ``size`` (w, h) by area averaging (a no-op at the same size).

    Exact halvings go first: OpenCV's 2× area path is several times faster than its general
    one (each halving rounds half up: +0.125 of a level on average)."""
    w, h = size
    while img.shape[1] % (2 * w) == 0 and img.shape[0] % (2 * h) == 0:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def yuv_to_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Three equally sized uint8 planes → BGR uint8 (rounded, saturated)."""
    return cv2.transform(cv2.merge((y, u, v)), YUV_TO_BGR)


class BgrFrame:
    """A BGR image (H, W, 3) uint8."""

    def __init__(self, bgr: np.ndarray) -> None:
        self.image = np.asarray(bgr)
        self.height, self.width = self.image.shape[:2]
        self._half: np.ndarray | None = None

    def half(self) -> np.ndarray:
        """The frame at half size (area average), cached."""
        if self._half is None:
            self._half = cv2.resize(self.image, (self.width // 2, self.height // 2), interpolation=cv2.INTER_AREA)
        return self._half

    def half_roi(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self.half()[y0:y1, x0:x1]

    def scaled(self, size: tuple[int, int]) -> np.ndarray:
        """BGR at ``size`` (w, h), area-averaged (from the half-size frame when it is smaller)."""
        return _scaled(self, size)

    def detector_source(self, width: int) -> np.ndarray:
        """What the detector resizes to ``width``: the half-size frame when that is enough."""
        return self.half() if width <= self.width // 2 else self.image

    def bgr(self) -> np.ndarray:
        return self.image


class YuvFrame:
    """A 4:2:0 frame held as three uint8 planes (views of the decoder's buffers, no copy).

    Views at half size or smaller are made from the half-size planes (Y halved once, by
    OpenCV's fast 2× path; U and V are already that size), each averaged once more to the
    size wanted: one rounding per plane, no bias piling up over repeated halvings."""

    def __init__(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, source: Any = None) -> None:
        self.y, self.u, self.v = y, u, v
        self.height, self.width = y.shape
        self.source = source            # the decoded frame the planes belong to (kept alive)
        self._half_planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._half: np.ndarray | None = None
        self._bgr: np.ndarray | None = None

    @classmethod
    def from_av(cls, frame: Any) -> "YuvFrame":
        """Planes of a PyAV ``VideoFrame`` (converted to yuv420p first if it is not)."""
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        w, h = frame.width, frame.height
        cw, ch = (w + 1) // 2, (h + 1) // 2
        planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:ph, :pw]
                  for p, (pw, ph) in zip(frame.planes[:3], ((w, h), (cw, ch), (cw, ch)))]
        return cls(*planes, source=frame)

    @classmethod
    def from_i420(cls, buf: np.ndarray) -> "YuvFrame":
        """From ``to_ndarray(format="yuv420p")`` / cv2's I420 layout: (H·3/2, W) uint8."""
        h = buf.shape[0] * 2 // 3
        w = buf.shape[1]
        q = (h // 2) * (w // 2)
        flat = buf.reshape(-1)
        return cls(buf[:h], flat[h * w:h * w + q].reshape(h // 2, w // 2),
                   flat[h * w + q:h * w + 2 * q].reshape(h // 2, w // 2))

    @classmethod
    def from_bgr(cls, bgr: np.ndarray) -> "YuvFrame":
        """A BGR image as I420 (tests; even sides)."""
        return cls.from_i420(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420))

    def _planes_half(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._half_planes is None:
            size = (self.width // 2, self.height // 2)
            self._half_planes = (_area(self.y, size), _area(self.u, size), _area(self.v, size))
        return self._half_planes

    def scaled(self, size: tuple[int, int]) -> np.ndarray:
        """BGR at ``size`` (w, h), area-averaged. Below half size the planes are averaged
        first and only the small result is converted (the whole half-size frame is converted
        only if something else asked for it already)."""
        if self._half is None and size[0] <= self.width // 2 and size[1] <= self.height // 2:
            return yuv_to_bgr(*(_area(p, size) for p in self._planes_half()))
        return _scaled(self, size)

    def half(self) -> np.ndarray:
        """The whole half-size frame in BGR, cached."""
        if self._half is None:
            self._half = yuv_to_bgr(*self._planes_half())
        return self._half

    def half_roi(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """BGR of the half-size frame's pixels [y0:y1, x0:x1] (only those are converted)."""
        if self._half is not None:
            return self._half[y0:y1, x0:x1]
        return yuv_to_bgr(*(p[y0:y1, x0:x1] for p in self._planes_half()))

    def warp_half(self, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """BGR of the half-size frame warped by ``m`` (a map from output pixels to half-size
        pixels, bilinear, edges replicated) to ``size`` (w, h). Each plane is warped and only
        the small result converted: interpolation and the conversion are both affine, so
        this equals converting first, up to rounding (and clipping of out-of-range pixels)."""
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if self._half is not None:
            return cv2.warpAffine(self._half, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        return yuv_to_bgr(*(cv2.warpAffine(p, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
                            for p in self._planes_half()))

    def detector_source(self, width: int) -> np.ndarray:
        """The detector's input at ``width``: area-averaged from the planes and converted at
        that size when it is at most half the frame's width (the detector then has nothing
        to resize), else the whole frame."""
        if width <= self.width // 2:
            return self.scaled((width, max(1, int(round(self.height * width / self.width)))))
        return self.bgr()

    def bgr(self) -> np.ndarray:
        """The whole frame in BGR (JPEG evidence, the face match): swscale, as before."""
        if self._bgr is None:
            if self.source is not None:
                self._bgr = self.source.to_ndarray(format="bgr24")
            else:
                up = lambda p: cv2.resize(p, (self.width, self.height), interpolation=cv2.INTER_NEAREST)  # noqa: E731
                self._bgr = yuv_to_bgr(self.y, up(self.u), up(self.v))
        return self._bgr


def _scaled(frame: BgrFrame | YuvFrame, size: tuple[int, int]) -> np.ndarray:
    if size[0] <= frame.width // 2 and size[1] <= frame.height // 2:
        return _area(frame.half(), size)
    return _area(frame.bgr(), size)


def as_frame(image: Any) -> BgrFrame | YuvFrame:
    """A BGR ndarray, a ``BgrFrame``/``YuvFrame``, or a PyAV frame → a frame the analysis takes."""
    if isinstance(image, (BgrFrame, YuvFrame)):
        return image
    if isinstance(image, np.ndarray):
        return BgrFrame(image)
    return YuvFrame.from_av(image)
