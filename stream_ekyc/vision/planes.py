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

import functools
import math
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


def warp_box(m: np.ndarray, size: tuple[int, int], width: int, height: int,
             pad: int = 2) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The box (x0, y0, x1, y1) of a ``width`` × ``height`` image that a warp by ``m``
    (output pixels → image pixels) to ``size`` (w, h) reads, widened by ``pad`` pixels
    (two for the bilinear taps) and clamped to the image, and ``m`` moved to that box's
    origin: warping the box equals warping the whole image, border replication included."""
    cx = np.array([-0.5, size[0] - 0.5, -0.5, size[0] - 0.5])
    cy = np.array([-0.5, -0.5, size[1] - 0.5, size[1] - 0.5])
    xs = m[0, 0] * cx + m[0, 1] * cy + m[0, 2]
    ys = m[1, 0] * cx + m[1, 1] * cy + m[1, 2]
    x0 = min(max(int(np.floor(xs.min())) - pad, 0), width - 1)
    y0 = min(max(int(np.floor(ys.min())) - pad, 0), height - 1)
    x1 = max(min(int(np.ceil(xs.max())) + pad + 1, width), x0 + 1)
    y1 = max(min(int(np.ceil(ys.max())) + pad + 1, height), y0 + 1)
    m = m.copy()
    m[0, 2] -= x0
    m[1, 2] -= y0
    return (x0, y0, x1, y1), m


@functools.lru_cache(maxsize=128)
def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised Gaussian kernel reaching 3 sigma (column vector), made once per sigma:
    OpenCV's GaussianBlur builds its kernel on every call, which on a crop this small costs
    several times the filtering."""
    return cv2.getGaussianKernel(2 * max(1, math.ceil(3 * sigma)) + 1, sigma)


def _on_grid(a0: int, a1: int, f: int, n: int) -> tuple[int, int]:
    """[a0, a1) widened to whole f-blocks of [0, n) (the last partial block left out)."""
    top = n - n % f if n >= f else n
    a0 = min(a0 - a0 % f, max(top - f, 0))
    a1 = min(max(a1 + (-a1) % f, a0 + f), top)
    return a0, a1


def low_pass_warp(images: list[np.ndarray], m: np.ndarray, size: tuple[int, int],
                  sigma: float) -> list[np.ndarray]:
    """Each of ``images`` (equally sized planes, or one BGR image) low-passed by about a
    Gaussian of ``sigma`` pixels, then warped by ``m`` (output pixels → image pixels,
    bilinear, edges replicated) to ``size`` (w, h); only the box the warp reads is filtered.

    A wide Gaussian over the box would cost more than the rest of a frame's analysis, so the
    box is first averaged over f × f blocks (f = ⌊sigma⌋, OpenCV's exact integer area
    reduction, aligned with the image's own f-grid) and the small result blurred by what
    remains of ``sigma``: the two steps' variances add up to ``sigma``²."""
    h, w = images[0].shape[:2]
    f = max(1, int(sigma))
    rest = round(math.sqrt(max(sigma * sigma - (f * f - 1) / 12.0, 0.0)) / f, 2)   # in reduced pixels
    kernel = gaussian_kernel(rest) if rest > 0.25 else None
    pad = f * (2 + (len(kernel) // 2 if kernel is not None else 0))
    (x0, y0, x1, y1), _ = warp_box(m, size, w, h, pad)
    x0, x1 = _on_grid(x0, x1, f, w)
    y0, y1 = _on_grid(y0, y1, f, h)
    m = m.copy()
    m[:, 2] -= (x0, y0)
    if f > 1:
        m[:, :2] /= f
        m[:, 2] = (m[:, 2] + 0.5) / f - 0.5
    out = []
    for img in images:
        box = img[y0:y1, x0:x1]
        if f > 1:
            box = cv2.resize(box, ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
        if kernel is not None:
            box = cv2.sepFilter2D(box, -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
        out.append(cv2.warpAffine(box, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE))
    return out


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

    def warp_half(self, m: np.ndarray, size: tuple[int, int], sigma: float = 0.0) -> np.ndarray:
        """BGR of the half-size frame warped by ``m`` (a map from output pixels to half-size
        pixels, bilinear, edges replicated) to ``size`` (w, h). Each plane is warped and only
        the small result converted: interpolation and the conversion are both affine, so
        this equals converting first, up to rounding (and clipping of out-of-range pixels).
        ``sigma`` > 0: the planes low-passed first (``low_pass_warp``)."""
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        if sigma <= 0:
            if self._half is not None:
                return cv2.warpAffine(self._half, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
            return yuv_to_bgr(*(cv2.warpAffine(p, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
                                for p in self._planes_half()))
        return yuv_to_bgr(*low_pass_warp(list(self._planes_half()), m, size, sigma))

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
